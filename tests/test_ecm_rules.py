"""Each ECM rule fires, and does not, on boundary dates (engine level, registries in memory)."""

from datetime import date
from decimal import Decimal

import pytest

from gateway.ecm.rules import ClaimPlace, EncounterRules
from gateway.model.encounter import (
    Address, BillingProvider, Claim, Encounter, Member, Party, RenderingProvider, ServiceLine,
)
from gateway.registry.store import Registry

ECM_NPI, OTHER_NPI, CS_NPI = "1000000004", "1000000012", "1000000020"
CIN = "91234567A"


def registry(members=True, providers=True, history=()) -> Registry:
    reg = Registry()
    if members:
        reg.load_members([{
            "member_cin": CIN, "pof_codes": ["HOMELESS"], "authorization_date": date(2026, 1, 2),
            "ecm_benefit_start": date(2026, 1, 5), "ecm_benefit_end": date(2026, 6, 30),
            "ecm_provider_npi": ECM_NPI, "ecm_provider_tin": "940000000",
        }, {
            "member_cin": "92222222B", "pof_codes": ["HIGH_UTILIZER"],
            "authorization_date": date(2026, 3, 1), "ecm_benefit_start": date(2026, 3, 1),
            "ecm_benefit_end": None, "ecm_provider_npi": ECM_NPI,
            "other_program": "HOSPICE", "other_program_start": date(2026, 4, 1),
            "other_program_end": date(2026, 4, 30),
        }, {
            "member_cin": "92222222B", "pof_codes": ["HIGH_UTILIZER"],
            "authorization_date": date(2026, 3, 1), "ecm_benefit_start": date(2026, 3, 1),
            "ecm_benefit_end": None, "ecm_provider_npi": ECM_NPI,
            "other_program": "MSSP", "other_program_start": date(2026, 5, 1),
            "other_program_end": None,
        }, {
            "member_cin": "93333333C", "pof_codes": ["HOMELESS"],
            "authorization_date": date(2026, 1, 1), "ecm_benefit_start": date(2026, 1, 1),
            "ecm_benefit_end": None, "ecm_provider_npi": ECM_NPI,
            "other_program": "CCS", "other_program_start": date(2026, 1, 1),
            "other_program_end": None,
        }], source="mif")
    if providers:
        reg.load_providers([
            {"provider_npi": ECM_NPI, "provider_tin": "940000000", "ecm": True, "cs": False,
             "active_from": date(2025, 1, 1), "active_to": date(2026, 8, 31)},
            {"provider_npi": OTHER_NPI, "ecm": True, "cs": False,
             "active_from": date(2025, 1, 1)},
            {"provider_npi": CS_NPI, "ecm": False, "cs": True, "cs_services": ["MEALS"],
             "active_from": date(2025, 1, 1)},
        ], source="roster")
    if history:
        reg.load_history(history, source="history")
    return reg


def encounter(day=date(2026, 2, 10), code="G9008", modifiers=("U1",), units="1",
              npi=ECM_NPI, cin=CIN, pos="11", lines=1) -> Encounter:
    return Encounter(
        submitter=Party(name="S", id="S"), receiver=Party(name="R", id="R"),
        billing_provider=BillingProvider(
            name="CARE ORG", npi=npi, tin="940000000" if npi == ECM_NPI else "950000000",
            address=Address(line1="1 MAIN", city="SACRAMENTO", state="CA",
                            postal_code="95814")),
        member=Member(cin=cin, last_name="DOE"), payer=Party(name="P", id="P"),
        claim=Claim(id="C1", total_charge=Decimal(25), place_of_service=pos,
                    diagnosis_codes=["Z590"],
                    lines=[ServiceLine(line_number=n + 1, procedure_code=code,
                                       modifiers=list(modifiers), charge=Decimal(25),
                                       units=Decimal(units), service_date=day)
                           for n in range(lines)]))


def place(lines=1) -> ClaimPlace:
    return ClaimPlace(claim="C", member="M", lines=[f"L{n + 1}" for n in range(lines)],
                      ordinal=1, line_ordinals=[n + 2 for n in range(lines)], label="claim C1")


def rules_of(e: Encounter, reg: Registry | None = None, engine=None) -> list[str]:
    engine = engine or EncounterRules(reg if reg is not None else registry())
    return [f.rule for f in engine.check([(e, place(len(e.claim.lines)))])[0]]


def test_clean_ecm_line_passes():
    assert rules_of(encounter()) == []


@pytest.mark.parametrize("day, expected", [
    (date(2026, 1, 4), ["ECM-MEM-003"]),   # the day before the benefit starts
    (date(2026, 1, 5), []),                # first day
    (date(2026, 6, 30), []),               # last day
    (date(2026, 7, 1), ["ECM-MEM-003"]),   # the day after it ends
])
def test_authorization_covers_date_of_service(day, expected):
    assert rules_of(encounter(day=day)) == expected


def test_cin_format_and_unknown_member():
    assert rules_of(encounter(cin="9123456A")) == ["ECM-MEM-001"]
    assert rules_of(encounter(cin="99999999Z")) == ["ECM-MEM-002"]


def test_assigned_provider():
    assert rules_of(encounter(npi=OTHER_NPI)) == ["ECM-PRV-001"]
    e = encounter(npi=OTHER_NPI)
    e.rendering_provider = RenderingProvider(last_name="LCM", npi=ECM_NPI)
    assert rules_of(e) == []  # the rendering provider is the assigned one


@pytest.mark.parametrize("day, expected", [
    (date(2026, 8, 31), []),
    (date(2026, 9, 1), ["ECM-PRV-002"]),
])
def test_provider_active_in_directory(day, expected):
    reg = registry()
    reg.load_members([{"member_cin": "94444444D", "ecm_benefit_start": date(2026, 1, 1),
                       "ecm_provider_npi": ECM_NPI}], source="mif2")
    assert rules_of(encounter(day=day, cin="94444444D"), reg) == expected


def test_provider_not_contracted_for_ecm_or_cs_service():
    reg = registry()
    reg.load_members([{"member_cin": "95555555E", "ecm_benefit_start": date(2026, 1, 1),
                       "ecm_provider_npi": CS_NPI}], source="mif3")
    assert rules_of(encounter(npi=CS_NPI, cin="95555555E"), reg) == ["ECM-PRV-003"]
    assert rules_of(encounter(npi=CS_NPI, code="S5170", modifiers=("U6",))) == []
    assert rules_of(encounter(npi=CS_NPI, code="T2033", modifiers=("U6",))) == ["ECM-CS-001"]


@pytest.mark.parametrize("day, expected", [
    (date(2026, 3, 31), []),
    (date(2026, 4, 1), ["ECM-PGM-001"]),   # hospice: excluded
    (date(2026, 4, 30), ["ECM-PGM-001"]),
    (date(2026, 5, 1), ["ECM-PGM-002"]),   # MSSP 1915(c) waiver: either/or
])
def test_program_overlaps(day, expected):
    assert rules_of(encounter(day=day, cin="92222222B")) == expected


def test_wrap_program_is_info():
    engine = EncounterRules(registry())
    found = engine.check([(encounter(cin="93333333C"), place())])[0]
    assert [(f.rule, f.severity.value) for f in found] == [("ECM-PGM-003", "info")]


@pytest.mark.parametrize("code, modifiers, expected", [
    ("G9012", ("U8",), []),
    ("G9012", ("GQ", "U8"), []),                     # any position
    ("G9008", ("U6",), ["ECM-CODE-001"]),            # not an ECM combination
    ("99213", (), ["ECM-CODE-001"]),
    ("G9008", ("U1", "U8"), ["ECM-CODE-002"]),       # service and outreach at once
    ("G9008", ("U1", "XX"), ["ECM-CODE-002"]),       # unknown modifier
    ("G9008", ("U1", "95"), ["ECM-CODE-004"]),       # FFS telehealth modifier: warning
])
def test_codes_and_modifiers(code, modifiers, expected):
    assert rules_of(encounter(code=code, modifiers=modifiers)) == expected


def test_place_of_service_and_units():
    assert rules_of(encounter(pos="98")) == ["ECM-CODE-003"]
    assert rules_of(encounter(units="0")) == ["ECM-UNIT-001"]


def test_duplicate_line_within_file_names_the_first():
    engine = EncounterRules(registry())
    first = engine.check([(encounter(), place())])[0]
    second = engine.check([(encounter(), place())])[0]
    assert first == []
    assert [(f.rule, f.message) for f in second] == [(
        "ECM-DUP-001", "this line duplicates claim C1 line 1 in this file (same member, "
                       "provider, date, code, modifiers and units); the whole claim is rejected")]
    different_units = engine.check([(encounter(units="2"), place())])[0]
    assert different_units == []


def test_duplicate_against_history():
    old = {"cin": CIN, "billing_npi": ECM_NPI, "service_date": date(2026, 2, 10),
           "procedure_code": "G9008", "modifiers": "U1", "units": Decimal(1),
           "place_of_service": "11", "claim_id": "OLD7", "line_number": 3}
    found = EncounterRules(registry(history=[old])).check([(encounter(), place())])[0]
    assert [(f.rule, f.message) for f in found] == [(
        "ECM-DUP-002", "this line duplicates claim OLD7 line 3 already accepted (same member, "
                       "provider, date, code, modifiers and units); the whole claim is rejected")]


def _visit(cin, day, pos="23", code="99284"):
    return {"cin": cin, "billing_npi": "1999999992", "service_date": day,
            "procedure_code": code, "modifiers": "", "units": Decimal(1),
            "place_of_service": pos, "claim_id": f"H{day}", "line_number": 1}


def test_pof_evidence_for_high_utilizer():
    cin = "92222222B"  # HIGH_UTILIZER, authorized 2026-03-01
    four = [_visit(cin, date(2025, 10, d)) for d in (1, 5, 9, 13)]
    engine = EncounterRules(registry(history=four))
    found = engine.check([(encounter(cin=cin, day=date(2026, 3, 10)), place())])[0]
    assert [f.rule for f in found] == ["ECM-POF-001"]
    assert found[0].message == (
        "the member is assigned under HIGH_UTILIZER but encounter history from 2025-05-01 to "
        "2025-10-13 shows none of the utilization alternatives of the adult high utilizer "
        "criterion: five or more ED visits (4 found); three or more unplanned hospital and/or "
        "short-term SNF stays (0 found); other criteria may qualify the member: the plan may "
        "also authorize other very high utilizers (002:423-429)")
    five = four + [_visit(cin, date(2025, 10, 20))]
    assert rules_of(encounter(cin=cin, day=date(2026, 3, 10)), registry(history=five)) == []


def test_ed_visit_leading_to_admission_counts_once():
    cin = "92222222B"
    visits = [_visit(cin, date(2025, 11, d)) for d in (1, 5, 9, 13)]
    # an ED visit the day before an admission: one event (the stay), not two
    visits += [_visit(cin, date(2025, 12, 1)), _visit(cin, date(2025, 12, 2), pos="21",
                                                       code="99222")]
    found = EncounterRules(registry(history=visits)).check(
        [(encounter(cin=cin, day=date(2026, 3, 10)), place())])[0]
    assert [f.rule for f in found] == ["ECM-POF-001"]


def test_missing_registries_are_noted_and_their_rules_skipped():
    engine = EncounterRules(Registry())
    assert rules_of(encounter(npi=OTHER_NPI, cin="99999999Z"), engine=engine) == []
    assert [f.rule for f in engine.notes()] == ["ECM-REG-001"] * 4


def test_rule_overrides_per_partner():
    from gateway.rules import default_catalogue
    catalogue = default_catalogue().with_overrides({"ECM-CODE-004": {"severity": "error"},
                                                    "ECM-CODE-003": {"enabled": False}})
    engine = EncounterRules(registry(), catalogue=catalogue)
    found = engine.check([(encounter(pos="98", modifiers=("U1", "95")), place())])[0]
    assert [(f.rule, f.severity.value) for f in found] == [("ECM-CODE-004", "error")]


def test_unit_limit_per_day_from_the_code_set(tmp_path):
    import shutil

    from gateway.ecm.codesets import CodeSets
    from gateway.paths import PROFILES
    folder = tmp_path / "codesets"
    shutil.copytree(PROFILES / "codesets", folder)
    text = (folder / "ecm-services.csv").read_text()
    (folder / "ecm-services.csv").write_text(text.replace("G9008,U1,ECM,ECM,,", "G9008,U1,ECM,ECM,4,"))
    engine = EncounterRules(registry(), codesets=CodeSets(folder))
    assert engine.check([(encounter(units="4"), place())])[0] == []  # 4 of 4: at the limit
    found = engine.check([(encounter(units="1", day=date(2026, 2, 10)), place())])[0]
    assert [(f.rule, f.message) for f in found] == [
        ("ECM-UNIT-002", "5 units of G9008 for the member on 2026-02-10 exceed the limit of 4 a day")]
