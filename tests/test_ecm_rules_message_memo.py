"""The ECM rules' message memo (``EncounterRules._add``): a finding's message is made once per
rule, audience and the values its message(s) SHOW, then copied. A value no message shows (the
claim's day in ECM-POF-001) must not split the memo, and a value a message shows must never be
served from another finding's memo (each finding equals the catalogue's own)."""

import itertools

from gateway.ecm.rules import EncounterRules
from gateway.rules import default_catalogue

POF = {"pof": "HIGH_UTILIZER", "criterion": "adult high utilizer", "start": "2026-03-01",
       "end": "2026-08-15", "lacking": "five or more ED visits (2 found)", "other": ""}


def _one(rules, rule_id, where, ordinal, restricted=False, **values):
    out = []
    rules._add(out, rule_id, where, ordinal, restricted, **values)
    [finding] = out
    return finding


def _expected(rule_id, where, ordinal, audience, **values):
    return default_catalogue().finding(rule_id, where, ordinal, audience, **values)


def test_a_value_no_message_shows_does_not_split_the_memo():
    rules = EncounterRules(None)
    first = _one(rules, "ECM-POF-001", "A/NM109", 3, day="2026-09-01", **POF)
    size = len(rules._messages)
    second = _one(rules, "ECM-POF-001", "B/NM109", 9, day="2026-09-17", **POF)
    assert len(rules._messages) == size  # the second came from the memo
    assert first == _expected("ECM-POF-001", "A/NM109", 3, "plan", day="2026-09-01", **POF)
    assert second == _expected("ECM-POF-001", "B/NM109", 9, "plan", day="2026-09-17", **POF)
    assert "2026-09-17" not in second.message and second.message == first.message


def test_every_shown_value_keeps_its_own_message():
    rules = EncounterRules(None)
    changes = [{}, {"lacking": "three or more stays (1 found)"}, {"start": "2026-02-01"},
               {"end": "2026-08-16"}, {"other": "; other criteria may qualify the member: x"},
               {"pof": "SMI_SUD"}, {"criterion": None}, {"lacking": ""}]
    for (change, day), audience in itertools.product(
            itertools.product(changes, ("2026-09-01", "2026-09-02")), ("plan", "submitter")):
        rules.audience = audience
        rules._for_submitter = audience == "submitter"
        values = {**POF, **change, "day": day}
        got = _one(rules, "ECM-POF-001", "X/NM109", 5, restricted=True, **values)
        assert got == _expected("ECM-POF-001", "X/NM109", 5, audience, **values)
        assert (got.plan_rule, got.plan_message) == (
            (None, None) if audience == "plan" else
            ("ECM-POF-001", _expected("ECM-POF-001", "", None, "plan", **values).message))


def test_a_value_given_as_none_is_not_a_value_left_out():
    rules = EncounterRules(None)
    given = {k: v for k, v in POF.items() if k != "other"}
    left_out = _one(rules, "ECM-POF-001", "X", 1, **given)
    as_none = _one(rules, "ECM-POF-001", "X", 1, other=None, **given)
    assert left_out == _expected("ECM-POF-001", "X", 1, "plan", **given)
    assert as_none == _expected("ECM-POF-001", "X", 1, "plan", other=None, **given)
    assert left_out.message != as_none.message  # "" and "None"


def test_rules_whose_message_shows_every_value_and_age_findings():
    rules = EncounterRules(None)
    for age, day, pof in itertools.product((8, 21, 55), ("2026-09-01", "2026-09-30"),
                                           ("HIGH_UTILIZER", "CHILDREN_YOUTH")):
        values = {"age": age, "day": day, "pof": pof, "ages": "21 and over"}
        assert _one(rules, "ECM-AGE-001", "M", 2, **values) == _expected(
            "ECM-AGE-001", "M", 2, "plan", **values)
