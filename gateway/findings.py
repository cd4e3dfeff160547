"""The findings model every validator in the project reports with.

A finding is one problem (or remark) about one place in one input: a stable rule id, a
severity, an exact location, a plain-English message and the source of the rule. Messages are
built from the rule catalogue in ``profiles/rules/`` (see :mod:`gateway.rules`), never from
free text scattered through the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Finding(BaseModel):
    """One validation result. ``location`` is a path (X12: ``ISA#1/GS#1/ST#2/2300[3]/CLM02``;
    CSV: ``row 12, column CIN``; FHIR: a FHIRPath); ``segment`` is the 1-based ordinal of the
    X12 segment in the interchange file, when there is one."""

    model_config = ConfigDict(frozen=True)

    rule: str
    severity: Severity
    location: str
    message: str
    source: str
    segment: int | None = None
    # X12 acknowledgment details (segment id, position in the transaction set, loop id, element
    # position, data element number); not part of the public JSON.
    context: dict | None = Field(default=None, exclude=True, repr=False)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def as_dict(self) -> dict:
        data = {
            "rule": self.rule,
            "severity": self.severity.value,
            "location": self.location,
            "message": self.message,
            "source": self.source,
        }
        if self.segment is not None:
            data["segment"] = self.segment
        return data


def has_errors(findings) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


@dataclass
class FileReport:
    """The findings (and counts) of one checked file, whatever its kind."""

    path: str
    kind: str
    findings: list[Finding]
    stats: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def as_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "valid": self.valid,
                "findings": [f.as_dict() for f in self.findings], "stats": self.stats}
