"""Provider directories in the server: a plan uploads its directory (directory roster CSV/XLSX,
X12 274 or FHIR Plan-Net Bundle); it becomes the plan's provider registry (the directory the
ECM rules check claims against); the gateway produces the monthly 274 to the state, one file per
plan and county, on a schedule (``schedules.directory_274: monthly`` in the partner file) and on
request (``POST /directory/274``), with control numbers from the store, delivered on the
state's ``274`` route.

The format work is :mod:`gateway.directory`; this module decides (who, which directory, which
county file goes where) and records (submissions, findings, documents)."""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import load_plan_providers, server_registry
from gateway.rules import default_catalogue

log = logging.getLogger(__name__)

UPLOAD_KIND = "directory"  # summary kind of an uploaded directory
MONTHLY_KIND = "directory-274"  # submission kind (and document role) of the monthly 274
X12_MEDIA = "application/edi-x12"
ENVELOPE = "dhcs-274"
SUFFIX = {"274": ".x12", "directory": ".csv", "plannet": ".json"}


class DirectoryError(ValueError):
    """A request the gateway cannot honour (unknown plan, bad month)."""


# -- what kind of directory is this upload? -------------------------------------------------
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


# -- upload ---------------------------------------------------------------------------------
def process_directory_upload(store, partners: Partners, partner: Partner, submission_id: str,
                             path: Path, kind: str):
    """A plan's directory: validated, its providers loaded as the plan's provider registry
    (replacing the plan's earlier roster or directory), its counties noted for the monthly
    274."""
    from gateway.directory.convert import open_directory
    from gateway.directory.plannet import PlanNetError
    from gateway.pipeline.steps import Outcome, _reject_file
    from gateway.tabular import LayoutError
    from gateway.x12.reader import NotX12Error

    if partner.role != "plan":
        return _reject_file(store, submission_id, "provider directories come from plans")
    try:
        source = open_directory(path, kind, plan_settings(partner))
        rows, counties = [], set()
        for group in source.groups:
            rows.extend(_provider_rows(group))
            counties.update(site.county for site in group.sites)
    except (LayoutError, NotX12Error, PlanNetError) as exc:
        return _reject_file(store, submission_id, str(exc))
    store.set_status(submission_id, "validated")
    findings = list(source.findings)
    valid = not any(f.is_error for f in findings)
    summary = {"kind": UPLOAD_KIND, "format": kind, **source.stats,
               "counties": sorted(c for c in counties if c), "valid": valid}
    status = "validated"
    if rows:
        summary["providers_loaded"] = load_plan_providers(server_registry(store), partner.id,
                                                          rows)
    elif not valid:
        status = "rejected"
    store.add_findings(submission_id, findings)
    store.set_summary(submission_id, summary)
    if status == "rejected":
        store.set_status(submission_id, status)
    return Outcome(submission_id, status, valid, None, len(findings))


def latest_directory(store, plan_id: str) -> dict | None:
    """The plan's newest directory upload that loaded providers."""
    for found in store.submissions_for(plan_id, limit=500):
        summary = found.get("summary") or {}
        if summary.get("kind") == UPLOAD_KIND and summary.get("providers_loaded") and \
                found.get("status") != "rejected":
            return found
    return None


# -- the monthly 274 -------------------------------------------------------------------------
def _slug(county: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", county).strip("-").lower() or "none"


def process_monthly_274(store, partners: Partners, partner: Partner, submission_id: str,
                        now: datetime | None = None):
    """STEPS[``directory-274``]: the plan's newest directory as one 274 per county, each a
    document for the state (the ``274`` route), with control numbers from the store."""
    from gateway.directory.convert import open_directory
    from gateway.directory.x274 import Directory274Writer
    from gateway.pipeline.steps import Outcome, envelope_numbers

    store.attempt(submission_id)
    request = json.loads(store.raw_payload(submission_id) or b"{}")
    now = now or datetime.now(UTC)
    month = request.get("month") or now.strftime("%Y-%m")
    if partner.role != "plan":
        store.set_status(submission_id, "rejected", error="the 274 is made for plans")
        return Outcome(submission_id, "rejected", False, None, 0)
    upload = latest_directory(store, partner.id)
    if upload is None:
        store.set_status(submission_id, "rejected", error="the plan has sent no directory")
        return Outcome(submission_id, "rejected", False, None, 0)
    state = partners.route("274", partner)
    settings = plan_settings(partner)
    kind = upload["summary"]["format"]
    catalogue = default_catalogue()
    findings, files = [], {}
    with tempfile.TemporaryDirectory(prefix="ecm-directory-") as folder:
        path = Path(folder) / f"directory{SUFFIX.get(kind, '')}"
        path.write_bytes(store.raw_payload(upload["id"]))
        source = open_directory(path, kind, settings)
        header = replace(source.directory, plan_id=settings.submitter.id,
                         plan_name=partner.name,
                         as_of=date.fromisoformat(f"{month}-01"),
                         reference=f"{partner.id}-{month}")
        for group in source.groups:
            by_county: dict[str, list] = {}
            for site in group.sites:
                if not site.county:
                    finding = catalogue.finding("DIR-SRV-001", f"group {group.npi or group.name}"
                                                f", site {site.id}", site=site.id)
                    if finding is not None:
                        findings.append(finding)
                    continue
                by_county.setdefault(site.county, []).append(site)
            for county, sites in by_county.items():
                if county not in files:
                    out = io.StringIO()
                    files[county] = (out, Directory274Writer(
                        out, header, settings, envelope_numbers(store, ENVELOPE), now))
                files[county][1].write(replace(group, sites=sites))
    store.set_status(submission_id, "validated")
    status = "validated"
    counts = {}
    for county in sorted(files):
        out, writer = files[county]
        counts[county] = writer.close()
        if state is not None:
            store.add_document(submission_id, role=MONTHLY_KIND,
                               name=f"274-{partner.id}-{_slug(county)}-{month}.x12",
                               content=out.getvalue().encode("utf-8"), media_type=X12_MEDIA,
                               recipient=state.id)
            status = "routed"
    if status == "routed":
        store.set_status(submission_id, status)
    store.add_findings(submission_id, findings)
    store.set_summary(submission_id, {"kind": MONTHLY_KIND, "month": month,
                                      "directory": upload["id"], "providers": counts,
                                      "recipient": state.id if state else None,
                                      "valid": not findings})
    return Outcome(submission_id, status, True, None, len(findings))


def monthly_274(store, partners: Partners, plan_id: str, month: str | None = None,
                now: datetime | None = None, channel: str = "api",
                wait_seconds: float = 60.0) -> list[dict]:
    """Make (or, for the same plan and month and channel, find again) the plan's monthly 274
    files; returns their documents (id, name, recipient). Raises :class:`DirectoryError`."""
    from gateway.pipeline.process import process

    plan = partners.partners.get(plan_id)
    if plan is None or plan.role != "plan":
        raise DirectoryError(f"{plan_id!r} is not a plan partner")
    now = now or datetime.now(UTC)
    month = month or now.strftime("%Y-%m")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise DirectoryError(f"month {month!r}: use YYYY-MM")
    request = json.dumps({"plan": plan.id, "month": month, "channel": channel},
                         sort_keys=True).encode()
    kept = store.receive(partner=plan.id, channel=channel, kind=MONTHLY_KIND,
                         filename=f"directory-274-{plan.id}-{month}.json", payload=request,
                         now=now)
    if not kept.duplicate:
        store.audit(actor=plan.id if channel == "api" else "gateway", action="directory-274",
                    target=kept.submission_id, detail=f"monthly 274 {month} via {channel}")
        process(store, partners, kept.submission_id)
    deadline = time.monotonic() + wait_seconds
    while True:
        found = store.submission(kept.submission_id) or {}
        if found.get("run_state", "done") == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [{"id": d["id"], "name": d["name"], "recipient": d["recipient"]}
            for d in store.documents(kept.submission_id) if d["role"] == MONTHLY_KIND]


class DirectorySchedule:
    """Each month, every plan with a directory gets its monthly 274 (once per month: a
    ``schedule`` submission of that month in the store means it was made)."""

    def __init__(self, store, partners: Partners, check_every: float = 3600.0) -> None:
        self.store = store
        self.partners = partners
        self.check_every = check_every

    @classmethod
    def from_partners(cls, store, partners: Partners) -> DirectorySchedule | None:
        value = partners.schedules.get("directory_274")
        if not value:
            return None
        if value != "monthly":
            raise DirectoryError(f"directory_274 schedule {value!r}: only monthly is known")
        return cls(store, partners)

    def due(self, plan_id: str, month: str) -> bool:
        for found in self.store.submissions_for(plan_id, limit=200):
            if found["kind"] == MONTHLY_KIND and found["channel"] == "schedule" and \
                    (found.get("summary") or {}).get("month") == month:
                return False
        return latest_directory(self.store, plan_id) is not None

    def tick(self, now: datetime | None = None) -> dict[str, list[dict]]:
        now = now or datetime.now(UTC)
        month = now.strftime("%Y-%m")
        sent = {}
        for plan in self.partners.partners.values():
            if plan.role == "plan" and self.due(plan.id, month):
                sent[plan.id] = monthly_274(self.store, self.partners, plan.id, month, now,
                                            channel="schedule")
        if sent:
            log.info("monthly 274 files made", extra={"kind": MONTHLY_KIND,
                                                      "size": sum(map(len, sent.values()))})
        return sent

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.check_every):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the schedule must survive one bad run
                log.error("monthly 274 run failed: %s", exc.__class__.__name__)
