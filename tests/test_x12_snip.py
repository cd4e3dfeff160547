"""SNIP 3-7 rule packs (profiles/rules/x12-snip.yaml): every SNIP type fires on the defect it
names, stays silent on a clean claim, and reaches the 999 (IK3/IK4) and the 277CA."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from gateway.findings import Severity
from gateway.rules import default_catalogue
from gateway.x12.acks import AckControls, acknowledge
from gateway.x12.validate import validate_x12

CLEAN = (Path(__file__).resolve().parent.parent / "fixtures" / "837p" /
         "ecm-clean.x12").read_text()
STATE_ISA08 = "CALIFORNIA-DHCS"  # profiles/envelopes/dhcs-encounters.yaml receiver_id


def fix_counts(text: str) -> str:
    """SE01 recounted after a mutation that adds or removes segments."""
    out, count = [], 0
    for seg in text.split("~"):
        body = seg.strip()
        if body.startswith("ST*"):
            count = 1
        elif body.startswith("SE*"):
            count += 1
            parts = body.split("*")
            parts[1] = str(count)
            seg = seg.replace(body, "*".join(parts))
        elif count and body:
            count += 1
        out.append(seg)
    return "~".join(out)


def mutate(*pairs: tuple[str, str], text: str = CLEAN) -> bytes:
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return fix_counts(text).encode()


def snip(data: bytes, catalogue=None) -> list[tuple[str, str]]:
    result = validate_x12(data, catalogue=catalogue)
    return [(f.rule, f.location) for f in result.findings if "SNIP" in f.rule]


def test_a_clean_file_passes_every_snip_rule():
    assert snip(CLEAN.encode()) == []


TS = "ISA#1/GS#1/ST#1"


@pytest.mark.parametrize("pairs, expected", [
    # SNIP 3: claim total is not the sum of its lines (100 + 50 + 100)
    ([("CLM*ECM0300000001*250*", "CLM*ECM0300000001*260*")],
     [("X12-SNIP3-001", f"{TS}/2300[1]/CLM02")]),
    # SNIP 4: replacement claim without the original's REF*F8
    ([("99:B:1*Y*A*Y*Y~", "99:B:7*Y*A*Y*Y~")], [("X12-SNIP4-001", f"{TS}/2300[1]/CLM05-3")]),
    # SNIP 5: NPI check digit, TIN, ZIP, ICD-10 with its dot, HCPCS shape, taxonomy
    ([("XX*1000000004", "XX*1000000005")], [("X12-SNIP5-NPI", f"{TS}/2010AA[1]/NM109")]),
    ([("REF*EI*940000000", "REF*EI*94000000")], [("X12-SNIP5-TIN", f"{TS}/2010AA[1]/REF02")]),
    ([("N4*OAKLAND*CA*94612", "N4*OAKLAND*CA*9461")],
     [("X12-SNIP5-ZIP", f"{TS}/2010BA[1]/N403")]),
    ([("HI*ABK:E119", "HI*ABK:E11.9")], [("X12-SNIP5-ICD10", f"{TS}/2300[1]/HI01-2")]),
    ([("SV1*HC:G9012:U8:GQ", "SV1*HC:G901:U8:GQ")],
     [("X12-SNIP5-HCPCS", f"{TS}/2400[2]/SV101-2")]),
    ([("PRV*PE*PXC*171M00000X", "PRV*PE*PXC*171M00000")],
     [("X12-SNIP5-TAXONOMY", f"{TS}/2310B[1]/PRV03")]),
    # SNIP 6: a service date after the file was created; a member born after the service
    ([("DTP*472*D8*20260908", "DTP*472*D8*20261230")],
     [("X12-SNIP6-001", f"{TS}/2300[1]/CLM01")]),
    ([("DMG*D8*20040501", "DMG*D8*20260908")], [("X12-SNIP6-002", f"{TS}/2300[1]/CLM01")]),
])
def test_each_snip_type_fires(pairs, expected):
    assert snip(mutate(*pairs)) == expected


def test_a_replacement_with_its_original_claim_number_passes():
    assert snip(mutate(("99:B:1*Y*A*Y*Y~", "99:B:7*Y*A*Y*Y~REF*F8*ORIG0001~"))) == []


def test_an_icd10_code_of_the_wrong_shape_says_why():
    result = validate_x12(mutate(("HI*ABK:E119", "HI*ABK:119")))
    [finding] = [f for f in result.findings if f.rule == "X12-SNIP5-ICD10"]
    assert "not the shape" in finding.message


def to_state(*pairs: tuple[str, str]) -> bytes:
    return mutate(("*ZZ*DEMOPLAN       *", f"*ZZ*{STATE_ISA08}*"), *pairs)


def test_snip7_state_rules_apply_only_to_files_for_the_state():
    assert snip(to_state()) == []  # BHT06 RP and CIN-shaped ids: clean
    assert snip(to_state(("*0930*RP~", "*0930*CH~"))) == [("X12-SNIP7-BHT06", f"{TS}/BHT06")]
    assert snip(to_state(("MI*90000010L", "MI*9000001X0"))) == [
        ("X12-SNIP7-CIN", f"{TS}/2010BA[1]/NM109")]
    # the same defects in a file to a plan are no SNIP 7 business
    assert snip(mutate(("*0930*RP~", "*0930*CH~"), ("MI*90000010L", "MI*9000001X0"))) == []


def test_severity_is_configurable_per_partner():
    relaxed = default_catalogue().with_overrides({"X12-SNIP5-NPI": {"severity": "warning"}})
    result = validate_x12(mutate(("XX*1000000004", "XX*1000000005")), catalogue=relaxed)
    [finding] = [f for f in result.findings if f.rule == "X12-SNIP5-NPI"]
    assert finding.severity is Severity.WARNING
    off = default_catalogue().with_overrides({"X12-SNIP5-NPI": {"enabled": False}})
    assert snip(mutate(("XX*1000000004", "XX*1000000005")), catalogue=off) == []


def test_every_snip_rule_names_its_type_and_ack_codes():
    import yaml

    from gateway.x12.snip import SNIP_PACK

    rules = yaml.safe_load(SNIP_PACK.read_text())["rules"]
    assert {r["snip"] for r in rules} == {3, 4, 5, 6, 7}
    for rule in rules:
        assert rule["ack"].get("claim_status") and rule["ack"].get("ik3"), rule["id"]
        assert rule["id"] in default_catalogue()


def test_a_claim_level_snip_error_rejects_the_claim_in_the_277ca_and_shows_in_the_999():
    result = validate_x12(mutate(("CLM*ECM0300000001*250*", "CLM*ECM0300000001*260*")))
    acks = acknowledge(result, controls=AckControls(interchange=5, group=5),
                       when=datetime(2026, 10, 6, 12, 0))
    assert "IK3*CLM*" in acks.ack999 and "IK4*2*782*I12" in acks.ack999
    assert "IK5*E*5" in acks.ack999
    assert "STC*A7:178" in acks.ack277ca
    assert len(acks.rejected_claims) == 1


def _two_sets(first_without_se: bool) -> bytes:
    """ecm-clean's transaction set twice (the second with another ST02); the first set's last
    claim total is off by one (a SNIP 3 defect) and, optionally, the first set has no SE."""
    start, end = CLEAN.index("ST*837*"), CLEAN.index("GE*")
    body = CLEAN[start:end]
    first = body.replace("CLM*ECM0300000012*250*", "CLM*ECM0300000012*251*", 1)
    if first_without_se:
        first = first[:first.index("SE*")]
    second = body.replace("*0001*", "*0002*")
    return fix_counts(CLEAN[:start] + first + second + CLEAN[end:]).encode()


def test_one_checker_serves_every_set_and_each_set_starts_afresh():
    found = snip(_two_sets(first_without_se=False))
    assert found == [("X12-SNIP3-001", "ISA#1/GS#1/ST#1/2300[12]/CLM02")]
    # a set left without SE: its open claim is dropped, never judged with the next set's
    # lines (the structure findings say what is wrong)
    result = validate_x12(_two_sets(first_without_se=True))
    rules = [f.rule for f in result.findings]
    assert rules and not any("SNIP" in r for r in rules)


def test_the_checker_is_freed_when_validation_ends(monkeypatch):
    """Its handlers refer back to it: they are dropped at the end, so the memory of a long run
    does not wait for the cyclic garbage collector."""
    import gc
    import weakref

    from gateway.x12.snip import SnipChecker

    made = []
    init = SnipChecker.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(SnipChecker, "__init__", tracked)
    gc.disable()
    try:
        validate_x12(_two_sets(first_without_se=False))
    finally:
        gc.enable()
    assert len(made) == 1 and made[0]() is None


@pytest.mark.parametrize("pairs, expected", [
    # whole amounts are balanced in integers, the others as decimals: the same verdicts
    ([("CLM*ECM0300000001*250*", "CLM*ECM0300000001*250.00*")], []),
    ([("U8*100*UN*4***1~\nDTP*472*D8*20260907", "U8*100.50*UN*4***1~\nDTP*472*D8*20260907"),
      ("U8*100*UN*4***1~\nDTP*472*D8*20260909", "U8*99.5*UN*4***1~\nDTP*472*D8*20260909")],
     []),
    ([("U8*100*UN*4***1~\nDTP*472*D8*20260907", "U8*100.50*UN*4***1~\nDTP*472*D8*20260907")],
     [("X12-SNIP3-001", f"{TS}/2300[1]/CLM02")]),
    ([("CLM*ECM0300000001*250*", "CLM*ECM0300000001*250.01*")],
     [("X12-SNIP3-001", f"{TS}/2300[1]/CLM02")]),
    ([("CLM*ECM0300000001*250*", "CLM*ECM0300000001*0250*")], []),
])
def test_claim_balance_with_whole_and_decimal_amounts(pairs, expected):
    assert snip(mutate(*pairs)) == expected


def test_a_repeated_defect_is_reported_every_time_in_every_run():
    """The checker's caches (clean segment texts, NPIs already checked) never hide a repeat:
    the same wrong NPI in two claims, validated twice in one process, is four findings."""
    data = mutate(("NM1*82*1*KIM*ANA****XX*2000000317", "NM1*82*1*KIM*ANA****XX*2000000318"),
                  ("NM1*82*1*MORALES*SAM****XX*2000000622",
                   "NM1*82*1*MORALES*SAM****XX*2000000318"))
    expected = [("X12-SNIP5-NPI", f"{TS}/2310B[1]/NM109"),
                ("X12-SNIP5-NPI", f"{TS}/2310B[2]/NM109")]
    assert snip(data) == expected
    assert snip(data) == expected


def test_a_balance_that_would_wrap_around_a_machine_integer_is_left_to_the_rules():
    """ClaimTracker.passes sums whole amounts as machine integers when compiled: amounts of
    more than 15 digits, or a sum running far below zero, go to the claim rules (exact
    integers) — 18 lines of 18 nines and one more that add up to 1 + 2**64 do not balance a
    charge of 1, though modulo 2**64 they would."""
    from gateway.x12.snip import ClaimTracker, _Claim

    tracker = ClaimTracker(":", None)
    tracker.quick = tracker.balance = True
    claim = _Claim(1, 1, 1, "1", "1")
    claim.lines.extend(["999999999999999999"] * 18 + ["446744073709551635"])
    assert 18 * 999999999999999999 + 446744073709551635 == 1 + 2**64
    assert not tracker.passes(claim)
    many = _Claim(1, 1, 1, "1", "1")
    many.lines.extend(["999999999999999"] * 20000)  # 15 digits, a sum far below zero
    assert not tracker.passes(many)
    balanced = _Claim(1, 1, 1, "999999999999999", "1")
    balanced.lines.extend(["999999999999998", "1"])
    assert tracker.passes(balanced)
