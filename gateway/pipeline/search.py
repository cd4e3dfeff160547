"""What an operator can find a submission by, besides its id and file name: the control numbers
of an X12 interchange (ISA13, every GS06) and the claim ids it carries (CLM01), or the invoice
numbers of an invoice file (the column the invoice layouts in mappings/invoice/layouts/ call
``invoice_number``). Read from the raw payload when it is received, so they are searchable at
once, and kept by the store (``submission_keys``) in the same transaction as the submission.

Bounded: at most :data:`MAX_KEYS` keys per submission (a 5,000-claim file is still fully
indexed; a 100 MB one is indexed up to that many), and reading stops at the first thing that is
not what it claims to be — search keys never make a submission fail.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache

import yaml

from gateway.paths import MAPPINGS
from gateway.tabular.layouts import normalise_header

MAX_KEYS = 20_000
MAX_VALUE = 80


def keys_of(kind: str, filename: str | None, payload: bytes) -> list[tuple[str, str]]:
    """``(field, value)`` pairs: ``isa13``, ``gs06``, ``claim``."""
    try:
        if kind == "x12" or payload.lstrip()[:3] == b"ISA":
            return _x12_keys(payload)
        if (filename or "").lower().endswith((".csv", ".txt")):
            return _invoice_keys(payload)
    except Exception:  # noqa: BLE001 - keys are a convenience; the pipeline reports problems
        return []
    return []


def _x12_keys(payload: bytes) -> list[tuple[str, str]]:
    from gateway.x12.reader import iter_segments

    keys: list[tuple[str, str]] = []
    for segment in iter_segments(payload):
        tag = segment.id.strip()
        if tag == "ISA":
            value = segment.get(13).strip()
            field = "isa13"
        elif tag == "GS":
            value, field = segment.get(6).strip(), "gs06"
        elif tag == "CLM":
            value, field = segment.get(1).strip(), "claim"
        else:
            continue
        if value:
            keys.append((field, value[:MAX_VALUE]))
            if len(keys) >= MAX_KEYS:
                break
    return list(dict.fromkeys(keys))


@lru_cache(maxsize=1)
def _invoice_number_headers() -> frozenset[str]:
    headers: set[str] = set()
    for path in sorted((MAPPINGS / "invoice" / "layouts").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for column in data.get("columns") or []:
            if isinstance(column, dict) and column.get("field") == "invoice_number":
                names = column.get("header")
                for name in names if isinstance(names, list) else [names]:
                    headers.add(normalise_header(name))
    return frozenset(headers)


def _invoice_keys(payload: bytes) -> list[tuple[str, str]]:
    text = payload.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    wanted = _invoice_number_headers()
    header = next(reader, None) or []
    columns = [i for i, name in enumerate(header) if normalise_header(name) in wanted]
    if not columns:
        return []
    keys: dict[tuple[str, str], None] = {}
    for row in reader:
        for i in columns:
            if i < len(row) and row[i].strip():
                keys[("claim", row[i].strip()[:MAX_VALUE])] = None
        if len(keys) >= MAX_KEYS:
            break
    return list(keys)
