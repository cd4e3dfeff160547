"""What kind of file is this? Decided from content, never from the file name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.x12.envelope import envelope_profile
from gateway.x12.reader import _BOM, _find_isa

HEAD = 64 * 1024
STATE_RESPONSE_NAMESPACE = "http://www.dhcs.ca.gov/EDS/DHCSResponse"


class UnknownKind(ValueError):
    """Not a file of any kind the gateway knows (exit code 2)."""


def sniff(path: Path) -> str:
    """``837p``, ``837i``, ``999``, ``277ca``, ``835``, ``x12`` (other X12), ``json``
    (canonical encounters), ``fhir``, ``state-response`` (the state's encounter response XML),
    ``csv`` or ``xlsx``; raises :class:`UnknownKind`."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD)
    except OSError as exc:
        raise UnknownKind(f"cannot read the file: {exc.strerror or exc}") from exc
    if not head.strip():
        raise UnknownKind("the file is empty")
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    if _find_isa(head) >= 0:
        return _x12_kind(head)
    if head.startswith(_UTF16_BOMS):  # a table saved as "Unicode text" (Excel's UTF-16):
        # the table reader decodes it (gateway/tabular/reader.py); a cut last character of
        # the head is replaced, not an error
        text = head[:4096 - len(head[:4096]) % 2].decode("utf-16", errors="replace").lstrip()
    elif b"\x00" in head[:4096]:
        raise UnknownKind("the file is binary and not of a known kind")
    else:
        text = head.decode("utf-8", errors="replace").lstrip()
    if text.startswith("{"):
        return _json_kind(path, text)
    if text.startswith("<") and "http://hl7.org/fhir" in text[:2000]:
        return "fhir"
    if text.startswith("<") and STATE_RESPONSE_NAMESPACE in text[:4000]:
        return "state-response"
    first_line = text.splitlines()[0] if text else ""
    if re.search(r"[,;\t]", first_line):
        return "csv"
    raise UnknownKind("not a file of any known kind (X12, canonical JSON, FHIR, CSV or XLSX)")


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _x12_kind(head: bytes) -> str:
    text = head.decode("latin-1")
    match = re.search(r"GS.(\w\w).{0,200}?(00\d{4}X\w+)", text, re.S)
    if match:
        guide = envelope_profile().guides.get(match.group(2))
        if guide:
            return guide["kind"]
        if match.group(2) == "004050X109":  # the 274 provider directory (gateway/directory)
            return "274"
    if re.search(r"ST.837", text):
        return "837p"
    return "x12"


def _json_kind(path: Path, text: str) -> str:
    if re.search(r'"resourceType"\s*:', text[:4096]):
        return "fhir"
    if re.match(r'\{\s*"encounters"\s*:', text):
        return "json"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnknownKind("the file looks like JSON but does not parse") from exc
    if isinstance(data, dict) and "encounters" in data:
        return "json"
    raise UnknownKind("a JSON file that is neither FHIR nor canonical encounters")
