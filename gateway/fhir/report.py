"""``ecm-gateway validate FILE --kind fhir``: a FHIR resource or Bundle file (JSON or XML)
checked through every layer, as a :class:`~gateway.reports.FileReport` whose findings are
located by FHIRPath."""

from __future__ import annotations

from pathlib import Path

from gateway.fhir.parse import MAX_BODY_BYTES, Collector, format_of
from gateway.fhir.validate import check_payload
from gateway.findings import FileReport


def looks_like_fhir(head: bytes) -> bool:
    """For sniffing: the first bytes of a file are a FHIR JSON resource (a ``resourceType``
    member) or a FHIR XML element (the FHIR namespace)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return b'"resourceType"' in text[:4096]
    if text.startswith(b"<"):
        return b"http://hl7.org/fhir" in text[:4096]
    return False


def validate_fhir_file(path: Path) -> FileReport:
    """Validate one file; a file too large or in no FHIR format gets a finding (not an
    exception). Stats: resources checked, Bundle entries with errors."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BODY_BYTES:
        col = Collector()
        col.add("FHIR-PARSE-007", "Resource", size=size, limit=MAX_BODY_BYTES)
        return FileReport(path=str(path), kind="fhir", findings=col.findings,
                          stats={"resources": 0})
    payload = path.read_bytes()
    fmt = format_of(None, payload) or ("xml" if path.suffix.lower() == ".xml" else "json")
    errors_in = set()

    def note(entry) -> None:
        if any(f.is_error for f in entry.findings):
            errors_in.add(entry.index)

    checked = check_payload(payload, fmt, keep=False, on_entry=note)
    stats = {"format": fmt, "resource_type": checked.resource_type,
             "resources": checked.resources,
             "invalid_resources": len(errors_in)}
    return FileReport(path=str(path), kind="fhir", findings=checked.findings, stats=stats)
