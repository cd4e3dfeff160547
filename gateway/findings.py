"""The findings model every validator in the project reports with.

A finding is one problem (or remark) about one place in one input: a stable rule id, a
severity, an exact location, a plain-English message and the source of the rule. Messages are
built from the rule catalogue in ``profiles/rules/`` (see :mod:`gateway.rules`), never from
free text scattered through the code.
"""

from __future__ import annotations

import re
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
    # minimum necessary: when a finding about a member is told to a submitter the member is not
    # assigned to, ``rule``/``message`` are the submitter's form (the rule pack's
    # ``to_submitter``) and these keep the plan's full reason (stored; never in the public
    # JSON, the 277CA or a row report)
    plan_rule: str | None = Field(default=None, repr=False)
    plan_message: str | None = Field(default=None, repr=False)

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

    def for_plan(self) -> dict:
        """:meth:`as_dict` with the plan's full reason (what the member's plan may see)."""
        data = self.as_dict()
        if self.plan_rule:
            data.update(rule=self.plan_rule, message=self.plan_message or self.message)
        return data


# an absolute path under a server folder (not a URL path such as /fhir/CarePlan/1)
_SERVER_PATH = re.compile(r"(?<![\w.#])/(?:tmp|var|home|usr|work|root|opt|srv|etc|mnt|data|"
                          r"private|run|proc|dev|Users)(?:/[\w.\-]+)*/(?=[\w.\-])")


def without_paths(text: str) -> str:
    """``text`` with every absolute path reduced to its base name: a message never shows a
    server folder (a temporary upload folder, the store's location)."""
    return _SERVER_PATH.sub("", text)


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
