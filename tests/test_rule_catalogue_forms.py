"""RuleCatalogue.finding makes a finding from the rule's memoised form (RuleCatalogue.form):
every rule, told to the plan or to a submitter, gives the finding its rule pack says, a rule
turned off gives none, and a changed or unpickled catalogue never tells a rule in a form it
remembered from before."""

import pickle

from gateway.findings import Finding, without_paths
from gateway.rules import default_catalogue

VALUES = {"day": "2026-03-04", "npi": "1234567893", "end": "/tmp/upload-7/x.txt", "age": 70}


def _expected(rule, public, location, ordinal, values):
    def text(template):
        return without_paths(template.format_map({k: values.get(k, "") for k in
                                                  _names(template)}))
    return Finding(rule=public.id, severity=rule.severity, location=location,
                   message=text(public.message), source=public.source, segment=ordinal,
                   plan_rule=None if public is rule else rule.id,
                   plan_message=None if public is rule else text(rule.message))


def _names(template):
    from string import Formatter

    return [name for _, name, _, _ in Formatter().parse(template) if name]


def test_every_rule_for_either_audience_as_its_pack_says():
    catalogue = default_catalogue()
    for rule in catalogue.rules():
        for audience in ("plan", "submitter", "plan"):  # (the second "plan": from the memo)
            public = catalogue.rule(rule.to_submitter) \
                if audience == "submitter" and rule.to_submitter else rule
            got = catalogue.finding(rule.id, "ISA#1/GS#1/ST#1/2300[2]", 7, audience, **VALUES)
            if not rule.enabled:
                assert got is None
                continue
            assert got == _expected(rule, public, "ISA#1/GS#1/ST#1/2300[2]", 7, VALUES)
            assert "/tmp/" not in got.message


def test_a_rule_turned_off_or_changed_after_use():
    catalogue = default_catalogue()
    before = catalogue.finding("ECM-MEM-003", "here", 2, day="2026-01-02")
    off = catalogue.with_overrides({"ECM-MEM-003": {"enabled": False}})
    assert off.finding("ECM-MEM-003", "here", 2, day="2026-01-02") is None
    warning = catalogue.with_overrides({"ECM-MEM-003": {"severity": "warning"}})
    assert warning.finding("ECM-MEM-003", "here", 2, day="2026-01-02").severity == "warning"
    assert catalogue.finding("ECM-MEM-003", "here", 2, day="2026-01-02") == before


def test_a_catalogue_pickled_after_use_tells_the_same():
    catalogue = default_catalogue()
    first = catalogue.finding("ECM-PRV-001", "x", None, "submitter", day="2026-01-02",
                              assigned="1")
    again = pickle.loads(pickle.dumps(catalogue))
    assert again.finding("ECM-PRV-001", "x", None, "submitter", day="2026-01-02",
                         assigned="1") == first
    assert first.plan_rule == "ECM-PRV-001" and first.rule != "ECM-PRV-001"
