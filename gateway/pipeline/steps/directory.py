"""Step ``directory``: a plan's provider directory (directory roster CSV/XLSX, X12 274 or FHIR
Plan-Net Bundle) — validated, its providers loaded as the plan's provider registry (the
directory the ECM rules check claims against, replacing the plan's earlier roster or
directory) — and step ``directory-274``: the plan's newest directory as the monthly 274 to the
state, one file per county, control numbers from the store
(:func:`gateway.pipeline.delivery.envelope_numbers`), on the state's ``274`` route.

The format work is :mod:`gateway.directory`; the on-request and scheduled runs are
:mod:`gateway.pipeline.directory`."""

from __future__ import annotations

import io
import json
import re
import tempfile
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.pipeline.delivery import X12_MEDIA, envelope_numbers
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import load_plan_providers, server_registry
from gateway.pipeline.status import Status
from gateway.pipeline.steps.result import StepResult
from gateway.rules import default_catalogue

UPLOAD_KIND = "directory"  # summary kind of an uploaded directory
MONTHLY_KIND = "directory-274"  # submission kind (and document role) of the monthly 274
ENVELOPE = "dhcs-274"
SUFFIX = {"274": ".x12", "directory": ".csv", "plannet": ".json"}


def directory_kind(path: Path) -> str | None:
    """``274``, ``directory`` (a directory roster) or ``plannet``; None for anything else."""
    from gateway.sniff import UnknownKind, sniff
    from gateway.tabular import sniff_table

    try:
        kind = sniff(path)
    except UnknownKind:
        return None
    if kind == "274":
        return "274"
    if kind in ("csv", "xlsx"):
        return "directory" if sniff_table(path) == "directory" else None
    if kind == "fhir":
        with open(path, "rb") as handle:
            head = handle.read(256 * 1024)
        if b'"PractitionerRole"' in head or b"davinci-pdex-plan-net" in head:
            return "plannet"
    return None


def is_274(payload: bytes) -> bool:
    """An X12 payload whose functional group is the 274 provider directory (004050X109)."""
    head = payload[:4096]
    return b"004050X109" in head and b"GS" in head


def plan_settings(plan: Partner):
    """The 274 envelope for ``plan``: profiles/envelopes/dhcs-274.yaml with the plan's code as
    sender (ISA06/GS02) and its name as the information source."""
    from gateway.x12.writer import envelope_settings

    base = envelope_settings(ENVELOPE)
    code = plan.plan_code or plan.id.upper()
    return base.model_copy(update={
        "sender_id": code, "application_sender": code,
        "submitter": base.submitter.model_copy(update={"id": code, "name": plan.name})})


def _provider_rows(group) -> list[dict]:
    rows = []
    for site in group.sites:
        for p in site.providers:
            name = ", ".join(x for x in (p.last_name, p.first_name) if x)
            rows.append({"provider_npi": p.npi, "provider_tin": group.tin,
                         "provider_name": name, "ecm": p.ecm, "cs": p.cs,
                         "cs_services": p.cs_services, "active_from": group.contract_start,
                         "active_to": group.contract_end})
    return rows


def _refuse(result: StepResult, problem: str) -> StepResult:
    finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None, problem=problem)
    return result.reject("not a provider directory", [finding])


def process_directory_upload(store, partners: Partners, partner: Partner, submission_id: str,
                             path: Path, kind: str) -> StepResult:
    from gateway.directory.convert import open_directory
    from gateway.directory.plannet import PlanNetError
    from gateway.tabular import LayoutError
    from gateway.x12.reader import NotX12Error

    result = StepResult(submission_id)
    if partner.role != "plan":
        return _refuse(result, "provider directories come from plans")
    try:
        source = open_directory(path, kind, plan_settings(partner))
        rows, counties = [], set()
        for group in source.groups:
            rows.extend(_provider_rows(group))
            counties.update(site.county for site in group.sites)
    except (LayoutError, NotX12Error, PlanNetError) as exc:
        return _refuse(result, str(exc))
    findings = list(source.findings)
    if kind == "274":  # the X12 engine's findings too, once it knows the guide
        from gateway.directory.validate import engine_knows_274, validate_274_file

        if engine_knows_274():
            findings, _stats = validate_274_file(path)
    valid = not any(f.is_error for f in findings)
    summary = {"kind": UPLOAD_KIND, "format": kind, **source.stats,
               "counties": sorted(c for c in counties if c), "valid": valid}
    if rows:
        summary["providers_loaded"] = load_plan_providers(server_registry(store), partner.id,
                                                          rows)
    result.add_findings(findings)
    result.valid = valid
    result.summary = summary
    if not rows and not valid:
        result.status, result.read = Status.REJECTED, True
    return result


def latest_directory(store, plan_id: str) -> dict | None:
    """The plan's newest directory upload that loaded providers."""
    for found in store.submissions_for(plan_id, limit=500):
        summary = found.get("summary") or {}
        if summary.get("kind") == UPLOAD_KIND and summary.get("providers_loaded") and \
                found.get("status") != Status.REJECTED:
            return found
    return None


def _slug(county: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", county).strip("-").lower() or "none"


def process_monthly_274(store, partners: Partners, partner: Partner, submission_id: str,
                        now: datetime | None = None) -> StepResult:
    from gateway.directory.convert import open_directory
    from gateway.directory.x274 import Directory274Writer

    result = StepResult(submission_id)
    request = json.loads(store.raw_payload(submission_id) or b"{}")
    now = now or datetime.now(UTC)
    month = request.get("month") or now.strftime("%Y-%m")
    if partner.role != "plan":
        return result.reject("the 274 is made for plans")
    upload = latest_directory(store, partner.id)
    if upload is None:
        return result.reject("the plan has sent no directory")
    state = partners.route("274", partner)
    settings = plan_settings(partner)
    kind = upload["summary"]["format"]
    catalogue = default_catalogue()
    files: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="ecm-directory-") as folder:
        path = Path(folder) / f"directory{SUFFIX.get(kind, '')}"
        path.write_bytes(store.raw_payload(upload["id"]))
        source = open_directory(path, kind, settings)
        header = replace(source.directory, plan_id=settings.submitter.id,
                         plan_name=partner.name, as_of=date.fromisoformat(f"{month}-01"),
                         reference=f"{partner.id}-{month}")
        for group in source.groups:
            by_county: dict[str, list] = {}
            for site in group.sites:
                if not site.county:
                    result.add_findings([catalogue.finding(
                        "DIR-SRV-001", f"group {group.npi or group.name}, site {site.id}",
                        None, site=site.id)])
                    continue
                by_county.setdefault(site.county, []).append(site)
            for county, sites in by_county.items():
                if county not in files:
                    out = io.StringIO()
                    files[county] = (out, Directory274Writer(
                        out, header, settings, envelope_numbers(store, ENVELOPE), now))
                files[county][1].write(replace(group, sites=sites))
    counts = {}
    for county in sorted(files):
        out, writer = files[county]
        counts[county] = writer.close()
        if state is not None:
            result.route(role=MONTHLY_KIND, name=f"274-{partner.id}-{_slug(county)}-{month}.x12",
                         content=out.getvalue().encode("utf-8"), media_type=X12_MEDIA,
                         recipient=state.id, converted=True)
    result.summary = {"kind": MONTHLY_KIND, "month": month, "directory": upload["id"],
                      "providers": counts, "recipient": state.id if state else None,
                      "valid": True}
    return result
