"""Findings -> an R4 OperationOutcome.

Each finding becomes one issue: ``severity`` from the finding (``fatal`` when its rule says
``fhir_severity: fatal``), ``code`` from the rule's ``fhir_issue`` (the FHIR IssueType value
set, profiles/rules/fhir.yaml), ``details`` with the rule id as a coding of the gateway's rule
code system and the message as text, ``diagnostics`` with the rule's source, ``expression``
with the FHIRPath location. Findings hold no member data beyond the location, so neither does
the OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.fhir import RULE_SYSTEM
from gateway.findings import Finding, Severity
from gateway.rules import RuleCatalogue, default_catalogue

ISSUE_TYPES = frozenset((
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational"))
SEVERITY = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "information"}


def issue_of(finding: Finding, catalogue: RuleCatalogue | None = None) -> dict:
    catalogue = catalogue or default_catalogue()
    ack = catalogue.rule(finding.rule).ack if finding.rule in catalogue else {}
    code = ack.get("fhir_issue", "processing")
    severity = SEVERITY[finding.severity]
    if ack.get("fhir_severity") == "fatal" and finding.severity is Severity.ERROR:
        severity = "fatal"
    issue = {"severity": severity, "code": code if code in ISSUE_TYPES else "processing",
             "details": {"coding": [{"system": RULE_SYSTEM, "code": finding.rule}],
                         "text": finding.message},
             "diagnostics": finding.source}
    if finding.location:
        issue["expression"] = [finding.location]
    return issue


def operation_outcome(findings: Iterable[Finding], catalogue: RuleCatalogue | None = None,
                      ok_message: str | None = None) -> dict:
    """An OperationOutcome (JSON form). With no findings it holds one ``information`` issue
    (an OperationOutcome needs at least one): ``ok_message`` or "the resource is valid"."""
    issues = [issue_of(f, catalogue) for f in findings]
    if not issues:
        issues = [{"severity": "information", "code": "informational",
                   "details": {"coding": [{"system": RULE_SYSTEM, "code": "FHIR-API-009"}],
                               "text": ok_message or "the resource is valid"}}]
    return {"resourceType": "OperationOutcome", "issue": issues}


def has_errors(outcome: dict) -> bool:
    return any(i["severity"] in ("fatal", "error") for i in outcome.get("issue", ()))
