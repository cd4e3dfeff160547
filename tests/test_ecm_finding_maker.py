"""The rules' one maker of findings (gateway/ecm/rules.py ``_finding``, used by ``located``,
``EncounterRules._put`` and ``findings_of_rows``): compiled, it writes a new Finding's slots in
place (rules.pxd); pure, it calls the slots' setters. Either way the finding equals the one
``Finding(...)`` makes, field by field, and holds exactly one reference to each value (a slot
written in place takes its reference as the setter does, and gives it back with the finding)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ecm.rules import finding_rows, findings_of_rows, located
from gateway.findings import Finding, Severity
from gateway.x12 import _accelerate

ROOT = Path(__file__).resolve().parent.parent

TEMPLATES = [
    Finding(rule="ECM-POF-001", severity=Severity.ERROR, location="somewhere",
            message="The member's POF has no evidence.", source="002:1545"),
    Finding(rule="ECM-SUB-001", severity=Severity.WARNING, location="x", message="Not yours.",
            source="policy", plan_rule="ECM-AGE-001", plan_message="Too young on 2026-09-01."),
    Finding(rule="ECM-DUP-001", severity=Severity.INFO, location="y", message="é ünïcode ✓",
            source="s", segment=3, context={"segment": "SV1", "position": 4}),
]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.rule)
@pytest.mark.parametrize("ordinal", [None, 12, "40"])
def test_located_is_the_finding_at_the_place(template, ordinal):
    where = "ISA#1/GS#1/ST#1/2300[2]/2400[1]/SV1"
    made = located(template, where, ordinal)
    assert made == Finding(rule=template.rule, severity=template.severity, location=where,
                           message=template.message, source=template.source,
                           segment=ordinal, plan_rule=template.plan_rule,
                           plan_message=template.plan_message)
    assert made.context is None and made.severity is template.severity
    assert gc.is_tracked(made)  # (a container the collector sees, as Finding(...) is)
    with pytest.raises(AttributeError):
        made.rule = "X"  # (immutable as ever)


def test_rows_made_findings_again_are_equal():
    found = [[located(t, f"ISA#1/GS#1/ST#1/2300[{i}]", i) for i, t in enumerate(TEMPLATES)],
             [], TEMPLATES]
    sent: dict = {}
    rows = finding_rows(found, sent)
    again: list = []
    findings_of_rows(rows, again, list(sent))  # (the messages in the order they were sent)
    assert again == [f for batch in found for f in batch]
    assert [f.context for f in again] == [f.context for batch in found for f in batch]


def test_each_value_held_once_and_given_back():
    message = "".join(["a message ", "made at run time"])  # (a fresh object, not interned)
    template = Finding(rule="ECM-X", severity=Severity.ERROR, location="a", message=message,
                       source="s")
    before = sys.getrefcount(message)
    made = [located(template, "b", 1) for _ in range(100)]
    assert sys.getrefcount(message) == before + 100
    del made
    assert sys.getrefcount(message) == before


SCRIPT = r"""
import json, sys
from gateway.ecm import rules
from gateway.findings import Finding, Severity
from gateway.x12 import _accelerate
t = Finding(rule="R", severity=Severity.WARNING, location="a", message="m", source="s",
            plan_rule="P", plan_message="pm")
out = []
rules.findings_of_rows([("R", "error", "l", "m", "s", 7, {"k": 1}, None, None)], out, None)
made = [rules.located(t, "w", 3), rules.located(t, "w", None)] + out
print(json.dumps({"compiled": _accelerate.compiled("gateway.ecm.rules"),
                  "made": [[getattr(f, name) for name in ("rule", "location", "message",
                           "source", "segment", "context", "plan_rule", "plan_message")]
                           + [f.severity.value] for f in made]}))
"""


def run(pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != _accelerate.PURE_ENV}
    if pure:
        env[_accelerate.PURE_ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=True)
    return json.loads(proc.stdout)


def test_compiled_and_pure_makers_agree():
    compiled, pure = run(pure=False), run(pure=True)
    assert not pure["compiled"]
    assert compiled["made"] == pure["made"] == [
        ["R", "w", "m", "s", 3, None, "P", "pm", "warning"],
        ["R", "w", "m", "s", None, None, "P", "pm", "warning"],
        ["R", "l", "m", "s", 7, {"k": 1}, None, None, "error"],
    ]
