"""Encounter-history extracts for providers: on demand (:func:`extract_history`, for the API and
the command line), for every provider at once (:func:`extract_all`) and on a schedule
(:class:`HistorySchedule`, interval from the partner file's ``schedules: {history_extract: ...}``).

A provider receives only the history of ITS assigned members (assignments whose ECM provider
NPI or TIN is the provider's): of each member the lines from a configurable lookback before the
benefit start (per plan, ``profiles/plans/<plan>.yaml``) through the benefit period, every kind
of claim with its diagnoses; columns are data (``mappings/history-extract/layout.yaml``).

An extract is a submission of kind ``history-extract`` in the provider's name (channel
``schedule`` or ``api``), processed like any other (so it is queued, retried, finished and
audited the same way); its CSV lands in the provider's mailbox (route ``history`` from
``gateway`` to ``provider``). In format ``fhir`` the same lines come as a FHIR Bundle
(collection) of Encounter + Claim with their Patient, Coverage and Organizations
(``mappings/fhir/history-to-bundle.yaml``); the route's ``formats`` (e.g. ``[csv, fhir]``)
say which the schedule sends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import yaml
from sqlalchemy import and_, or_, select

from gateway.paths import MAPPINGS
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import plan_of_source, server_registry
from gateway.registry.store import Registry, assignments, history

KIND = "history-extract"
CSV_MEDIA = "text/csv"
FHIR_MEDIA = "application/fhir+json"
FORMATS = ("csv", "fhir")
SUFFIXES = {"csv": ".csv", "fhir": ".fhir.json"}
LAYOUT = MAPPINGS / "history-extract" / "layout.yaml"
INTERVALS = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
log = logging.getLogger("gateway.extract")


class ExtractError(ValueError):
    """An extract cannot be made (unknown or non-provider partner, bad interval)."""


@lru_cache(maxsize=1)
def extract_columns() -> list[dict]:
    return yaml.safe_load(LAYOUT.read_text(encoding="utf-8"))["columns"]


def history_rows(registry: Registry, provider: Partner) -> list[dict]:
    """The history lines of the provider's assigned members: HISTORICAL lines from a
    lookback before the benefit start (``history_extract.lookback_months`` of the assigning
    plan's settings, profiles/plans/) through the benefit period (ECM Policy Guide 002:1695
    "Historical encounters/claims data for assigned Members"), with their diagnoses
    (002:1696-1700). A plan's claims extract reaches only the providers of that plan's
    members (deduplicated, sorted)."""
    from gateway.ecm.plans import lookback_months
    from gateway.ecm.pof import months_back

    a, h = assignments.c, history.c
    mine = []
    if provider.npis:
        mine.append(a.provider_npi.in_(list(provider.npis)))
    if provider.tins:
        mine.append(a.provider_tin.in_(list(provider.tins)))
    if not mine:
        return []
    within = and_(h.cin == a.cin,
                  or_(a.benefit_end.is_(None), h.service_date <= a.benefit_end))
    query = (select(a.source, a.benefit_start, h.cin, h.service_date, h.procedure_code,
                    h.modifiers, h.units, h.place_of_service, h.billing_npi, h.rendering_npi,
                    h.claim_id, h.line_number, h.diagnoses, h.source.label("history_source"),
                    a.last_name, a.first_name, a.birth_date)
             .select_from(assignments.join(history, within)).where(or_(*mine)))
    rows: dict[tuple, dict] = {}
    lookbacks: dict[str | None, int] = {}
    with registry.engine.connect() as conn:
        for line in conn.execute(query).mappings():
            plan = plan_of_source(line["source"])
            line_plan = plan_of_source(line["history_source"])
            if line_plan is not None and line_plan != plan:
                continue  # another plan's claims
            if plan not in lookbacks:
                lookbacks[plan] = lookback_months(plan)
            start = line["benefit_start"]
            if start is not None and line["service_date"] < months_back(start, lookbacks[plan]):
                continue
            key = (line["cin"], line["service_date"], line["claim_id"], line["line_number"],
                   line["billing_npi"], line["procedure_code"])
            rows.setdefault(key, {
                "member_cin": line["cin"], "plan": plan or "",
                "service_date": line["service_date"].isoformat(),
                "procedure_code": line["procedure_code"] or "",
                "modifiers": line["modifiers"] or "", "units": line["units"] or "",
                "place_of_service": line["place_of_service"] or "",
                "billing_npi": line["billing_npi"] or "",
                "rendering_npi": line["rendering_npi"] or "",
                "claim_id": line["claim_id"] or "", "line_number": line["line_number"] or "",
                "diagnoses": line["diagnoses"] or "",
                "period": "before" if start is not None and line["service_date"] < start
                else "during",
                # not extract columns: the member's name for the FHIR form
                "member_last_name": line["last_name"], "member_first_name": line["first_name"],
                "member_birth_date": line["birth_date"]})
    return [rows[k] for k in sorted(rows, key=lambda k: tuple(str(x) for x in k))]


def history_csv(rows: list[dict]) -> bytes:
    columns = extract_columns()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c["header"] for c in columns])
    for row in rows:
        writer.writerow([row.get(c["field"], "") for c in columns])
    return out.getvalue().encode("utf-8")


def history_bundle(rows: list[dict], partners: Partners, as_of: str | None = None) -> bytes:
    """The history lines as a FHIR Bundle (collection): one Encounter and one Claim per claim
    of a member and billing provider, with the Patient, Coverage, plan and billing
    Organizations they point at (``mappings/fhir/history-to-bundle.yaml``)."""
    from gateway.fhir.mapping.engine import TemplateEntries

    claims: dict[tuple, list[dict]] = {}
    for row in rows:
        claims.setdefault((row["member_cin"], row["claim_id"], row["billing_npi"]),
                          []).append(row)
    entries = TemplateEntries("history-to-bundle",
                              lambda lines, position: _claim_view(lines, position, partners))
    bundle: dict = {"resourceType": "Bundle", "type": "collection"}
    if as_of:
        bundle["timestamp"] = datetime.fromisoformat(as_of).astimezone(UTC).isoformat(
            timespec="seconds").replace("+00:00", "Z")
    entry = [entry for lines in claims.values() for entry in entries.of(lines)]
    if entry:  # FHIR JSON has no empty arrays
        bundle["entry"] = entry
    return (json.dumps(bundle, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _claim_view(lines: list[dict], position: int, partners: Partners) -> dict:
    from decimal import Decimal, InvalidOperation

    from gateway.fhir.mapping.engine import systems

    first = lines[0]
    plan = partners.partners.get(first["plan"])
    plan_id = (plan.payer_ids[0] if plan and plan.payer_ids else
               (plan.plan_code if plan and plan.plan_code else first["plan"]))
    days = sorted(line["service_date"] for line in lines)
    items = []
    for number, line in enumerate(sorted(lines, key=lambda x: (int(x["line_number"] or 0),
                                                                x["service_date"])), start=1):
        try:
            units = Decimal(str(line["units"])) if line["units"] != "" else None
        except InvalidOperation:
            units = None
        items.append({
            "sequence": int(line["line_number"] or number),
            "procedure_code": line["procedure_code"],
            "modifiers": [m for m in str(line["modifiers"] or "").split(":") if m],
            "units": units, "place_of_service": line["place_of_service"],
            "served_on": line["service_date"]})
    birth = first.get("member_birth_date")
    return {
        "member": {"cin": first["member_cin"], "last_name": first.get("member_last_name"),
                   "first_name": first.get("member_first_name"),
                   "birth_date": birth.isoformat() if birth else None},
        "plan": {"id": plan_id, "name": plan.name if plan else None},
        "billing": {"npi": first["billing_npi"]},
        "claim": {"id": first["claim_id"]},
        "claim_key": f"{position}|{first['member_cin']}|{first['claim_id']}|"
                     f"{first['billing_npi']}",
        "service_from": days[0], "service_to": days[-1],
        "procedure_codes": list(dict.fromkeys(line["procedure_code"] for line in lines
                                              if line["procedure_code"])),
        # ICD-10-CM as FHIR writes it: with the dot after the third character
        "diagnoses": list(dict.fromkeys(code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"
                                        for line in lines
                                        for code in (line.get("diagnoses") or "").split(";")
                                        if code)),
        "lines": items, "sys": systems(),
    }


def history_formats(partners: Partners) -> tuple[str, ...]:
    """The formats the ``history`` route asks for (``formats: [csv, fhir]``); CSV when it
    names none."""
    for route in partners.routes:
        if route.kind == "history" and route.source_role in ("gateway", "*"):
            return tuple(getattr(route, "formats", ()) or ()) or ("csv",)
    return ("csv",)


def _formats(value) -> list[str]:
    wanted = [value] if isinstance(value, str) else list(value or ["csv"])
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise ExtractError(f"history extract format {unknown[0] if unknown else ''!r}: use "
                           + " or ".join(FORMATS))
    return list(dict.fromkeys(wanted))


# -- the processing step -------------------------------------------------------------------------
def process_history_extract(store, partners: Partners, partner: Partner, submission_id: str,
                            now: datetime | None = None):
    """STEPS[``history-extract``]: the extract for the submission's partner (a provider), one
    document per format the request names (CSV when it names none)."""
    from gateway.pipeline.steps import Outcome

    store.attempt(submission_id)
    request = json.loads(store.raw_payload(submission_id) or b"{}")
    as_of = request.get("as_of") or (now or datetime.now(UTC)).isoformat()
    if partner.role != "provider":
        store.set_status(submission_id, "rejected", error="history extracts are for providers")
        return Outcome(submission_id, "rejected", False, None, 0)
    try:
        formats = _formats(request.get("formats") or "csv")
    except ExtractError as exc:
        store.set_status(submission_id, "rejected", error=str(exc))
        return Outcome(submission_id, "rejected", False, None, 0)
    rows = history_rows(server_registry(store), partner)
    target = partners.route("history", "gateway", npi=partner.npis[0] if partner.npis else "",
                            tin=partner.tins[0] if partner.tins else "")
    store.set_status(submission_id, "validated")
    status = "validated"
    if target is not None and target.id == partner.id:
        stamp = datetime.fromisoformat(as_of).strftime("%Y%m%dT%H%M%SZ")
        for fmt in formats:
            content = history_csv(rows) if fmt == "csv" else \
                history_bundle(rows, partners, as_of)
            store.add_document(submission_id, role=KIND,
                               name=f"history-{partner.id}-{stamp}{SUFFIXES[fmt]}",
                               content=content,
                               media_type=CSV_MEDIA if fmt == "csv" else FHIR_MEDIA,
                               recipient=partner.id)
        status = "routed"
        store.set_status(submission_id, status)
    store.set_summary(submission_id, {
        "kind": KIND, "as_of": as_of, "lines": len(rows),
        "members": len({r["member_cin"] for r in rows}), "valid": True,
        **({"formats": formats} if formats != ["csv"] else {})})
    return Outcome(submission_id, status, True, None, 0)


# -- on demand -----------------------------------------------------------------------------------
def extract_history(store, partners: Partners, provider_id: str, now: datetime | None = None,
                    channel: str = "api", wait_seconds: float = 30.0,
                    format: str | list[str] = "csv") -> str | None:
    """Make (or, for the same ``now`` and formats, find again) the provider's extract;
    returns the id of the document in its mailbox (of the first format asked for: ``csv``,
    ``fhir``, or a list of both), or None when no ``history`` route leads to the provider.
    Raises :class:`ExtractError` for an unknown or non-provider partner or format."""
    from gateway.pipeline.process import process

    provider = partners.partners.get(provider_id)
    if provider is None or provider.role != "provider":
        raise ExtractError(f"{provider_id!r} is not a provider partner")
    formats = _formats(format)
    now = _utc(now)
    asked = {"provider": provider.id, "as_of": now.isoformat()}
    if formats != ["csv"]:  # a CSV request reads as it always did (same content hash)
        asked["formats"] = formats
    request = json.dumps(asked, sort_keys=True).encode()
    kept = store.receive(partner=provider.id, channel=channel, kind=KIND,
                         filename=f"history-{provider.id}.json", payload=request, now=now)
    submission_id = kept.submission_id
    if not kept.duplicate:
        store.audit(actor=provider.id if channel == "api" else "gateway", action="extract",
                    target=submission_id, detail=f"history extract via {channel}")
        process(store, partners, submission_id)
    suffix = SUFFIXES[formats[0]]
    deadline = time.monotonic() + wait_seconds
    while True:  # another worker may be running it
        found = store.submission(submission_id) or {}
        documents = [d for d in store.documents(submission_id)
                     if d["role"] == KIND and d["name"].endswith(suffix)
                     and (suffix != ".csv" or not d["name"].endswith(".fhir.json"))]
        if documents and found.get("run_state", "done") == "done":
            return documents[-1]["id"]
        if found.get("status") in ("rejected", "dead_letter") or time.monotonic() > deadline:
            return None
        if found.get("run_state", "done") == "done" and found.get("status") == "validated":
            return None  # finished without a route to the provider
        time.sleep(0.2)


def extract_all(store, partners: Partners, now: datetime | None = None,
                channel: str = "schedule", formats: list[str] | None = None
                ) -> dict[str, str | None]:
    """Every provider's extract (provider id -> document id of the first format), in the
    ``formats`` given, else those the ``history`` route asks for."""
    now = _utc(now)
    wanted = list(formats or history_formats(partners))
    return {p.id: extract_history(store, partners, p.id, now, channel=channel, format=wanted)
            for p in partners.partners.values() if p.role == "provider"}


# -- on a schedule -------------------------------------------------------------------------------
def interval_seconds(value: str | float) -> float:
    """``hourly``, ``daily``, ``weekly`` or a number of seconds."""
    text = str(value).strip().lower()
    if text in INTERVALS:
        return float(INTERVALS[text])
    try:
        seconds = float(text)
    except ValueError:
        raise ExtractError(f"history_extract schedule {value!r}: use hourly, daily, weekly or "
                           "a number of seconds") from None
    if seconds <= 0:
        raise ExtractError("the history_extract interval must be positive")
    return seconds


class HistorySchedule:
    """Runs :func:`extract_all` every ``interval`` seconds. The last scheduled run is read back
    from the store (the newest ``schedule`` extract), so a restart does not send again early."""

    def __init__(self, store, partners: Partners, interval: float,
                 check_every: float = 60.0) -> None:
        self.store = store
        self.partners = partners
        self.interval = timedelta(seconds=interval)
        self.check_every = check_every

    @classmethod
    def from_partners(cls, store, partners: Partners) -> HistorySchedule | None:
        """The schedule the partner file asks for; None without ``schedules.history_extract``."""
        value = partners.schedules.get("history_extract")
        if not value:
            return None
        return cls(store, partners, interval_seconds(value))

    def last_run(self) -> datetime | None:
        latest = None
        for partner in self.partners.partners.values():
            if partner.role != "provider":
                continue
            for found in self.store.submissions_for(partner.id, limit=50):
                if found["kind"] == KIND and found["channel"] == "schedule":
                    at = found["created_at"]
                    latest = at if latest is None or at > latest else latest
                    break
        return latest

    def tick(self, now: datetime | None = None) -> dict[str, str | None]:
        """Run the extracts when due; returns what was sent (empty when not due)."""
        now = _utc(now)
        last = self.last_run()
        if last is not None and now - last < self.interval:
            return {}
        sent = extract_all(self.store, self.partners, now)
        log.info("history extracts sent", extra={"kind": KIND, "size": len(sent)})
        return sent

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set (for a daemon thread in the server's lifespan); a failing
        run is logged (no member data) and tried again at the next check."""
        # the first check comes one period after start-up, so a restart (or a test's short-lived
        # server) does not race the submissions that arrive first
        while not stop.wait(self.check_every):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the schedule must survive one bad run
                log.error("history extract run failed: %s", exc.__class__.__name__)


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = ["ExtractError", "HistorySchedule", "extract_all", "extract_history",
           "history_bundle", "history_formats", "history_rows", "interval_seconds",
           "process_history_extract"]
