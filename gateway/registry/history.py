"""Encounter history from files: accepted 837P interchanges and line-level CSV files in the
layout ``convert --to csv`` writes (``mappings/encounter-lines.csv.yaml``). A folder holds any
mix of both; each file is one source (re-loading a file replaces its lines)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from gateway.conversion import csv_columns
from gateway.model.encounter import Encounter
from gateway.registry.store import Registry, diagnosis_key, modifier_key
from gateway.sniff import UnknownKind, sniff
from gateway.x12.validate import validate_x12


class HistoryError(ValueError):
    """A history file that cannot be read (named, with the reason)."""


def encounter_history_rows(encounter: Encounter) -> Iterator[dict]:
    for line in encounter.claim.lines:
        yield {
            "cin": encounter.member.cin, "billing_npi": encounter.billing_provider.npi,
            "rendering_npi": (line.rendering_provider or encounter.rendering_provider).npi
            if (line.rendering_provider or encounter.rendering_provider) else None,
            "service_date": line.service_date, "procedure_code": line.procedure_code,
            "modifiers": modifier_key(line.modifiers), "units": line.units,
            "place_of_service": line.place_of_service or encounter.claim.place_of_service,
            "claim_id": encounter.claim.id, "line_number": line.line_number,
            "diagnoses": diagnosis_key(encounter.claim.diagnosis_codes),
        }


def _x12_rows(path: Path) -> Iterator[dict]:
    rows: list[dict] = []

    def take(claim) -> None:
        if claim.encounter is not None:
            rows.extend(encounter_history_rows(claim.encounter))
            claim.encounter = None

    validate_x12(path, keep_encounters=True, on_claim=take)
    yield from rows


def _csv_rows(path: Path) -> Iterator[dict]:
    by_path = {c["path"]: c["header"] for c in csv_columns()}
    need = {"cin": "encounter.member.cin", "billing_npi": "encounter.billing_provider.npi",
            "service_date": "line.service_date", "procedure_code": "line.procedure_code",
            "units": "line.units", "claim_id": "encounter.claim.id",
            "line_number": "line.line_number"}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [by_path[p] for p in need.values() if by_path[p] not in (reader.fieldnames or [])]
        if missing:
            raise HistoryError(f"{path.name}: not an encounter-lines CSV; missing columns "
                               f"{', '.join(missing)}")
        modifier_headers = [by_path[f"line.modifiers[{i}]"] for i in range(4)
                            if f"line.modifiers[{i}]" in by_path]
        pos = by_path.get("line.place_of_service")
        claim_pos = by_path.get("encounter.claim.place_of_service")
        for number, row in enumerate(reader, start=2):
            try:
                yield {
                    "cin": row[by_path[need["cin"]]],
                    "billing_npi": row[by_path[need["billing_npi"]]],
                    "rendering_npi": row.get(by_path.get("line.rendering_provider.npi", ""))
                    or None,
                    "service_date": date.fromisoformat(row[by_path[need["service_date"]]]),
                    "procedure_code": row[by_path[need["procedure_code"]]],
                    "modifiers": modifier_key(row.get(h, "") for h in modifier_headers),
                    "units": Decimal(row[by_path[need["units"]]]),
                    "place_of_service": (row.get(pos) if pos else "") or
                    (row.get(claim_pos) if claim_pos else "") or None,
                    "claim_id": row[by_path[need["claim_id"]]],
                    "line_number": int(row[by_path[need["line_number"]]]),
                }
            except (ValueError, InvalidOperation, KeyError) as exc:
                raise HistoryError(f"{path.name} row {number}: {exc.__class__.__name__} "
                                   "in a date, number or required column") from exc


def load_history(registry: Registry, target: Path) -> int:
    """Load a history file or every file of a folder; returns the number of lines."""
    files = sorted(p for p in target.iterdir() if p.is_file()) if target.is_dir() else [target]
    total = 0
    for path in files:
        try:
            kind = sniff(path)
        except UnknownKind as exc:
            raise HistoryError(f"{path.name}: {exc}") from exc
        if kind == "837p":
            rows = _x12_rows(path)
        elif kind == "csv":
            rows = _csv_rows(path)
        else:
            raise HistoryError(f"{path.name}: {kind} files are not encounter history "
                               "(use 837P or encounter-lines CSV)")
        total += registry.load_history(rows, source=str(path.resolve()))
    return total
