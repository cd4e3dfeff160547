"""The ECM rules against the ECM Policy Guide (issue 14): each contradiction the domain review
found has a firing and a non-firing case, on boundary dates and ages (engine level)."""

import shutil
from datetime import date
from decimal import Decimal

from pathlib import Path

import pytest

from gateway.ecm.codesets import CodeSets
from gateway.ecm.rules import EncounterRules, Presumptive
from gateway.paths import PROFILES
from gateway.registry.store import Registry
from tests.test_ecm_rules import CS_NPI, ECM_NPI, OTHER_NPI, encounter, place

CIN = "91234567A"


def reg_with(members=(), cs=(), history=(), providers=True) -> Registry:
    reg = Registry()
    if members:
        reg.load_members(list(members), source="mif")
    if cs:
        reg.load_cs_authorizations(list(cs), source="cs")
    if history:
        reg.load_history(list(history), source="history")
    if providers:
        reg.load_providers([
            {"provider_npi": ECM_NPI, "provider_tin": "940000000", "ecm": True, "cs": False,
             "active_from": date(2020, 1, 1)},
            {"provider_npi": OTHER_NPI, "ecm": True, "cs": False, "active_from": date(2020, 1, 1)},
            {"provider_npi": CS_NPI, "ecm": False, "cs": True,
             "cs_services": ["HOUSING_NAVIGATION", "MEALS"], "active_from": date(2020, 1, 1)},
        ], source="roster")
    return reg


def member(cin=CIN, pof=("HOMELESS",), start=date(2026, 1, 1), end=None, npi=ECM_NPI,
           auth=None, birth=None, **extra) -> dict:
    return {"member_cin": cin, "pof_codes": list(pof), "authorization_date": auth or start,
            "ecm_benefit_start": start, "ecm_benefit_end": end, "ecm_provider_npi": npi,
            "member_birth_date": birth, **extra}


def rules(e, reg, **kw) -> list[str]:
    return [f.rule for f in EncounterRules(reg, **kw).check([(e, place(len(e.claim.lines)))])[0]]


def findings(e, reg, **kw):
    return EncounterRules(reg, **kw).check([(e, place(len(e.claim.lines)))])[0]


# -- 1. Community Supports are their own benefit (002:30-31) ------------------------------------
def test_cs_only_member_is_not_rejected_for_no_ecm_assignment():
    reg = reg_with(members=[member(cin="92222222B")])  # CIN has no ECM assignment
    cs_line = encounter(code="H0043", modifiers=("U6",), npi=CS_NPI)
    assert rules(cs_line, reg) == []
    ecm_line = encounter(npi=ECM_NPI)  # the same member's ECM line still needs one
    assert rules(ecm_line, reg) == ["ECM-MEM-002"]


@pytest.mark.parametrize("day, expected", [
    (date(2026, 2, 28), ["ECM-CS-002"]),   # the day before the CS authorization
    (date(2026, 3, 1), []),                # first day
    (date(2026, 5, 31), []),               # last day
    (date(2026, 6, 1), ["ECM-CS-002"]),    # the day after
])
def test_cs_lines_are_checked_against_cs_authorizations(day, expected):
    reg = reg_with(cs=[{"member_cin": CIN, "cs_service": "HOUSING_NAVIGATION",
                        "cs_provider_npi": CS_NPI, "cs_authorization_start": date(2026, 3, 1),
                        "cs_authorization_end": date(2026, 5, 31)}])
    assert rules(encounter(code="H0043", modifiers=("U6",), npi=CS_NPI, day=day), reg) == expected


def test_cs_authorization_is_per_service_and_provider():
    reg = reg_with(cs=[{"member_cin": CIN, "cs_service": "HOUSING_NAVIGATION",
                        "cs_provider_npi": CS_NPI, "cs_authorization_start": date(2026, 1, 1)}])
    found = findings(encounter(code="S5170", modifiers=("U6",), npi=CS_NPI), reg)
    assert [(f.rule, f.message) for f in found] == [(
        "ECM-CS-002", "no Community Supports authorization for MEALS covers 2026-02-10 for "
                      "this member and provider NPI 1000000020")]


def test_cs_columns_of_the_mif_load_cs_authorizations():
    reg = reg_with(members=[member(cs_service="MEALS", cs_provider_npi=CS_NPI,
                                   cs_authorization_start=date(2026, 2, 1))])
    assert rules(encounter(code="S5170", modifiers=("U6",), npi=CS_NPI), reg) == []
    assert rules(encounter(code="S5170", modifiers=("U6",), npi=CS_NPI,
                           day=date(2026, 1, 31)), reg) == ["ECM-CS-002"]


# -- 2. POF evidence as the guide defines it (002:411-443, 002:474-482) -------------------------
def line(cin, day, pos="23", code="99284", dx="Z590", claim=None):
    return {"cin": cin, "billing_npi": "1999999992", "service_date": day,
            "procedure_code": code, "modifiers": "", "units": Decimal(1),
            "place_of_service": pos, "claim_id": claim or f"H{day}", "line_number": 1,
            "diagnoses": dx}


def stay(cin, first: date, days: int, claim=None, dx="Z590", pos="21"):
    from datetime import timedelta
    return [line(cin, first + timedelta(days=n), pos=pos, code="99222", dx=dx,
                 claim=claim or f"S{first}") for n in range(days)]


HU = "93333333C"


def hu_reg(history):
    return reg_with(members=[member(cin=HU, pof=("HIGH_UTILIZER",), start=date(2026, 3, 1))],
                    history=history)


def test_one_three_day_admission_is_one_stay_not_three():
    # each day billed on its own claim: contiguous days are still one admission
    history = [dict(x, claim_id=f"D{n}") for n, x in enumerate(stay(HU, date(2026, 1, 10), 3))]
    found = findings(encounter(cin=HU, day=date(2026, 3, 10)), hu_reg(history))
    assert [f.rule for f in found] == ["ECM-POF-001"]
    assert "three or more unplanned hospital and/or short-term SNF stays (1 found)" \
        in found[0].message


def test_three_separate_admissions_meet_the_stay_alternative():
    history = stay(HU, date(2026, 1, 2), 2) + stay(HU, date(2026, 1, 10), 3) \
        + stay(HU, date(2026, 2, 1), 1, pos="31")  # a short-term SNF stay counts with them
    assert rules(encounter(cin=HU, day=date(2026, 3, 10)), hu_reg(history)) == []


def test_stays_a_day_apart_are_two_admissions():
    # Jan 10-11 and Jan 13: a one-day gap (Jan 12) separates them; plus one more stay
    history = stay(HU, date(2026, 1, 10), 2) + stay(HU, date(2026, 1, 13), 1) \
        + stay(HU, date(2026, 2, 1), 1)
    assert rules(encounter(cin=HU, day=date(2026, 3, 10)), hu_reg(history)) == []
    joined = stay(HU, date(2026, 1, 10), 2) + stay(HU, date(2026, 1, 12), 1) \
        + stay(HU, date(2026, 2, 1), 1)  # Jan 12 continues the Jan 10-11 stay
    assert rules(encounter(cin=HU, day=date(2026, 3, 10)), hu_reg(joined)) == ["ECM-POF-001"]


SMI = "94444444D"


def smi_reg(history):
    return reg_with(members=[member(cin=SMI, pof=("SMI_SUD",), start=date(2026, 3, 1))],
                    history=history)


def test_smi_sud_one_ed_visit_and_one_stay_do_not_add_up():
    history = [line(SMI, date(2025, 9, 1), dx="F200")] + stay(SMI, date(2025, 12, 1), 2,
                                                               dx="F1020")
    found = findings(encounter(cin=SMI, day=date(2026, 3, 10)), smi_reg(history))
    assert [(f.rule, f.message) for f in found] == [(
        "ECM-POF-001",
        "the member is assigned under SMI_SUD but encounter history from 2025-01-01 to "
        "2025-12-02 shows none of the utilization alternatives of the adult SMI/SUD utilization "
        "(one of four alternatives of part 3) criterion: two or more ED visits due to SMI or "
        "SUD (1 found); two or more hospitalizations due to SMI or SUD (1 found); other "
        "criteria may qualify the member: high risk, crisis/ED as sole source of care, or "
        "pregnancy/post-partum (002:475-480) may qualify the member instead")]


def test_smi_sud_needs_an_smi_sud_diagnosis():
    with_dx = [line(SMI, date(2025, 9, 1), dx="F200"), line(SMI, date(2025, 10, 1), dx="F329")]
    assert rules(encounter(cin=SMI, day=date(2026, 3, 10)), smi_reg(with_dx)) == []
    without = [line(SMI, date(2025, 9, 1), dx="J449"), line(SMI, date(2025, 10, 1), dx="F200")]
    assert rules(encounter(cin=SMI, day=date(2026, 3, 10)), smi_reg(without)) == ["ECM-POF-001"]


def test_ed_visit_leading_to_an_admission_is_the_stay():
    # ED on the day before the admission: counted as the stay only (and its diagnosis with it)
    history = [line(SMI, date(2025, 9, 1), dx="F200")] + stay(SMI, date(2025, 9, 2), 1, dx="Z590")
    history += stay(SMI, date(2025, 11, 5), 1, dx="F10")
    assert rules(encounter(cin=SMI, day=date(2026, 3, 10)), smi_reg(history)) == []
    # ED two days before the admission: a visit of its own
    apart = [line(SMI, date(2025, 8, 31), dx="F200")] + stay(SMI, date(2025, 9, 2), 1, dx="Z590")
    apart += stay(SMI, date(2025, 11, 5), 1, dx="F10")
    assert rules(encounter(cin=SMI, day=date(2026, 3, 10)), smi_reg(apart)) == ["ECM-POF-001"]


@pytest.mark.parametrize("anchor, day, expected", [
    # latest claims month (default): the history ends 2025-12; the window is Jul-Dec 2025
    ("latest_claims_month", date(2025, 7, 1), []),
    ("latest_claims_month", date(2025, 6, 30), ["ECM-POF-001"]),
    # authorization date 2026-03-01: the window is 2025-09-01 .. 2026-03-01
    ("authorization_date", date(2025, 9, 1), []),
    ("authorization_date", date(2025, 8, 31), ["ECM-POF-001"]),
])
def test_lookback_anchor_is_configurable(tmp_path, anchor, day, expected):
    folder = tmp_path / "codesets"
    shutil.copytree(PROFILES / "codesets", folder)
    text = (folder / "utilization.yaml").read_text()
    (folder / "utilization.yaml").write_text(
        text.replace("lookback_anchor: latest_claims_month", f"lookback_anchor: {anchor}"))
    history = stay(HU, day, 1) + stay(HU, date(2025, 11, 1), 1) + stay(HU, date(2025, 12, 30), 1)
    assert rules(encounter(cin=HU, day=date(2026, 3, 10)), hu_reg(history),
                 codesets=CodeSets(folder)) == expected


CHILD = "95555555E"


def test_children_thresholds_are_unpublished_so_not_tested(tmp_path):
    reg = reg_with(members=[member(cin=CHILD, pof=("CY_HIGH_UTILIZER",),
                                   birth=date(2015, 1, 1))],
                   history=[line(CHILD, date(2025, 12, 1))])
    assert rules(encounter(cin=CHILD), reg) == []  # no adult numbers borrowed
    folder = tmp_path / "codesets"
    shutil.copytree(PROFILES / "codesets", folder)
    text = (folder / "utilization.yaml").read_text()
    (folder / "utilization.yaml").write_text(text.replace(
        "events: [ed_visit], at_least: null", "events: [ed_visit], at_least: 2"))
    assert rules(encounter(cin=CHILD), reg, codesets=CodeSets(folder)) == ["ECM-POF-001"]


# -- 3. Ages (002:317, 002:325-327, 002:413) -------------------------------------------------------
@pytest.mark.parametrize("pof, birth, day, expected", [
    ("HIGH_UTILIZER", date(2005, 2, 11), date(2026, 2, 10), ["ECM-AGE-001"]),  # 20, a day short
    ("HIGH_UTILIZER", date(2005, 2, 10), date(2026, 2, 10), []),              # 21st birthday
    ("CY_SED_CHR", date(2005, 2, 11), date(2026, 2, 10), []),                 # 20
    ("CY_SED_CHR", date(2005, 2, 10), date(2026, 2, 10), ["ECM-AGE-001"]),    # 21
    # child welfare: children and youth (under 21); foster care up to 26 (002:325-327)
    ("CY_CHILD_WELFARE", date(2005, 2, 11), date(2026, 2, 10), []),           # 20
    ("CY_CHILD_WELFARE", date(2005, 2, 10), date(2026, 2, 10), ["ECM-AGE-001"]),  # 21
    ("CY_FOSTER_CARE", date(2000, 2, 11), date(2026, 2, 10), []),             # 25
    ("CY_FOSTER_CARE", date(2000, 2, 10), date(2026, 2, 10), ["ECM-AGE-001"]),    # 26
])
def test_age_must_fit_every_assigned_pof(pof, birth, day, expected):
    reg = reg_with(members=[member(pof=(pof,), birth=birth)])
    assert rules(encounter(day=day), reg) == expected


def test_age_finding_names_the_range():
    reg = reg_with(members=[member(pof=("HIGH_UTILIZER", "SMI_SUD"), birth=date(2018, 5, 1))])
    found = findings(encounter(), reg)
    assert [f.message for f in found] == [
        "on 2026-02-10 the member is 7, but Population of Focus HIGH_UTILIZER is for age 21 "
        "and over",
        "on 2026-02-10 the member is 7, but Population of Focus SMI_SUD is for age 21 and over"]


# -- 4. Effective-dated program overlaps -------------------------------------------------------
def with_program(program, start=date(2022, 1, 1), end=None, county=None, extra=()):
    rows = [member(start=date(2022, 1, 1), other_program=program, other_program_start=start,
                   other_program_end=end, member_county=county)]
    rows += [member(start=date(2022, 1, 1), other_program=p, other_program_start=s,
                    other_program_end=e, member_county=county) for p, s, e in extra]
    return reg_with(members=rows)


@pytest.mark.parametrize("program, day, expected", [
    ("CMC", date(2022, 12, 31), ["ECM-PGM-001"]),      # Figure 5 is "in 2022" (002:1170)
    ("CMC", date(2023, 1, 1), []),
    ("FIDE_SNP", date(2022, 12, 31), ["ECM-PGM-001"]),
    ("FIDE_SNP", date(2023, 1, 1), []),                # D-SNP members eligible from 2023
    ("D_SNP", date(2022, 6, 1), []),
    ("D_SNP", date(2023, 1, 1), []),
    ("SMHS_FSP", date(2023, 1, 1), ["ECM-PGM-003"]),   # 002:1039-1042
    ("ICC", date(2024, 1, 1), ["ECM-PGM-003"]),        # 003:198-202
    ("HCPCFC", date(2024, 1, 1), ["ECM-PGM-003"]),     # 003:198-212
])
def test_program_overlaps_follow_their_dates(program, day, expected):
    assert rules(encounter(day=day), with_program(program)) == expected


def test_hhp_wpc_dual_exception():
    excluded = with_program("CMC")
    assert rules(encounter(day=date(2022, 3, 1)), excluded) == ["ECM-PGM-001"]
    transitioned = with_program("CMC", extra=[("WPC", date(2020, 1, 1), date(2021, 12, 31))])
    assert rules(encounter(day=date(2022, 3, 1)), transitioned) == []


def test_county_tcm_either_or_override(tmp_path):
    folder = tmp_path / "codesets"
    shutil.copytree(PROFILES / "codesets", folder)
    with open(folder / "program-county-overrides.csv", "a") as handle:
        handle.write("COUNTY_TCM,Alpine,either_or,2024-01-01,,plan determination (002:1014-1016),no\n")
    codes = CodeSets(folder)
    in_alpine = with_program("COUNTY_TCM", county="ALPINE")
    assert rules(encounter(day=date(2024, 1, 1)), in_alpine, codesets=codes) == ["ECM-PGM-002"]
    assert rules(encounter(day=date(2023, 12, 31)), in_alpine, codesets=codes) == ["ECM-PGM-003"]
    elsewhere = with_program("COUNTY_TCM", county="Sierra")
    assert rules(encounter(day=date(2024, 1, 1)), elsewhere, codesets=codes) == ["ECM-PGM-003"]


# -- 5. Presumptive authorization (002:1536-1542; 003:117) ------------------------------------
PRESUMPTIVE = Presumptive(frozenset({ECM_NPI}), 30)
NEW = "96666666F"


@pytest.mark.parametrize("day, expected", [
    (date(2026, 3, 1), ["ECM-MEM-004"]),   # the first presumptive line
    (date(2026, 3, 30), ["ECM-MEM-004"]),  # day 30
    (date(2026, 3, 31), ["ECM-MEM-005"]),  # day 31: the period is over
])
def test_presumptive_authorization_period(day, expected):
    reg = reg_with(members=[member()], history=[{
        "cin": NEW, "billing_npi": ECM_NPI, "service_date": date(2026, 3, 1),
        "procedure_code": "G9008", "modifiers": "U8", "units": Decimal(1),
        "place_of_service": "11", "claim_id": "P1", "line_number": 1}])
    assert rules(encounter(cin=NEW, day=day), reg, presumptive=PRESUMPTIVE) == expected


def test_presumptive_only_for_trusted_providers():
    reg = reg_with(members=[member()])
    assert rules(encounter(cin=NEW, npi=OTHER_NPI), reg,
                 presumptive=PRESUMPTIVE) == ["ECM-MEM-002"]
    assert rules(encounter(cin=NEW), reg) == ["ECM-MEM-002"]  # no setting: no presumption
    found = findings(encounter(cin=NEW), reg, presumptive=PRESUMPTIVE)
    assert found[0].message == (
        "ECM lines of provider NPI 1000000004 are accepted provisionally for this member from "
        "2026-02-10 to 2026-03-11, pending the plan's decision; the plan's member file will "
        "settle them")
    assert found[0].severity.value == "warning"


def _claims(*specs):
    """(encounter, place) pairs of one batch: each spec (day, npi) or (days, npi), one claim."""
    batch = []
    for number, (days, npi) in enumerate(specs, 1):
        days = days if isinstance(days, list) else [days]
        e = encounter(cin=NEW, npi=npi, day=days[0], lines=len(days))
        for line, day in zip(e.claim.lines, days):
            line.service_date = day
        e.claim.id = f"P{number}"
        batch.append((e, place(len(days))))
    return batch


def _verdicts(engine, batch):
    return [[(f.rule, f.message) for f in found if f.rule.startswith("ECM-MEM")]
            for found in engine.check(batch)]


def test_presumptive_period_does_not_depend_on_the_order_of_the_lines():
    # 002:1536-1542 "a fixed period of time": from the member's first line, whatever order the
    # lines come in (an audit found the last line first opening a period of its own)
    reg = reg_with(members=[member()])
    days = [date(2026, 11, 1), date(2026, 11, 30), date(2026, 12, 1)]
    for order in (days, days[::-1], [days[2], days[0], days[1]]):
        engine = EncounterRules(reg, presumptive=PRESUMPTIVE)
        found = _verdicts(engine, _claims(*[(d, ECM_NPI) for d in order]))
        by_day = {d: rows[0][0] for d, rows in zip(order, found)}
        assert by_day == {date(2026, 11, 1): "ECM-MEM-004", date(2026, 11, 30): "ECM-MEM-004",
                          date(2026, 12, 1): "ECM-MEM-005"}, order


def test_presumptive_claim_with_a_line_after_the_period_is_rejected():
    reg = reg_with(members=[member()])
    engine = EncounterRules(reg, presumptive=PRESUMPTIVE)
    inside, straddling = _verdicts(engine, _claims(
        ([date(2026, 11, 1), date(2026, 11, 30)], ECM_NPI),
        ([date(2026, 11, 29), date(2026, 12, 1)], ECM_NPI)))
    assert [rule for rule, _ in inside] == ["ECM-MEM-004"]
    assert straddling == [("ECM-MEM-005", "the provisional period of provider NPI 1000000004 "
                           "for this member (2026-11-01 to 2026-11-30) is over and the plan "
                           "has not decided yet")]


TWO_TRUSTED = Presumptive(frozenset({ECM_NPI, OTHER_NPI}), 30)


def test_one_provider_at_a_time_under_presumptive_authorization():
    # 002:1544-1545: one ECM provider at a time; the provider whose period began first holds
    # the member (the same day: the one met first)
    reg = reg_with(members=[member()])
    engine = EncounterRules(reg, presumptive=TWO_TRUSTED)
    first, second, later = _verdicts(engine, _claims(
        (date(2026, 11, 2), ECM_NPI), (date(2026, 11, 2), OTHER_NPI),
        (date(2026, 12, 2), OTHER_NPI)))
    assert [rule for rule, _ in first] == ["ECM-MEM-004"]
    assert second == [("ECM-MEM-007", "provider NPI 1000000004 already bills this member under "
                       "presumptive authorization (2026-11-02 to 2026-12-01); a member has one "
                       "ECM provider at a time")]
    # after the holder's period the other provider's own period (from its first line) applies
    assert [rule for rule, _ in later] == ["ECM-MEM-005"]
    # an earlier line of the second provider makes it the holder, whatever the order
    engine = EncounterRules(reg, presumptive=TWO_TRUSTED)
    a, b = _verdicts(engine, _claims((date(2026, 11, 5), ECM_NPI),
                                     (date(2026, 11, 3), OTHER_NPI)))
    assert (a[0][0], b[0][0]) == ("ECM-MEM-007", "ECM-MEM-004")


def test_another_providers_period_is_told_to_the_submitter_as_not_its_member():
    reg = reg_with(members=[member()])
    engine = EncounterRules(reg, presumptive=TWO_TRUSTED, audience="submitter",
                            submitter=((OTHER_NPI,), ()))
    found = engine.check(_claims((date(2026, 11, 2), ECM_NPI), (date(2026, 11, 2), OTHER_NPI)))
    told = [(f.rule, f.message) for f in found[1] if f.rule.startswith("ECM-MEM")]
    assert told == [("ECM-MEM-010", "the member is not assigned to you on 2026-11-02")]
    assert ECM_NPI not in str([f.message for f in found[1]])


def test_recorded_presumptive_lines_continue_the_period_and_are_rechecked():
    from gateway.ecm.presumptive import recheck

    reg = reg_with(members=[member()])
    engine = EncounterRules(reg, presumptive=PRESUMPTIVE)
    assert [r for r, _ in _verdicts(engine, _claims((date(2026, 11, 2), ECM_NPI)))[0]] == [
        "ECM-MEM-004"]
    assert engine.presumptive_lines() == [{"cin": NEW, "billing_npi": ECM_NPI,
                                           "first_day": date(2026, 11, 2),
                                           "last_day": date(2026, 11, 2)}]
    reg.replace_presumptive(engine.presumptive_lines(), "provider:p:submission:1")
    # the next submission (a new engine) continues the period instead of opening one
    later = EncounterRules(reg, presumptive=PRESUMPTIVE)
    assert _verdicts(later, _claims((date(2026, 12, 4), ECM_NPI)))[0][0][1].endswith(
        "(2026-11-02 to 2026-12-01) is over and the plan has not decided yet")
    other = [(7, member(cin=NEW, npi=OTHER_NPI, start=date(2026, 12, 1)))]
    assert [(f.rule, f.location, f.message) for f in recheck(reg, other, PRESUMPTIVE)] == [
        ("ECM-MEM-006", "row 7, column Member CIN",
         "ECM lines of provider NPI 1000000004 from 2026-11-02 to 2026-11-02 were accepted "
         "under presumptive authorization, but this MIF assigns the member to provider NPI "
         "1000000012")]
    reg.replace_presumptive([], "provider:p:submission:1")  # a re-run replaces them
    assert recheck(reg, other, PRESUMPTIVE) == []


# -- 6. One ECM provider at a time (002:1544-1545) -------------------------------------------------
def test_only_the_assignment_covering_the_date_counts():
    reg = reg_with(members=[member(npi=ECM_NPI, start=date(2026, 1, 1)),
                            member(npi=OTHER_NPI, start=date(2026, 3, 1))])
    assert rules(encounter(npi=ECM_NPI, day=date(2026, 2, 28)), reg) == []
    assert rules(encounter(npi=ECM_NPI, day=date(2026, 3, 1)), reg) == ["ECM-PRV-001"]
    assert rules(encounter(npi=OTHER_NPI, day=date(2026, 3, 1)), reg) == []
    assert rules(encounter(npi=OTHER_NPI, day=date(2026, 2, 28)), reg) == ["ECM-PRV-001"]


# -- MIF checks: county go-live, CS columns ------------------------------------------------------
def _mif_with_cs(tmp_path, county, auth, cs_service="MEALS"):
    import csv as _csv
    from gateway.tabular import load_layout
    headers = [c.headers[0] for c in load_layout("mif", "with-cs").columns]
    row = dict.fromkeys(headers, "")
    row.update({"Member CIN": "97777777G", "Member Last Name": "Oakhaven",
                "Member First Name": "Rue", "Member Date of Birth": "1960-01-01",
                "Member POF": "HOMELESS", "ECM Authorization Date": auth,
                "ECM Benefit Start Date": auth, "ECM Provider Name": "Harbor",
                "ECM Provider NPI": "1234500001", "ECM Provider TIN": "941200000",
                "MIF Reporting Period": "2022-06", "Member County": county,
                "Community Supports Service": cs_service,
                "Community Supports Provider NPI": "1234737579",
                "Community Supports Authorization Start Date": "2022-06-01"})
    path = tmp_path / "mif.csv"
    with open(path, "w", newline="") as out:
        writer = _csv.DictWriter(out, fieldnames=headers)
        writer.writeheader()
        writer.writerow(row)
    return path


@pytest.mark.parametrize("county, auth, expected", [
    ("Fresno", "2022-06-30", ["ECM-MIF-003"]),   # a 7/1/22 county (Appendix A)
    ("Fresno", "2022-07-01", []),
    ("Kern", "2022-01-03", []),                  # a 1/1/22 county
    ("kern", "2022-01-03", []),                  # (any case)
    ("NARNIA", "2022-07-01", ["ROW-006"]),       # not a California county: a row error
])
def test_county_go_live(tmp_path, county, auth, expected):
    from gateway.ecm.tables import read_checked_table
    table = read_checked_table(_mif_with_cs(tmp_path, county, auth), "mif")
    assert table.layout == "with-cs"
    assert [f.rule for f in table.findings] == expected


def test_mif_cs_columns_are_checked_against_the_cs_code_set(tmp_path):
    from gateway.ecm.tables import read_checked_table
    table = read_checked_table(_mif_with_cs(tmp_path, "Kern", "2022-01-03", "SPA_DAY"), "mif")
    assert [(f.rule, f.location) for f in table.findings] == [
        ("ROW-006", "row 2, column Community Supports Service")]


def _mif_rows_with_cs(tmp_path, cs: list[tuple]) -> Path:
    """A with-cs MIF of one member, a row per (service, start, end, other program)."""
    import csv as _csv
    path = _mif_with_cs(tmp_path, "Kern", "2022-01-03")
    rows = list(_csv.DictReader(open(path, newline="")))
    out = []
    for service, start, end, program in cs:
        out.append({**rows[0], "Community Supports Service": service,
                    "Community Supports Authorization Start Date": start,
                    "Community Supports Authorization End Date": end,
                    "Other Program": program,
                    "Other Program Start Date": "2022-01-01" if program else ""})
    with open(path, "w", newline="") as handle:
        writer = _csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(out)
    return path


def test_a_with_cs_mif_has_a_row_per_cs_service_and_overlaps_are_ecm_cs_003(tmp_path):
    """The with-cs layout's rows differ in their CS columns (no ROW-012 duplicate); two
    authorizations of one service that overlap are ECM-CS-003 as in a CS authorization file,
    and the file is not applied; one authorization repeated on each row of the member (a row
    per other program) is one authorization."""
    from gateway.ecm.tables import read_checked_table
    from gateway.registry.load import load_registries

    found = lambda path: [(f.rule, f.location, f.message)  # noqa: E731
                          for f in read_checked_table(path, "mif").findings]
    two = _mif_rows_with_cs(tmp_path, [("MEALS", "2022-06-01", "", ""),
                                       ("HOUSING_DEPOSITS", "2022-06-01", "", "")])
    assert found(two) == []
    overlapping = _mif_rows_with_cs(tmp_path, [("MEALS", "2022-06-01", "2022-12-31", ""),
                                               ("MEALS", "2022-12-31", "", "")])
    assert found(overlapping) == [
        ("ECM-CS-003", "row 3, column Community Supports Authorization Start Date",
         "this MEALS authorization starting 2022-12-31 overlaps the one on row 2 for the same "
         "member and service")]
    reg = Registry()
    [report] = load_registries(reg, members=[overlapping])
    assert [f.rule for f in report.findings] == ["ECM-CS-003", "ECM-REG-002"]
    assert not reg.loaded()["members"] and not reg.loaded()["cs_authorizations"]
    adjacent = _mif_rows_with_cs(tmp_path, [("MEALS", "2022-06-01", "2022-12-31", ""),
                                            ("MEALS", "2023-01-01", "", "")])
    assert found(adjacent) == []
    repeated = _mif_rows_with_cs(tmp_path, [("MEALS", "2022-06-01", "", ""),
                                            ("MEALS", "2022-06-01", "", "CCS")])
    assert found(repeated) == []
    duplicated = _mif_rows_with_cs(tmp_path, [("MEALS", "2022-06-01", "", ""),
                                              ("MEALS", "2022-06-01", "", "")])
    assert [f.rule for f in read_checked_table(duplicated, "mif").findings] == ["ROW-012"]


# -- MIF dates of birth: none after the day checked, none over the oldest plausible age ----------
DOB_TODAY = date(2026, 3, 15)
DOB_WHERE = ("error", "row 2, column Member Date of Birth")
DOB_FUTURE = (*DOB_WHERE, "not a possible date of birth on 2026-03-15: it is after that day")
DOB_ERROR = (*DOB_WHERE, "not a possible date of birth on 2026-03-15: the member would be older "
             "than 120 years (the oldest assumed possible)")


def _mif_born(tmp_path, birth):
    path = _mif_with_cs(tmp_path, "Kern", "2022-01-03")
    path.write_text(path.read_text().replace("1960-01-01", birth))
    return path


@pytest.mark.parametrize("birth, expected", [
    ("2030-04-02", [("ECM-MIF-004", *DOB_FUTURE)]),  # the future: an error, no age warning
    ("2026-03-16", [("ECM-MIF-004", *DOB_FUTURE)]),  # the day after the check
    ("1800-04-02", [("ECM-MIF-004", *DOB_ERROR)]),  # 225 years old
    ("1905-03-15", [("ECM-MIF-004", *DOB_ERROR)]),  # 121 on the day
    ("1905-03-16", []),                             # 120 until the next day: possible
])
def test_an_impossible_birth_date_is_a_row_error(tmp_path, birth, expected):
    from gateway.ecm.tables import read_checked_table

    table = read_checked_table(_mif_born(tmp_path, birth), "mif", today=DOB_TODAY)
    assert [(f.rule, f.severity, f.location, f.message) for f in table.findings] == expected


def test_a_birth_date_on_the_day_checked_is_no_birth_date_error(tmp_path):
    from gateway.ecm.tables import read_checked_table

    table = read_checked_table(_mif_born(tmp_path, "2026-03-15"), "mif", today=DOB_TODAY)
    assert "ECM-MIF-004" not in [f.rule for f in table.findings]


def test_the_oldest_plausible_age_is_data(tmp_path):
    from gateway.ecm.codesets import load_codesets

    assert load_codesets().max_age_years == 120
    folder = tmp_path / "codesets"
    shutil.copytree(PROFILES / "codesets", folder)
    (folder / "member-ages.yaml").write_text("max_age_years: 130\nconfirmed: no\n")
    from gateway.ecm.tables import mif_findings
    from gateway.rules import default_catalogue
    from gateway.tabular import read_table

    table = read_table(_mif_born(tmp_path, "1900-01-01"), "mif")
    assert mif_findings(table, default_catalogue(), load_codesets(str(folder)), DOB_TODAY) == []


def test_the_cli_refuses_a_mif_with_a_birth_date_in_the_future(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gateway.cli", "validate",
                           str(_mif_born(tmp_path, "2999-01-01")), "--format", "json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    import json
    [found] = json.loads(done.stdout)["files"][0]["findings"]
    assert (found["rule"], found["severity"], found["location"]) == (
        "ECM-MIF-004", "error", "row 2, column Member Date of Birth")
    assert "2999" not in found["message"]  # the member's date is not repeated


# -- a claims extract is applied whole or not at all -------------------------------------------
def test_claims_extract_with_a_bad_row_leaves_the_registry_as_it_was(tmp_path):
    from sqlalchemy import func, select

    from gateway.registry.claims import load_claims_extract
    from gateway.registry.store import history
    from tests.conftest import FIXTURES

    good = FIXTURES / "ecm-policy" / "claims-history.csv"
    reg = Registry()
    first = load_claims_extract(reg, good, "plan:p:claims:h.csv")
    assert (first.loaded, first.errors, first.findings) == (8, 0, [])
    bad = tmp_path / "h.csv"
    lines = good.read_text().splitlines()
    lines[2] = lines[2].replace("2025-01-11", "2025-02-30")        # impossible date
    lines[3] = lines[3].replace(",I50.9", ",NOTADX")                 # unknown diagnosis
    lines.append("94100009Z,X1,1,P,2025-03-01,,99213,,1,11,1999999992,,Z59.0")  # fine
    bad.write_text("\n".join(lines) + "\n")
    second = load_claims_extract(reg, bad, "plan:p:claims:h.csv")
    assert [(f.rule, f.location) for f in second.findings] == [
        ("ROW-002", "row 3, column Service Date"),
        ("ECM-HIST-001", "row 4, column Diagnosis Codes"),
        ("ECM-REG-002", "file")]
    assert second.loaded == 0
    with reg.engine.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(history)).scalar()
        dx = conn.execute(select(history.c.diagnoses).where(
            history.c.claim_id == "ED-7")).scalar()
    assert kept == 8 and dx == "F209"  # the first file's lines, diagnoses without the dot


@pytest.mark.parametrize("day, expected", [
    ("2026-12-04", []),                                  # the day of the load
    ("2026-12-05", [("ECM-HIST-002", "row 2, column Service Date",
                     "service date 2026-12-05 is after the day of the load (2026-12-04)")]),
    ("1966-03-01", []),
    ("1900-01-01", [("ECM-HIST-002", "row 2, column Service Date",
                     "service date 1900-01-01 is before Medi-Cal began (1966-03-01)")]),
])
def test_claims_extract_service_dates_must_be_history(tmp_path, day, expected):
    from gateway.registry.claims import load_claims_extract
    from tests.conftest import FIXTURES

    lines = (FIXTURES / "ecm-policy" / "claims-history.csv").read_text().splitlines()
    header, row = lines[0], lines[1]
    old_day = row.split(",")[header.split(",").index("Service Date")]
    path = tmp_path / "h.csv"
    path.write_text(f"{header}\n{row.replace(old_day, day)}\n")
    done = load_claims_extract(Registry(), path, "plan:p:claims:h.csv", today=date(2026, 12, 4))
    assert [(f.rule, f.location, f.message) for f in done.findings
            if f.rule != "ECM-REG-002"] == expected
    assert done.loaded == (0 if expected else 1)


def test_presumptive_lines_are_rechecked_when_the_mif_arrives(tmp_path):
    from gateway.ecm.presumptive import recheck

    reg = reg_with(history=[{
        "cin": NEW, "billing_npi": ECM_NPI, "service_date": date(2026, 3, 1) + __import__(
            "datetime").timedelta(days=d), "procedure_code": "G9008", "modifiers": "U1",
        "units": Decimal(1), "place_of_service": "11", "claim_id": f"P{d}", "line_number": 1}
        for d in (0, 9)])
    same = [(2, member(cin=NEW, npi=ECM_NPI, start=date(2026, 3, 1)))]
    assert recheck(reg, same, PRESUMPTIVE) == []
    later = [(2, member(cin=NEW, npi=ECM_NPI, start=date(2026, 3, 2)))]
    other = [(5, member(cin=NEW, npi=OTHER_NPI, start=date(2026, 3, 1)))]
    assert [(f.rule, f.location, f.message) for f in recheck(reg, later + other, PRESUMPTIVE)
            ] == [("ECM-MEM-006", "row 2, column Member CIN",
                   "ECM lines of provider NPI 1000000004 from 2026-03-01 to 2026-03-10 were "
                   "accepted under presumptive authorization, but this MIF starts the member's "
                   "ECM benefit on 2026-03-02, after them")]
    assert [f.message.split("but this MIF ")[1] for f in recheck(reg, other, PRESUMPTIVE)] == [
        "assigns the member to provider NPI 1000000012"]
    assert recheck(reg, other, None) == []  # no arrangement: nothing to re-check


def test_every_assumption_is_data_in_its_file_and_in_the_readme_table():
    import yaml

    from gateway.paths import HOME

    register = yaml.safe_load((PROFILES / "assumptions.yaml").read_text())["assumptions"]
    readme = (HOME / "README.md").read_text()
    table = readme[readme.index("#### Assumptions"):readme.index("## Configuration as data")]
    for entry in register:
        assert entry["confirmed"] is False, entry["id"]  # YAML "no"
        assert (HOME / entry["where"]).exists(), entry["where"]
        assert entry["where"].rsplit("/", 1)[-1] in table, entry["id"]
    # the code-set rows of those assumptions say so themselves
    import csv as _csv
    rows = {r["code"]: r for r in _csv.DictReader(open(PROFILES / "codesets" / "pof.csv"))}
    assert rows["INCARCERATION"]["confirmed"] == "no" and rows["HOMELESS"]["age_confirmed"] == "no"
    assert rows["CY_FOSTER_CARE"]["confirmed"] == "no" and rows["CY_FOSTER_CARE"]["age_below"] == "26"
    methods = {r["code"]: r for r in _csv.DictReader(
        open(PROFILES / "codesets" / "outreach-methods.csv"))}
    assert methods["MAIL"]["counts_as_attempt"] == "no" and methods["TEXT"]["attempt_confirmed"] == "no"


def test_overlapping_cs_authorizations_are_a_row_finding_and_the_file_is_not_applied(tmp_path):
    from gateway.registry.load import load_registries
    from tests.conftest import FIXTURES

    text = (FIXTURES / "ecm-policy" / "cs-authorizations.csv").read_text()
    path = tmp_path / "cs.csv"
    path.write_text(text + "94100001A,Vantongeren,Ezekiel,HOUSING_NAVIGATION,,2025-10-31,\n")
    reg = Registry()
    [report] = load_registries(reg, cs_authorizations=[path])
    assert [(f.rule, f.location) for f in report.findings] == [
        ("ECM-CS-003", "row 3, column Authorization Start Date"), ("ECM-REG-002", "file")]
    assert report.stats["loaded"] == 0 and not reg.loaded()["cs_authorizations"]
    path.write_text(text + "94100001A,Vantongeren,Ezekiel,HOUSING_NAVIGATION,,2025-11-01,\n")
    [report] = load_registries(reg, cs_authorizations=[path])
    assert report.findings == [] and reg.loaded()["cs_authorizations"]
