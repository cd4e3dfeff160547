"""Conversions between formats, all through the canonical encounter model:
837P → canonical JSON, 837P → flat line-level CSV (columns in ``mappings/``), canonical JSON →
837P. Streams: one encounter in memory at a time on the 837P side."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TextIO

import yaml
from pydantic import ValidationError

from gateway.findings import Finding
from gateway.model.encounter import Encounter
from gateway.paths import MAPPINGS
from gateway.tabular.cells import neutral_row
from gateway.x12.claims837 import ClaimRecord
from gateway.x12.acks import judge
from gateway.x12.claims837 import ClaimCollector
from gateway.x12.reader import X12Reader
from gateway.x12.validate import X12Result, validate_x12
from gateway.x12.write837 import Encounter837Writer, WriteStats
from gateway.x12.writer import ControlNumbers, EnvelopeSettings

TARGETS_BY_KIND = {"837p": ("json", "csv", "837p"), "json": ("837p",), "invoice": ("837p",)}


class ConversionError(ValueError):
    """The input cannot be converted (with a message fit for the user)."""


@dataclass
class Converted:
    findings: list[Finding]
    encounters: int
    skipped: int  # claims that could not become encounters


@lru_cache(maxsize=4)
def csv_columns(name: str = "encounter-lines.csv.yaml") -> list[dict]:
    return yaml.safe_load((MAPPINGS / name).read_text(encoding="utf-8"))["columns"]


def _lookup(root: dict, path: str):
    value = root
    for part in path.split("."):
        name, _, index = part.partition("[")
        value = value.get(name) if isinstance(value, dict) else None
        if index:
            position = int(index.rstrip("]"))
            value = value[position] if isinstance(value, list) and position < len(value) \
                else None
        if value is None:
            return ""
    return value


def encounter_rows(encounter: Encounter, columns: list[dict]) -> Iterator[list[str]]:
    data = encounter.model_dump(mode="json")
    for line in data["claim"]["lines"]:
        root = {"encounter": data, "line": line}
        yield [str(_lookup(root, column["path"])) for column in columns]


def x12_to_file(source: Path, target: str, out: TextIO) -> Converted:
    """837P → canonical JSON (``{"encounters": [...]}``) or line-level CSV."""
    count = skipped = 0
    columns = csv_columns()
    writer = csv.writer(out, lineterminator="\n") if target == "csv" else None
    if writer is not None:
        writer.writerow(neutral_row(c["header"] for c in columns))
    else:
        out.write('{"encounters": [')

    def take(claim: ClaimRecord) -> None:
        nonlocal count, skipped
        if claim.encounter is None:
            skipped += 1
            return
        if writer is not None:
            writer.writerows(neutral_row(r) for r in encounter_rows(claim.encounter, columns))
        else:
            out.write(("\n  " if count == 0 else ",\n  ") + claim.encounter.model_dump_json())
        count += 1

    result: X12Result = validate_x12(source, keep_encounters=True, on_claim=take)
    if writer is None:
        out.write("\n]}\n")
    return Converted(findings=result.findings, encounters=count, skipped=skipped)


def read_canonical(source: Path) -> list[Encounter]:
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        return [Encounter.model_validate(item) for item in data["encounters"]]
    except (ValueError, KeyError, TypeError) as exc:
        where = ""
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = " at " + ".".join(str(p) for p in first["loc"]) + f" ({first['msg']})"
        raise ConversionError(f"not valid canonical encounter JSON{where}") from exc


def canonical_to_837p(encounters: list[Encounter], out: TextIO, settings: EnvelopeSettings,
                      controls: ControlNumbers, when: datetime) -> WriteStats:
    if not encounters:
        raise ConversionError("the file holds no encounters")
    writer = Encounter837Writer(out, settings, controls, when)
    for encounter in encounters:
        writer.write(encounter)
    return writer.close()


@dataclass
class Split:
    result: X12Result
    accepted: int
    rejected: int
    written: WriteStats | None


def split_837p(source: Path, out: TextIO, settings: EnvelopeSettings, controls: ControlNumbers,
               when: datetime, rules=None) -> Split:
    """Validate an 837P (X12, guide and, with ``rules``, ECM rules) and write its accepted
    claims as a clean 837P for the next partner. Two passes keep memory flat: the first
    validates, the second only re-reads the claims that passed."""
    result = validate_x12(source, rules=rules)
    verdict = judge(result)
    accepted = {(c.transaction, c.index) for c in verdict.accepted_claims}
    writer = Encounter837Writer(out, settings, controls, when)
    wrote = False

    def take(claim: ClaimRecord) -> None:
        nonlocal wrote
        if (claim.transaction, claim.index) in accepted and claim.encounter is not None:
            writer.write(claim.encounter)
            wrote = True

    if accepted:
        with X12Reader(source) as reader:
            collector = ClaimCollector(reader.delimiters, take)
            for seg in reader:
                collector.feed(seg)
            collector.finish()
    stats = writer.close() if wrote else None
    return Split(result=result, accepted=len(accepted),
                 rejected=len(result.claims) - len(accepted), written=stats)
