"""Synthetic ECM encounters: realistic shapes, invented people, CIN-shaped ids, Luhn-valid NPIs.

Used by the benchmarks and to build the fixtures. Deterministic for a given seed.

    python bench/synth837.py --claims 1000 -o /tmp/ecm-1k.x12
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.model.encounter import (  # noqa: E402
    Address, BillingProvider, Claim, Encounter, Member, Party, RenderingProvider, ServiceLine,
)
from gateway.x12.write837 import Encounter837Writer  # noqa: E402
from gateway.x12.writer import ControlNumbers, envelope_settings  # noqa: E402

LAST = ["GARCIA", "NGUYEN", "SMITH", "LOPEZ", "KIM", "JOHNSON", "MARTINEZ", "TRAN", "WILSON",
        "HERNANDEZ", "PATEL", "CHEN", "DAVIS", "REYES", "MORALES", "YOUNG"]
FIRST = ["ALEX", "MARIA", "JORDAN", "LINH", "SAM", "ROSA", "DEVON", "ANA", "CHRIS", "MEI",
         "JAMIE", "LUIS", "TAYLOR", "NORA", "OMAR", "IRIS"]
STREETS = ["MAIN ST", "OAK AVE", "PINE ST", "ELM WAY", "CEDAR BLVD", "MISSION ST"]
CITIES = [("SACRAMENTO", "95814"), ("FRESNO", "93721"), ("OAKLAND", "94612"),
          ("STOCKTON", "95202"), ("MODESTO", "95354"), ("SAN JOSE", "95113")]
# ECM: G9008 / G9012 with U1, U2 or U8 (outreach); GQ marks telephonic delivery.
ECM_LINES = [("G9008", ["U1"]), ("G9012", ["U1"]), ("G9008", ["U2"]), ("G9012", ["U8"]),
             ("G9012", ["U8", "GQ"]), ("G9008", ["U1", "GQ"])]
DIAGNOSES = ["Z590", "Z5900", "F329", "F1020", "Z658", "I10", "E119", "Z9114"]


def luhn_npi(stem: int) -> str:
    """A 10-digit NPI whose last digit is the Luhn check digit over prefix 80840."""
    base = f"{stem:09d}"[:9]
    digits = [int(c) for c in "80840" + base]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return base + str((10 - total % 10) % 10)


def cin(n: int) -> str:
    return f"{90000000 + n % 9999999:08d}{'ABCDEFGHJKLMNPRSTUVWXY'[n % 22]}"


def providers(rng: random.Random, count: int) -> list[BillingProvider]:
    found = []
    for i in range(count):
        city, postal = CITIES[i % len(CITIES)]
        found.append(BillingProvider(
            name=f"{rng.choice(['COMMUNITY', 'VALLEY', 'BRIDGE', 'HOPE', 'UNITY'])} "
                 f"{rng.choice(['CARE', 'HEALTH', 'SERVICES', 'PARTNERS'])} {i + 1}",
            npi=luhn_npi(100000000 + i * 7919), tin=f"{940000000 + i * 13:09d}",
            taxonomy="251S00000X",
            address=Address(line1=f"{100 + i} {STREETS[i % len(STREETS)]}", city=city,
                            state="CA", postal_code=postal + "1234"),
        ))
    return found


def encounters(count: int, seed: int = 7, lines: tuple[int, int] = (1, 3),
               start: date = date(2026, 9, 1)):
    """``count`` ECM encounters grouped by provider and member, like a monthly file."""
    rng = random.Random(seed)
    settings = envelope_settings("plan-default")
    billing = providers(rng, max(1, count // 500 + 1))
    submitter = Party(name=settings.submitter.name, id=settings.submitter.id,
                      contact_name=settings.submitter.contact_name,
                      contact_phone=settings.submitter.contact_phone)
    receiver = Party(name=settings.receiver.name, id=settings.receiver.id)
    payer = Party(name="DEMO HEALTH PLAN", id="DEMOPLAN")
    made = 0
    member_no = 0
    while made < count:
        provider = billing[(made // 500) % len(billing)]
        member_no += 1
        city, postal = rng.choice(CITIES)
        member = Member(
            cin=cin(member_no * 7 + seed), last_name=rng.choice(LAST),
            first_name=rng.choice(FIRST),
            birth_date=date(1950, 1, 1) + timedelta(days=rng.randrange(0, 25000)),
            gender=rng.choice("FM"),
            address=Address(line1=f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
                            city=city, state="CA", postal_code=postal),
        )
        for _ in range(rng.choice((1, 1, 2, 3))):
            if made >= count:
                break
            made += 1
            day = start + timedelta(days=rng.randrange(0, 28))
            service_lines = []
            for number in range(1, rng.randint(*lines) + 1):
                code, modifiers = rng.choice(ECM_LINES)
                units = Decimal(rng.choice((1, 2, 4)))
                service_lines.append(ServiceLine(
                    line_number=number, procedure_code=code, modifiers=modifiers,
                    charge=Decimal("25.00") * units, units=units,
                    service_date=day + timedelta(days=number - 1),
                ))
            total = sum((line.charge for line in service_lines), Decimal(0))
            yield Encounter(
                submitter=submitter, receiver=receiver, billing_provider=provider,
                member=member, payer=payer,
                rendering_provider=RenderingProvider(
                    last_name=rng.choice(LAST), first_name=rng.choice(FIRST),
                    npi=luhn_npi(200000000 + made % 97 * 31), taxonomy="171M00000X"),
                claim=Claim(id=f"ECM{seed:02d}{made:08d}", total_charge=total,
                            place_of_service=rng.choice(("11", "12", "99")),
                            diagnosis_codes=rng.sample(DIAGNOSES, rng.randint(1, 2)),
                            prior_authorization=f"AUTH{member_no:07d}",
                            lines=service_lines),
            )


def write_file(path: Path, count: int, seed: int = 7) -> None:
    settings = envelope_settings("plan-default")
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = Encounter837Writer(out, settings, ControlNumbers(interchange=seed, group=seed),
                                    datetime(2026, 10, 5, 9, 30))
        for encounter in encounters(count, seed):
            writer.write(encounter)
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    write_file(args.output, args.claims, args.seed)


if __name__ == "__main__":
    main()
