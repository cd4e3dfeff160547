"""One FHIR payload through every layer: read (JSON/XML) → base structure (fhir.resources) →
ECM profile → ECM rules. Bundles go entry by entry (see :mod:`gateway.fhir.parse`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.fhir.parse import Collector, EntryResult, decode, iter_resources, normalise
from gateway.fhir.profiles import check_resource
from gateway.findings import Finding, Severity
from gateway.rules import RuleCatalogue, default_catalogue

# the resource types the gateway accepts (POST /fhir/{type}); others are structure-checked only
ACCEPTED = ("ServiceRequest", "CarePlan", "Task", "Patient", "Coverage", "Consent")


@dataclass
class Checked:
    """The outcome for one payload: ``findings`` for all of it; ``data`` the top-level JSON
    form (None when unreadable); ``entries`` the checked resources (one for a resource, one
    per Bundle entry) when kept."""

    fmt: str
    data: dict | None
    findings: list[Finding]
    entries: list[EntryResult] = field(default_factory=list)
    resources: int = 0

    @property
    def valid(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def resource_type(self) -> str | None:
        return self.data.get("resourceType") if self.data else None


def check_entry(result: EntryResult, fmt: str, catalogue: RuleCatalogue) -> EntryResult:
    """Profile and ECM rules on a resource whose structure was read (XML: on the normalised
    JSON form); findings appended to the result."""
    if result.model is None or result.data is None:
        return result
    data = normalise(result.model) if fmt == "xml" else result.data
    col = Collector(catalogue)
    check_resource(data, col, result.path)
    result.data = data
    result.findings.extend(col.findings)
    return result


def check_payload(payload: bytes, fmt: str, expected: str | None = None, keep: bool = True,
                  catalogue: RuleCatalogue | None = None,
                  on_entry: Callable[[EntryResult], None] | None = None) -> Checked:
    """Validate ``payload`` (``fmt`` json or xml). ``expected``: the resource type the caller
    wants (e.g. from the URL). ``keep=False`` drops each entry after its findings are taken
    (bounded memory for big Bundles); ``on_entry`` sees every checked entry."""
    catalogue = catalogue or default_catalogue()
    col = Collector(catalogue)
    data = decode(payload, fmt, col, expected)
    checked = Checked(fmt=fmt, data=data, findings=col.findings)
    if data is None:
        return checked
    for result in iter_resources(data, col, expected):
        before = len(result.findings)
        check_entry(result, fmt, catalogue)
        col.findings.extend(result.findings[before:])
        checked.resources += 1
        if on_entry is not None:
            on_entry(result)
        if keep:
            checked.entries.append(result)
    return checked
