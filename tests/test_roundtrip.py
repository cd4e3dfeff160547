"""837P → model → 837P is exact; model → 837P → model is the identity."""

import io
from datetime import date, datetime
from decimal import Decimal

import pytest
from conftest import CORPUS, FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model.encounter import (
    Address, BillingProvider, Claim, Encounter, Envelope, Member, Party, RenderingProvider,
    ServiceLine,
)
from gateway.x12.validate import validate_x12
from gateway.x12.write837 import write_837p
from gateway.x12.writer import ControlNumbers, envelope_settings

SETTINGS = envelope_settings("plan-default")


def parse(data: bytes) -> list[Encounter]:
    result = validate_x12(data, keep_encounters=True)
    assert all(c.problem is None for c in result.claims), [c.problem for c in result.claims]
    return [c.encounter for c in result.claims]


def write(encounters, when=datetime(2026, 10, 5, 9, 30), preserve=True) -> bytes:
    out = io.StringIO()
    write_837p(encounters, out, SETTINGS, ControlNumbers(41, 42), when,
               preserve_envelope=preserve)
    return out.getvalue().encode()


def test_fixture_round_trip_is_byte_exact():
    original = (FIXTURES / "837p" / "ecm-clean.x12").read_bytes()
    assert write(parse(original)) == original


CORPUS_837P = sorted((CORPUS / "837p-X222A1" / "pass").glob("*.edi")) if CORPUS.exists() else []


@pytest.mark.skipif(not CORPUS_837P, reason="shared corpus not present")
@pytest.mark.parametrize("path", CORPUS_837P, ids=lambda p: p.stem)
def test_corpus_models_survive_a_round_trip(path):
    first = parse(path.read_bytes())
    written = write(first)
    assert validate_x12(written, snip=False).valid  # syntax; corpus ids are placeholders
    assert parse(written) == first


# -- generated models -------------------------------------------------------------------------
TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ", min_size=1, max_size=20) \
    .map(str.strip).filter(bool)
WORD = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)
DIGITS = lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)  # noqa: E731
MONEY = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2)
UNITS = st.decimals(min_value=Decimal("1"), max_value=Decimal("999"), places=0)
DAYS = st.dates(min_value=date(2022, 1, 1), max_value=date(2026, 12, 31))
ADDRESS = st.builds(Address, line1=TEXT, line2=st.none() | TEXT, city=WORD,
                    state=st.sampled_from(["CA", "NV", "OR"]),
                    postal_code=DIGITS(5) | DIGITS(9))
RENDERING = st.builds(RenderingProvider, last_name=WORD, first_name=st.none() | WORD,
                      is_person=st.just(True), npi=DIGITS(10),
                      taxonomy=st.none() | st.just("171M00000X"))


@st.composite
def service_line(draw, number):
    start = draw(DAYS)
    ranged = draw(st.booleans())
    return ServiceLine(
        line_number=number,
        procedure_code=draw(st.sampled_from(["G9008", "G9012", "T1016", "H0043"])),
        modifiers=draw(st.lists(st.sampled_from(["U1", "U2", "U8", "GQ", "U6"]), max_size=4,
                                unique=True)),
        charge=draw(MONEY), unit_type=draw(st.sampled_from(["UN", "MJ"])), units=draw(UNITS),
        place_of_service=draw(st.none() | st.sampled_from(["11", "12"])),
        diagnosis_pointers=draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)),
        service_date=start, service_date_end=start.replace(day=min(start.day + 1, 28))
        if ranged and start.day < 28 else None,
        rendering_provider=draw(st.none() | RENDERING),
        line_control_number=draw(st.none() | DIGITS(6)),
    )


@st.composite
def encounter(draw):
    lines = [draw(service_line(n)) for n in range(1, draw(st.integers(1, 4)) + 1)]
    person_billing = draw(st.booleans())
    birth_date = draw(st.none() | DAYS)
    return Encounter(
        envelope=Envelope(),
        submitter=Party(name=draw(TEXT), id=draw(DIGITS(9)), contact_name=draw(WORD),
                        contact_phone=draw(DIGITS(10))),
        receiver=Party(name=draw(TEXT), id=draw(DIGITS(6))),
        billing_provider=BillingProvider(
            name=draw(WORD), first_name=draw(WORD) if person_billing else None,
            npi=draw(DIGITS(10)), tin=draw(DIGITS(9)),
            taxonomy=draw(st.none() | st.just("251S00000X")), address=draw(ADDRESS)),
        member=Member(cin=draw(DIGITS(8)) + draw(st.sampled_from("ABCXYZ")),
                      last_name=draw(WORD), first_name=draw(st.none() | WORD),
                      middle_name=draw(st.none() | WORD), birth_date=birth_date,
                      # DMG carries the gender only together with the birth date
                      gender=draw(st.sampled_from(["F", "M", "U"])) if birth_date else None,
                      address=draw(st.none() | ADDRESS)),
        payer=Party(name=draw(TEXT), id=draw(DIGITS(5))),
        rendering_provider=draw(st.none() | RENDERING),
        claim=Claim(
            id=draw(st.text(alphabet="ABC0123456789", min_size=1, max_size=20)),
            total_charge=sum((line.charge for line in lines), Decimal(0)),
            place_of_service=draw(st.sampled_from(["11", "12", "99"])),
            frequency_code=draw(st.sampled_from(["1", "7", "8"])),
            diagnosis_codes=draw(st.lists(st.sampled_from(["Z590", "F329", "I10", "E119"]),
                                          min_size=1, max_size=12)),
            prior_authorization=draw(st.none() | DIGITS(8)),
            payer_claim_control_number=draw(st.none() | DIGITS(12)),
            lines=lines),
    )


def _without_envelope(e: Encounter) -> Encounter:
    return e.model_copy(update={"envelope": Envelope()})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(encounter(), min_size=1, max_size=4))
def test_model_to_837p_to_model_is_identity(encounters):
    written = write(encounters, preserve=True)
    back = [_without_envelope(e) for e in parse(written)]
    assert back == encounters
