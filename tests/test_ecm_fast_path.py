"""The ECM rules' fast path gives exactly the findings of the model path and of the reference
engine (the rules as they were before the fast path, tests/ecm_reference_rules.py).

Three runs of ``validate_x12`` over the same file and registries:

* fast: ``rules=EncounterRules`` alone - the 837P reader builds light claim views
  (``keep_encounters="rules"``), registries read once per batch, memoised outcomes;
* model: the same engine with ``keep_encounters=True`` - pydantic encounters, viewed;
* reference: the reference engine over the pydantic encounters.

Every finding (rule, severity, location, message, segment, and the plan's reason kept from a
submitter) must be equal, in order - over the project's 837P fixtures with the ECM policy
fixtures as registries, and over a generated file whose claims and registries are drawn to make
every rule fire and not fire (unknown codes, extra modifiers, bad places of service, zero units,
reversed date ranges, duplicates in the file and in the history, CS lines with and without an
authorization, members with none, one, expired and overlapping assignments, other programs,
children under adult POFs, utilization history, presumptive providers), for a plan and for a
submitter audience.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ecm_reference_rules import EncounterRules as ReferenceRules
from gateway.ecm.rules import EncounterRules, Presumptive
from gateway.model.encounter import (
    Address, BillingProvider, Claim, Encounter, Member, Party, RenderingProvider, ServiceLine,
)
from gateway.registry.load import load_registries
from gateway.registry.store import Registry, modifier_key
from gateway.x12.validate import validate_x12

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def shown(findings) -> list[tuple]:
    return [(f.rule, f.severity.value, f.location, f.message, f.segment, f.plan_rule,
             f.plan_message) for f in findings]


def three_ways(path: Path, registry: Registry, **options) -> tuple[list, list, list]:
    """(fast, model, reference) findings of ``validate_x12`` over ``path``."""
    seen: list = []

    def spy(engine):
        check = engine.check

        def recording(batch):
            seen.extend(type(e) for e, _ in batch)
            return check(batch)
        engine.check = recording
        return engine

    fast = validate_x12(str(path), rules=spy(EncounterRules(registry, **options)))
    assert seen and all(kind is tuple for kind in seen), "the fast path reads views (tuples)"
    seen.clear()
    model = validate_x12(str(path), rules=spy(EncounterRules(registry, **options)),
                         keep_encounters=True)
    assert seen and all(kind is Encounter for kind in seen), "the model path reads models"
    reference = validate_x12(str(path), rules=ReferenceRules(registry, **options),
                             keep_encounters=True)
    return shown(fast.findings), shown(model.findings), shown(reference.findings)


# -- the project's fixtures ----------------------------------------------------------------------
def fixture_registry(kind: str) -> Registry:
    registry = Registry()
    policy = FIXTURES / "ecm-policy"
    if kind == "policy":
        load_registries(registry, members=[policy / "mif.csv"],
                        providers=[FIXTURES / "roster" / "providers.csv"],
                        history=[policy / "claims-history.csv", FIXTURES / "history"],
                        cs_authorizations=[policy / "cs-authorizations.csv"])
    else:
        load_registries(registry, members=[FIXTURES / "mif" / "mif-clean.csv"],
                        providers=[FIXTURES / "roster" / "providers.csv"],
                        history=[FIXTURES / "history"])
    assert registry.loaded()["members"] and registry.loaded()["history"]
    return registry


@pytest.fixture(scope="module")
def registries() -> dict[str, Registry]:
    return {kind: fixture_registry(kind) for kind in ("mif", "policy")}


@pytest.mark.parametrize("name", ["ecm-clean", "ecm-mixed", "ecm-claim-defects",
                                  "ecm-envelope-defects"])
@pytest.mark.parametrize("audience", ["plan", "submitter"])
@pytest.mark.parametrize("kind", ["mif", "policy"])
def test_fixtures_same_findings(registries, kind, name, audience):
    fast, model, reference = three_ways(FIXTURES / "837p" / f"{name}.x12", registries[kind],
                                        audience=audience)
    assert fast == model == reference
    if (kind, name) == ("mif", "ecm-mixed"):
        assert len({f[0] for f in fast if f[0].startswith("ECM-")}) >= 6


# -- a generated file ------------------------------------------------------------------------------
NPIS = ["1000000004", "1000000012", "1000000020", "1000000038", "1000000046"]
RENDERING = ["1000000053", NPIS[0], NPIS[3], None]
CODES = [("G9008", ["U1"]), ("G9012", ["U2"]), ("G9008", ["U8"]), ("G9012", ["U8", "GQ"]),
         ("G9008", ["U1", "95"]), ("G9008", ["U1", "U8"]), ("G9008", ["GQ", "U1"]),
         ("H0043", ["U6"]), ("S5170", ["U6"]), ("H0044", ["U2"]), ("T1016", ["U8"]),
         ("99213", []), ("G9008", ["U1", "ZZ"]), ("G9008", [])]
PLACES = ["11", "12", "99", "23", "88", "02"]
CS_SERVICES = ["HOUSING_NAVIGATION", "MEALS", "HOUSING_DEPOSITS"]
POFS = ["HOMELESS", "HIGH_UTILIZER", "SMI_SUD", "CY_HOMELESS", "CY_CHILD_WELFARE",
        "CY_HIGH_UTILIZER", "LTC_RISK"]
PROGRAMS = ["HOSPICE", "MSSP", "CBAS", "COUNTY_TCM", "D_SNP", "HHP", "CCS"]
START = date(2026, 3, 1)


def cin_of(n: int) -> str:
    return f"{90000000 + n:08d}{'ABCDEFGHJK'[n % 10]}"


def generated_encounters(rng: random.Random, members: int) -> list[Encounter]:
    address = Address(line1="1 MAIN", city="SACRAMENTO", state="CA", postal_code="95814")
    out = []
    claim_no = 0
    for m in range(members):
        cin = cin_of(m) if rng.random() > 0.03 else f"9{m:07d}"  # a few malformed CINs
        npi = rng.choice(NPIS)
        for _ in range(rng.choice((1, 1, 2, 3))):
            claim_no += 1
            day = START + timedelta(days=rng.randrange(0, 60))
            lines = []
            for number in range(1, rng.randint(1, 4) + 1):
                code, modifiers = rng.choice(CODES)
                units = rng.choice(("1", "2", "4", "0", "1.50", "2.0"))
                line_day = day + timedelta(days=rng.choice((0, 0, 1)))
                end = None
                if rng.random() < 0.1:
                    end = line_day + timedelta(days=rng.choice((-2, 0, 3)))
                rendering = rng.choice(RENDERING) if rng.random() < 0.2 else None
                lines.append(ServiceLine(
                    line_number=number, procedure_code=code, modifiers=list(modifiers),
                    charge=Decimal("10.00"), units=Decimal(units),
                    place_of_service=rng.choice(PLACES) if rng.random() < 0.2 else None,
                    service_date=line_day, service_date_end=end,
                    rendering_provider=RenderingProvider(last_name="R", npi=rendering)
                    if rendering else None))
            if rng.random() < 0.08 and out:  # a copy of an earlier claim's lines
                lines = [line.model_copy(update={"line_number": i + 1})
                         for i, line in enumerate(out[-1].claim.lines)]
                cin, npi = out[-1].member.cin, out[-1].billing_provider.npi
            claim_rendering = rng.choice(RENDERING)
            out.append(Encounter(
                submitter=Party(name="S", id="S"), receiver=Party(name="R", id="R"),
                billing_provider=BillingProvider(name="CARE ORG", npi=npi,
                                                 tin=f"94000000{NPIS.index(npi)}",
                                                 address=address),
                member=Member(cin=cin, last_name="DOE"),
                payer=Party(name="P", id=rng.choice(("PLAN_A", "PLAN_B"))),
                rendering_provider=RenderingProvider(last_name="R", npi=claim_rendering)
                if claim_rendering else None,
                claim=Claim(id=f"C{claim_no:05d}", total_charge=Decimal("10.00") * len(lines),
                            place_of_service=rng.choice(PLACES[:4]),
                            diagnosis_codes=["Z590"], lines=lines)))
    return out


def generated_registry(rng: random.Random, encounters: list[Encounter]) -> Registry:
    registry = Registry()
    cins = sorted({e.member.cin for e in encounters})
    members, cs, history = [], [], []
    for cin in cins:
        if rng.random() < 0.15:
            continue  # not in the MIF
        birth = date(2026, 4, 1) - timedelta(days=rng.randrange(2 * 365, 70 * 365))
        for _ in range(rng.choice((1, 1, 1, 2))):  # some members assigned twice (overlaps)
            start = START + timedelta(days=rng.randrange(-200, 40))
            end = None if rng.random() < 0.6 else start + timedelta(days=rng.randrange(10, 90))
            row = {"member_cin": cin, "member_birth_date": birth,
                   "pof_codes": rng.sample(POFS, rng.choice((1, 1, 2))),
                   "authorization_date": start - timedelta(days=rng.randrange(0, 20))
                   if rng.random() < 0.9 else None,
                   "assignment_date": start, "ecm_benefit_start": start,
                   "ecm_benefit_end": end, "ecm_provider_npi": rng.choice(NPIS + [""]),
                   "ecm_provider_tin": rng.choice(["", "940000000", "940000003"])}
            if rng.random() < 0.25:
                p_start = START + timedelta(days=rng.randrange(-100, 50))
                row.update(other_program=rng.choice(PROGRAMS), other_program_start=p_start,
                           other_program_end=None if rng.random() < 0.5
                           else p_start + timedelta(days=rng.randrange(5, 60)),
                           member_county=rng.choice(["", "LOS ANGELES", "SACRAMENTO"]))
            members.append(row)
        if rng.random() < 0.4:
            cs.append({"member_cin": cin, "cs_service": rng.choice(CS_SERVICES),
                       "cs_provider_npi": rng.choice(NPIS + [None, None]),
                       "cs_authorization_start": START + timedelta(days=rng.randrange(-30, 30)),
                       "cs_authorization_end": None if rng.random() < 0.5
                       else START + timedelta(days=rng.randrange(30, 90))})
        for _ in range(rng.randrange(0, 12)):  # utilization history (some SMI/SUD)
            day = START - timedelta(days=rng.randrange(1, 40 if rng.random() < 0.7 else 330))
            code, pos = rng.choice([("99283", "23"), ("99222", "21"), ("99305", "31"),
                                    ("99213", "11"), ("99284", "23"), ("99221", "21")])
            history.append({"cin": cin, "billing_npi": "1999999995", "service_date": day,
                            "procedure_code": code, "modifiers": "", "units": Decimal(1),
                            "place_of_service": pos,
                            "claim_id": f"H{rng.randrange(10 ** 6)}",
                            "line_number": 1, "diagnoses": rng.choice(["F209", "I10", "F1020;I10",
                                                                       ""])})
    for e in encounters:  # some lines already in the history (ECM-DUP-002)
        for line in e.claim.lines:
            if rng.random() < 0.05:
                history.append({"cin": e.member.cin, "billing_npi": e.billing_provider.npi,
                                "service_date": line.service_date,
                                "procedure_code": line.procedure_code,
                                "modifiers": modifier_key(line.modifiers), "units": line.units,
                                "place_of_service": "11", "claim_id": f"OLD{e.claim.id}",
                                "line_number": line.line_number, "diagnoses": ""})
    registry.load_members(members, source="mif")
    registry.load_cs_authorizations(cs, source="cs")
    registry.load_history(history, source="history")
    registry.load_providers([
        {"provider_npi": NPIS[0], "provider_tin": "940000000", "ecm": True, "cs": False,
         "active_from": date(2025, 1, 1), "active_to": date(2026, 4, 15)},
        {"provider_npi": NPIS[1], "ecm": True, "cs": True, "cs_services": ["MEALS"],
         "active_from": date(2025, 1, 1)},
        {"provider_npi": NPIS[2], "ecm": False, "cs": True,
         "cs_services": ["HOUSING_NAVIGATION", "MEALS"], "active_from": date(2026, 3, 10)},
        {"provider_npi": NPIS[3], "ecm": True, "cs": False, "active_from": date(2025, 1, 1)},
        {"provider_npi": NPIS[3], "ecm": False, "cs": True, "cs_services": ["MEALS"],
         "active_from": date(2026, 4, 1)},
    ], source="roster")
    return registry


def write_generated(folder: Path, seed: int) -> tuple[Path, Registry]:
    """The generated 837P file (``folder``/generated.x12: 700 members' claims from
    :func:`generated_encounters`, more than one batch) and its registry, from ``seed`` (shared
    with tests/test_ecm_pipelined.py)."""
    from gateway.x12.write837 import Encounter837Writer
    from gateway.x12.writer import ControlNumbers, envelope_settings

    rng = random.Random(seed)
    encounters = generated_encounters(rng, 700)
    path = folder / "generated.x12"
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = Encounter837Writer(out, envelope_settings("plan-default"),
                                    ControlNumbers(interchange=14, group=14),
                                    datetime(2026, 6, 1, 9, 0))
        for encounter in encounters:
            writer.write(encounter)
        writer.close()
    return path, generated_registry(rng, encounters)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path, registry = write_generated(tmp_path_factory.mktemp("fast-path"), 14)
    with open(path, encoding="utf-8") as text:  # more than one batch of 1000 claims
        assert text.read().count("CLM*") > 1000
    return path, registry


@pytest.mark.parametrize("options", [
    {},
    {"audience": "submitter"},
    {"audience": "submitter", "submitter": ((NPIS[0], NPIS[3]), ("940000003",))},
    {"presumptive": Presumptive(frozenset({NPIS[1], NPIS[4]}), 20)},
], ids=["plan", "submitter", "named-submitter", "presumptive"])
def test_generated_file_same_findings(generated, options):
    path, registry = generated
    fast, model, reference = three_ways(path, registry, **options)
    assert fast == model == reference
    fired = {rule for rule, *_ in fast}
    # the file makes the rules fire (and not fire: most claims have no finding of each)
    for rule in ("ECM-MEM-001", "ECM-MEM-003", "ECM-PRV-001", "ECM-PRV-002", "ECM-PRV-003",
                 "ECM-CODE-001", "ECM-CODE-002", "ECM-CODE-003", "ECM-CODE-004",
                 "ECM-UNIT-001", "ECM-DUP-001", "ECM-DUP-002", "ECM-DATE-001", "ECM-CS-001",
                 "ECM-CS-002", "ECM-AGE-001", "ECM-POF-001"):
        assert rule in fired or options.get("audience") == "submitter", rule
    if "presumptive" in options:
        assert {"ECM-MEM-004", "ECM-MEM-005"} & fired
    else:
        assert "ECM-MEM-002" in fired or options.get("audience") == "submitter"


# -- POF evidence ----------------------------------------------------------------------------------
def test_pof_shortfalls_match_the_reference():
    """The compiled POF evidence (events as small lists) finds what the reference finds, over
    dense random histories: stays on contiguous days and across claims, ED visits on, before and
    during admissions, SMI/SUD diagnoses on either, both lookback anchors."""
    import ecm_reference_rules as reference

    from gateway.ecm.codesets import load_codesets
    from gateway.ecm.pof import pof_shortfalls
    from gateway.registry.store import Assignment, HistoryLine

    codes = load_codesets()
    index = (codes.event_by_place, codes.event_by_code)
    rng = random.Random(1414)
    kinds = [("99283", "23"), ("99222", "21"), ("99305", "31"), ("99213", "11"),
             ("99284", "11"), ("99221", "11"), ("G9008", "23")]
    differing = compared = 0
    for anchor in ("latest_claims_month", "authorization_date"):
        spec = {**codes.utilization, "lookback_anchor": anchor}
        for _ in range(1500):
            auth = date(2026, 3, 1) + timedelta(days=rng.randrange(0, 60))
            assignments = [Assignment("91234567A", auth, None, "1", "", tuple(
                rng.sample(["HIGH_UTILIZER", "SMI_SUD", "HOMELESS", "CY_HIGH_UTILIZER"],
                           rng.choice((1, 2)))), rng.choice((auth, None)))
                for _ in range(rng.choice((1, 1, 2)))]
            history = []
            for n in range(rng.randrange(0, 14)):
                code, pos = rng.choice(kinds)
                history.append(HistoryLine(
                    "91234567A", "1", auth - timedelta(days=rng.randrange(0, 200)), code, "",
                    "1", pos, rng.choice((f"H{n}", "H1", "", None)), 1,
                    rng.choice(("F209", "I10", "F1020;I10", "", "T401"))))
            latest = rng.choice((None, auth - timedelta(days=rng.randrange(0, 90))))
            found = pof_shortfalls(assignments, history, spec, index, latest=latest)
            expected = reference.pof_shortfalls(assignments, history, spec, index,
                                                latest=latest)
            compared += 1
            differing += found != expected
            assert found == expected
    assert compared == 3000 and not differing


def test_without_paths_prefilter_changes_nothing():
    """``without_paths`` skips its substitution when no server folder can match: the same text
    as the substitution alone, over random texts built from path-like pieces."""
    from gateway.findings import _SERVER_PATH, without_paths

    rng = random.Random(77)
    pieces = ["/", "tmp", "var", "work", "x", ".", "#", "-", " ", "and/or", "/tmp/", "/data",
              "Users/", "a.b", "/fhir/CarePlan/1", "usr", "\u00e9", "/root/y/z.csv", "1"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        assert without_paths(text) == _SERVER_PATH.sub("", text), text


def test_ages_from_day_numbers_agree_with_age_on():
    """The fast path's age check takes a member's age from two day numbers (yyyymmdd):
    ``age_on``'s age on every day around each birthday, 29 February birthdays and days before
    the birth included."""
    from gateway.ecm.codesets import age_on
    from gateway.ecm.rules import _day_number

    rng = random.Random(2929)
    births = [date(2004, 2, 29), date(2000, 2, 29), date(2005, 3, 1), date(2005, 2, 28),
              date(1999, 12, 31), date(2006, 1, 1)]
    births += [date(1950, 1, 1) + timedelta(days=rng.randrange(0, 27000)) for _ in range(300)]
    for birth in births:
        for years in (-1, 0, 1, 18, 21, 26, 65):
            around = date(min(birth.year + years, 9998), birth.month, 1)
            for offset in (-400, -32, -2, -1, 0, 1, 2, 27, 28, 29, 30, 31, 60, 365, 366):
                day = around + timedelta(days=offset)
                assert (_day_number(day) - _day_number(birth)) // 10000 == age_on(birth, day), \
                    (birth, day)
