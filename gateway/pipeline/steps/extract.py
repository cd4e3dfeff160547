"""Encounter-history extracts for providers: on demand (:func:`extract_history`, for the API and
the command line), for every provider at once (:func:`extract_all`) and on a schedule
(:class:`HistorySchedule`, interval from the partner file's ``schedules: {history_extract: ...}``).

A provider receives only the history of ITS assigned members (assignments whose ECM provider
NPI or TIN is the provider's): of each member the lines dated while it is the covering assignee
(one provider at a time, as claim checking decides) and those of a configurable lookback before
its benefit start (per plan, ``profiles/plans/<plan>.yaml``), every kind of claim with its
diagnoses (:func:`history_rows`); columns are data (``mappings/history-extract/layout.yaml``).

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
from datetime import UTC, datetime
from functools import lru_cache

import yaml
from sqlalchemy import or_, select

from gateway.tabular.cells import neutral_row

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
    """The history lines of the provider's assigned members (ECM Policy Guide 002:1695
    "Historical encounters/claims data for assigned Members"), with their diagnoses
    (002:1696-1700). A member has ONE assigned ECM provider at a time (002:1544-1545): a line
    goes to the provider

    * ``during``: when the provider is the covering assignee on the line's date -- the
      assignment :func:`gateway.ecm.rules.covering_assignment` picks among ALL the member's
      assignments (newest benefit start wins, as claim checking decides) is the provider's;
      a line dated after another provider took over goes to that provider only;
    * ``before``: when it falls in the lookback before the benefit start of one of the
      provider's assignments (``history_extract.lookback_months`` of the assigning plan's
      settings, profiles/plans/): the member's history before the provider's assignment,
      including a previous provider's period.

    History is kept per plan (the plan's claims extracts and the 837Ps it sent the state): an
    assignment of plan P gives the member's history of plan P only, so a member who moved
    between plans shows each plan's providers that plan's lines (deduplicated, sorted)."""
    from gateway.ecm.plans import lookback_months
    from gateway.ecm.pof import months_back
    from gateway.ecm.rules import covering_assignment
    from gateway.registry.store import Assignment

    a, h = assignments.c, history.c
    npis, tins = set(provider.npis), set(provider.tins)
    if not npis and not tins:
        return []

    def is_mine(found) -> bool:
        return provider.assigned(found.provider_npi, found.provider_tin)

    lookbacks: dict[str, int] = {}
    rows: dict[tuple, dict] = {}
    with registry.engine.connect() as conn:
        mine = []
        if npis:
            mine.append(a.provider_npi.in_(sorted(npis)))
        if tins:
            mine.append(a.provider_tin.in_(sorted(tins)))
        cins = sorted(set(conn.execute(select(a.cin).where(or_(*mine))).scalars()))
        for start in range(0, len(cins), 500):
            chunk = cins[start:start + 500]
            # every assignment of these members, whoever's and whichever plan's: who covers a
            # day is decided among all of them (as claim checking does)
            members: dict[str, list[tuple]] = {}
            for r in conn.execute(select(
                    a.cin, a.source, a.benefit_start, a.benefit_end, a.provider_npi,
                    a.provider_tin, a.authorization_date, a.last_name, a.first_name,
                    a.birth_date).where(a.cin.in_(chunk)).order_by(a.cin, a.id)).mappings():
                found = Assignment(cin=r["cin"], benefit_start=r["benefit_start"],
                                   benefit_end=r["benefit_end"],
                                   provider_npi=r["provider_npi"] or "",
                                   provider_tin=r["provider_tin"] or "", pof_codes=(),
                                   authorization_date=r["authorization_date"])
                members.setdefault(r["cin"], []).append((found, plan_of_source(r["source"]), r))
            for line in conn.execute(select(
                    h.cin, h.service_date, h.procedure_code, h.modifiers, h.units,
                    h.place_of_service, h.billing_npi, h.rendering_npi, h.claim_id,
                    h.line_number, h.diagnoses, h.source).where(h.cin.in_(chunk))
                    .order_by(h.id)).mappings():
                plan = plan_of_source(line["source"])
                held = members.get(line["cin"], [])
                # the provider's assignments by the plan whose history the line is
                own = [(found, r) for found, of, r in held if of == plan and is_mine(found)]
                if plan is None or not own:
                    continue
                day = line["service_date"]
                covering = covering_assignment([found for found, _, _ in held], day)
                if covering is not None and is_mine(covering) and any(
                        found.covers(day) for found, _ in own):
                    period = "during"
                else:
                    if plan not in lookbacks:
                        lookbacks[plan] = lookback_months(plan)
                    if not any(found.benefit_start is not None and
                               months_back(found.benefit_start, lookbacks[plan]) <= day
                               < found.benefit_start for found, _ in own):
                        continue  # neither the provider's period nor its lookback
                    period = "before"
                named = own[-1][1]
                key = (line["cin"], day, line["claim_id"], line["line_number"],
                       line["billing_npi"], line["procedure_code"])
                rows.setdefault(key, {
                    "member_cin": line["cin"], "plan": plan,
                    "service_date": day.isoformat(),
                    "procedure_code": line["procedure_code"] or "",
                    "modifiers": line["modifiers"] or "", "units": line["units"] or "",
                    "place_of_service": line["place_of_service"] or "",
                    "billing_npi": line["billing_npi"] or "",
                    "rendering_npi": line["rendering_npi"] or "",
                    "claim_id": line["claim_id"] or "",
                    "line_number": line["line_number"] or "",
                    "diagnoses": line["diagnoses"] or "",
                    "period": period,
                    # not extract columns: the member's name for the FHIR form
                    "member_last_name": named["last_name"],
                    "member_first_name": named["first_name"],
                    "member_birth_date": named["birth_date"]})
    return [rows[k] for k in sorted(rows, key=lambda k: tuple(str(x) for x in k))]


def history_csv(rows: list[dict]) -> bytes:
    columns = extract_columns()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(neutral_row(c["header"] for c in columns))
    for row in rows:
        writer.writerow(neutral_row(row.get(c["field"], "") for c in columns))
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
    from gateway.pipeline.steps.result import StepResult

    result = StepResult(submission_id)
    request = json.loads(store.raw_payload(submission_id) or b"{}")
    as_of = request.get("as_of") or (now or datetime.now(UTC)).isoformat()
    if partner.role != "provider":
        return result.reject("history extracts are for providers")
    try:
        formats = _formats(request.get("formats") or "csv")
    except ExtractError as exc:
        return result.reject(str(exc))
    rows = history_rows(server_registry(store), partner)
    target = partners.route("history", "gateway", npi=partner.npis[0] if partner.npis else "",
                            tin=partner.tins[0] if partner.tins else "")
    if target is not None and target.id == partner.id:
        stamp = datetime.fromisoformat(as_of).strftime("%Y%m%dT%H%M%SZ")
        for fmt in formats:
            content = history_csv(rows) if fmt == "csv" else \
                history_bundle(rows, partners, as_of)
            result.route(role=KIND, name=f"history-{partner.id}-{stamp}{SUFFIXES[fmt]}",
                         content=content, media_type=CSV_MEDIA if fmt == "csv" else FHIR_MEDIA,
                         recipient=partner.id)
    result.summary = {
        "kind": KIND, "as_of": as_of, "lines": len(rows),
        "members": len({r["member_cin"] for r in rows}), "valid": True,
        **({"formats": formats} if formats != ["csv"] else {})}
    return result


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = ["ExtractError", "HistorySchedule", "extract_all", "extract_history",
           "history_bundle", "history_formats", "history_rows", "interval_seconds",
           "process_history_extract"]
