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



class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


_FIELDS = ("rule", "severity", "location", "message", "source", "segment", "context",
           "plan_rule", "plan_message")


class Finding:
    """One validation result. ``location`` is a path (X12: ``ISA#1/GS#1/ST#2/2300[3]/CLM02``;
    CSV: ``row 12, column CIN``; FHIR: a FHIRPath); ``segment`` is the 1-based ordinal of the
    X12 segment in the interchange file, when there is one.

    Immutable (hashable, compared field by field). A plain slotted class, not a pydantic model:
    a validator creates thousands of them and the command line's start-up does not pay for
    pydantic unless a model needs it (``ecm-gateway validate`` on a non-837 file never
    imports it). Unknown keyword arguments are ignored, so ``Finding(**d)`` takes a stored
    row (:meth:`gateway.pipeline.store.Store.findings`) as it comes."""

    __slots__ = _FIELDS

    rule: str
    severity: Severity
    location: str
    message: str
    source: str
    segment: int | None
    # X12 acknowledgment details (segment id, position in the transaction set, loop id, element
    # position, data element number); not part of the public JSON.
    context: dict | None
    # minimum necessary: when a finding about a member is told to a submitter the member is not
    # assigned to, ``rule``/``message`` are the submitter's form (the rule pack's
    # ``to_submitter``) and these keep the plan's full reason (stored; never in the public
    # JSON, the 277CA or a row report)
    plan_rule: str | None
    plan_message: str | None

    def __init__(self, *, rule: str, severity: Severity | str, location: str, message: str,
                 source: str, segment: int | None = None, context: dict | None = None,
                 plan_rule: str | None = None, plan_message: str | None = None,
                 **_ignored: object) -> None:
        put = object.__setattr__
        put(self, "rule", rule)
        put(self, "severity", severity if severity.__class__ is Severity else Severity(severity))
        put(self, "location", location)
        put(self, "message", message)
        put(self, "source", source)
        put(self, "segment", None if segment is None else int(segment))
        put(self, "context", context)
        put(self, "plan_rule", plan_rule)
        put(self, "plan_message", plan_message)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Finding is immutable (tried to set {name!r})")

    __delattr__ = __setattr__

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Finding:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:  # the public fields (``context`` may hold lists)
        return hash(self._values()[:6])

    def __repr__(self) -> str:
        return (f"Finding(rule={self.rule!r}, severity={self.severity!r}, "
                f"location={self.location!r}, message={self.message!r}, "
                f"source={self.source!r}, segment={self.segment!r})")

    def __reduce__(self):  # pickled between the processes of ``validate --jobs N``
        return _rebuild, self._values()

    def model_copy(self, update: dict | None = None) -> "Finding":
        """A copy with some fields changed (the name pydantic gives it)."""
        values = dict(zip(_FIELDS, self._values()))
        if update:
            values.update(update)
        return Finding(**values)

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


def _rebuild(*values) -> Finding:
    return Finding(**dict(zip(_FIELDS, values)))


# an absolute path under a server folder (not a URL path such as /fhir/CarePlan/1)
_SERVER_PATH = re.compile(r"(?<![\w.#])/(?:tmp|var|home|usr|work|root|opt|srv|etc|mnt|data|"
                          r"private|run|proc|dev|Users)(?:/[\w.\-]+)*/(?=[\w.\-])")


# what every match of _SERVER_PATH starts with ("/tmp/", ...): a search that finds none is
# several times quicker than the substitution (the lookbehind defeats the literal prefix scan)
_SERVER_PATH_START = re.compile(r"/(?:tmp|var|home|usr|work|root|opt|srv|etc|mnt|data|"
                                r"private|run|proc|dev|Users)/")


def without_paths(text: str) -> str:
    """``text`` with every absolute path reduced to its base name: a message never shows a
    server folder (a temporary upload folder, the store's location)."""
    if "/" not in text or _SERVER_PATH_START.search(text) is None:
        return text
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
