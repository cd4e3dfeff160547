"""The rule engine's state set on it from outside is the state its rules read: the rules' worker
(gateway/ecm/pipelined.py) ships an engine's file-wide state back to the caller's engine as
pickled attribute values (``_STATE_FIELDS``). Compiled, the engine is an extension type whose
attributes are typed fields (gateway/ecm/rules.pxd); the suite runs this in both builds."""

from __future__ import annotations

import pickle
from datetime import date

from gateway.ecm.pipelined import _STATE_FIELDS
from gateway.ecm.rules import EncounterRules
from test_ecm_rules import encounter, place, registry

DUPLICATE = ("ECM-DUP-001", "L1", "this line duplicates claim C1 line 1 in this file (same "
             "member, provider, date, code, modifiers and units); the whole claim is rejected")


def shown(found: list) -> list[tuple]:
    return [(f.rule, f.location, f.message) for f in found]


def test_state_moved_to_another_engine_is_the_one_its_rules_read():
    reg = registry()
    first = [(encounter(), place())]
    again = [(encounter(), place()), (encounter(day=date(2026, 2, 11)), place())]
    worker = EncounterRules(reg)
    assert worker.check(first) == [[]]
    caller = EncounterRules(reg)  # its own index knows nothing of the first claim yet
    state = pickle.loads(pickle.dumps(tuple(getattr(worker, name) for name in _STATE_FIELDS)))
    for name, value in zip(_STATE_FIELDS, state):
        setattr(caller, name, value)
    assert [shown(f) for f in caller.check(again)] == [[DUPLICATE], []]
    # the worker's own state is its own: the caller's second line is not in it
    assert [shown(f) for f in worker.check(again[1:])] == [[]]
