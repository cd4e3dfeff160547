"""ECM referral ServiceRequest → referral record
(``mappings/fhir/servicerequest-to-referral.yaml``) with the authorization deadline its priority sets (72 hours expedited, 5 working days routine;
holidays in ``mappings/fhir/holidays.yaml``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import yaml

from gateway.fhir.mapping.engine import (
    FHIR_MAPPINGS,
    Mapper,
    entry_base,
    field_specs,
    json_value,
    load_spec,
    sources_of,
    wrong_type,
)
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue

SPEC = "servicerequest-to-referral"


@dataclass
class Referral:
    referral_id: str | None
    member_cin: str | None
    referral_date: datetime | None  # ServiceRequest.authoredOn
    pof_codes: list[str]
    priority: str  # expedited | routine
    fhir_priority: str  # routine | urgent | asap | stat as sent
    authorization_deadline: datetime | None
    deadline_rule: str  # how the deadline was computed, in words
    requester_npi: str | None = None
    requester_name: str | None = None
    payer_id: str | None = None  # the plan named by the ServiceRequest, when it names one
    payer_name: str | None = None
    requested_provider_npi: str | None = None
    requested_provider_name: str | None = None
    status: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        return {key: [json_value(v) for v in value] if isinstance(value, list)
                else json_value(value) for key, value in data.items()}


@lru_cache(maxsize=1)
def _holidays_file() -> tuple[bool, frozenset[date]]:
    data = yaml.safe_load((FHIR_MAPPINGS / "holidays.yaml").read_text("utf-8")) or {}
    days = frozenset(d if isinstance(d, date) else date.fromisoformat(str(d))
                     for d in data.get("holidays") or [])
    return bool(data.get("exclude_holidays", True)), days


def holidays() -> frozenset[date]:
    exclude, days = _holidays_file()
    return days if exclude else frozenset()


def is_working_day(day: date, off: frozenset[date]) -> bool:
    return day.weekday() < 5 and day not in off


def add_working_days(start: datetime, days: int, off: frozenset[date] | None = None
                     ) -> datetime:
    """The same clock time on the ``days``-th working day after ``start``'s day (a referral
    received on a weekend is counted from the next working day like any other)."""
    off = holidays() if off is None else off
    current = start
    counted = 0
    while counted < days:
        current += timedelta(days=1)
        if is_working_day(current.date(), off):
            counted += 1
    return current


def authorization_deadline(received: datetime, priority: str, deadlines: dict
                           ) -> tuple[datetime, str]:
    if priority == "expedited":
        hours = int(deadlines.get("expedited_hours", 72))
        return received + timedelta(hours=hours), f"expedited: {hours} hours after authoredOn"
    days = int(deadlines.get("routine_working_days", 5))
    return add_working_days(received, days), (
        f"routine: {days} working days after authoredOn (Monday-Friday, "
        "holidays of mappings/fhir/holidays.yaml excluded)")


def servicerequests_to_referrals(data: dict, catalogue: RuleCatalogue | None = None
                                 ) -> tuple[list[Referral], list[Finding]]:
    catalogue = catalogue or default_catalogue()
    sources = sources_of(data, "ServiceRequest")
    if not sources:
        found = wrong_type(data, "ServiceRequest", catalogue)
        return [], [found] if found else []
    spec = load_spec(SPEC)
    mapper = Mapper(spec, catalogue)
    specs = field_specs(spec, "fields", SPEC)
    records, findings = [], []
    for source in sources:
        base = entry_base(data, source)
        v = mapper.values(specs, source.resource, source, base, findings,
                          roots=spec.get("roots"))
        received = v.get("referral_date")
        deadline, rule = (authorization_deadline(received, v["priority"], spec["deadlines"])
                          if received else (None, "no authoredOn: no deadline"))
        records.append(Referral(
            referral_id=v.get("referral_id"), member_cin=v.get("member_cin"),
            referral_date=received, pof_codes=list(v.get("pof_codes") or []),
            priority=v["priority"], fhir_priority=v.get("fhir_priority") or "routine",
            authorization_deadline=deadline, deadline_rule=rule,
            requester_npi=v.get("requester_npi") or v.get("requester_person_npi"),
            requester_name=v.get("requester_name") or v.get("requester_person_name")
            or v.get("requester_display"),
            payer_id=v.get("payer_id"), payer_name=v.get("payer_name") or v.get("payer_display"),
            requested_provider_npi=v.get("requested_provider_npi"),
            requested_provider_name=v.get("requested_provider_name"),
            status=v.get("status")))
    return records, findings


def servicerequest_to_referral(resource: dict, catalogue: RuleCatalogue | None = None
                               ) -> tuple[Referral | None, list[Finding]]:
    """The referral record of a ServiceRequest (or of the first one in a Bundle)."""
    records, findings = servicerequests_to_referrals(resource, catalogue)
    return (records[0] if records else None), findings
