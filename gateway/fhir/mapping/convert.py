"""One entry point for ``ecm-gateway convert FILE --to TARGET`` on the FHIR mappings.

========================  =========  ==================================================
input (sniffed)           --to       output
========================  =========  ==================================================
CarePlan (or Bundle)      ``rtf``    CSV in the default RTF layout, one row a CarePlan
CarePlan (or Bundle)      ``837p``   837P of the completed ECM/CS activities
ServiceRequest            ``json``   the referral record(s) as JSON
Task (or Bundle)          ``rtf``    CSV in the default RTF layout, one row a Task
MIF (CSV / XLSX)          ``fhir``   FHIR Bundle (collection)
837P                      ``fhir``   FHIR Bundle of Encounter + Claim (streamed)
canonical JSON            ``fhir``   FHIR Bundle of Encounter + Claim
========================  =========  ==================================================

FHIR input is JSON or XML (R4 through ``fhir.resources.R4B``). A pair outside the table raises
:class:`FhirConversionUsageError` (exit code 2 in the CLI).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TextIO

from gateway.fhir.mapping.careplan import careplan_to_encounters
from gateway.fhir.mapping.encounters import write_encounter_bundle, x12_to_bundle
from gateway.fhir.mapping.mif import mif_file_to_bundle
from gateway.fhir.mapping.referral import servicerequests_to_referrals
from gateway.fhir.mapping.rtf import careplans_to_rtf, consents_to_rtf, tasks_to_rtf, \
    write_rtf_csv
from gateway.findings import Finding
from gateway.x12.writer import ControlNumbers, EnvelopeSettings, envelope_settings

MAX_FHIR_INPUT = 50 * 1024 * 1024

# source kind -> targets it converts to
FHIR_TARGETS: dict[str, tuple[str, ...]] = {
    "CarePlan": ("rtf", "837p"),
    "ServiceRequest": ("json",),
    "Task": ("rtf",),
    "Consent": ("rtf",),
    "mif": ("fhir",),
    "837p": ("fhir",),
    "json": ("fhir",),
}


class FhirConversionUsageError(ValueError):
    """The input cannot be converted to that target (a usage error: the message says what
    the input is and what it converts to)."""


@dataclass
class FhirConverted:
    kind: str  # what the input was: CarePlan, ServiceRequest, Task, mif, 837p, json
    target: str
    written: int  # rows, encounters, referral records or Bundle entries written
    findings: list[Finding] = field(default_factory=list)


def _read_fhir(source: Path) -> dict:
    """A FHIR JSON or XML file as a JSON-form dict: read by the hardened FHIR reader
    (gateway.fhir.parse: no DTDs or entities, size and depth limits), structure-checked with
    fhir.resources (R4 through R4B)."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    from gateway.fhir.parse import Collector, decode, format_of

    raw = source.read_bytes()
    if len(raw) > MAX_FHIR_INPUT:
        raise FhirConversionUsageError(f"the FHIR file is larger than {MAX_FHIR_INPUT} bytes")
    payload = raw.removeprefix(b"\xef\xbb\xbf")
    col = Collector()
    data = decode(payload, format_of(None, payload) or "json", col)
    if data is None or not isinstance(data, dict) or "resourceType" not in data:
        reason = col.findings[0].message if col.findings else "no resourceType"
        raise FhirConversionUsageError(f"the file is not a readable FHIR resource: {reason}")
    try:
        get_fhir_model_class(str(data["resourceType"])).model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FhirConversionUsageError(
            f"the FHIR resource does not parse as R4: {where}: {first['msg']}") from None
    except (KeyError, ValueError, TypeError):
        raise FhirConversionUsageError("the file is not a readable FHIR resource (unknown "
                                       "resource type or element)") from None
    return data


def _fhir_kind(data: dict) -> str:
    """The resource type; for a Bundle the type of its first entry when that is a CarePlan,
    ServiceRequest or Task, else the first of CarePlan, Task, ServiceRequest it holds."""
    kind = str(data.get("resourceType"))
    if kind != "Bundle":
        return kind
    inside = [e["resource"].get("resourceType") for e in data.get("entry") or []
              if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    mapped = ("CarePlan", "Task", "ServiceRequest", "Consent")
    if inside and inside[0] in mapped:
        return inside[0]
    return next((k for k in mapped if k in inside), kind)


def _source_kind(source: Path) -> tuple[str, dict | None]:
    from gateway.sniff import UnknownKind, sniff

    try:
        kind = sniff(source)
    except UnknownKind as exc:
        raise FhirConversionUsageError(str(exc)) from None
    if kind == "fhir":
        data = _read_fhir(source)
        return _fhir_kind(data), data
    if kind in ("csv", "xlsx"):
        from gateway.tabular import sniff_table

        return sniff_table(source) or kind, None
    return kind, None


def convert_fhir(source: Path, target: str, out: TextIO, *, today: date | None = None,
                 settings: EnvelopeSettings | None = None,
                 controls: ControlNumbers | None = None, when: datetime | None = None,
                 rules=None) -> FhirConverted:
    """Convert ``source`` to ``target`` (see the module table), writing text to ``out``.
    ``settings`` is the envelope profile (837P envelope; the plan for RTF and MIF output),
    ``controls``/``when`` the 837P control numbers and time, ``today`` the RTF production date
    and the day MIF episodes are judged active on, ``rules`` ECM rules (with registries) for
    CarePlan encounters."""
    kind, data = _source_kind(Path(source))
    allowed = FHIR_TARGETS.get(kind)
    if not allowed or target not in allowed:
        hint = f"; a {kind} converts to: {', '.join(allowed)}" if allowed else \
            "; FHIR conversions take: " + ", ".join(
                f"{k} → {'/'.join(v)}" for k, v in FHIR_TARGETS.items())
        raise FhirConversionUsageError(f"cannot convert {kind} to {target}{hint}")
    settings = settings or envelope_settings("plan-default")
    if kind == "CarePlan" and target == "rtf":
        rows, findings = careplans_to_rtf(data, today=today, settings=settings)
        write_rtf_csv(rows, out)
        return FhirConverted(kind, target, len(rows), findings)
    if kind == "Task":
        rows, findings = tasks_to_rtf(data, today=today)
        write_rtf_csv(rows, out)
        return FhirConverted(kind, target, len(rows), findings)
    if kind == "Consent":
        rows, findings = consents_to_rtf(data, today=today)
        write_rtf_csv(rows, out, layout="data-sharing")
        return FhirConverted(kind, target, len(rows), findings)
    if kind == "CarePlan":
        from gateway.conversion import canonical_to_837p

        encounters, findings = careplan_to_encounters(data, settings=settings, rules=rules)
        if encounters:
            canonical_to_837p(encounters, out, settings, controls or ControlNumbers(1, 1),
                              when or datetime.now())
        return FhirConverted(kind, target, len(encounters), findings)
    if kind == "ServiceRequest":
        records, findings = servicerequests_to_referrals(data)
        payload = [r.as_json() for r in records]
        json.dump(payload[0] if len(payload) == 1 else {"referrals": payload}, out, indent=2)
        out.write("\n")
        return FhirConverted(kind, target, len(records), findings)
    if kind == "mif":
        bundle, findings = mif_file_to_bundle(Path(source), today=today, settings=settings)
        json.dump(bundle, out, indent=1, ensure_ascii=False)
        out.write("\n")
        return FhirConverted(kind, target, len(bundle["entry"]), findings)
    if kind == "837p":
        count, findings = x12_to_bundle(Path(source), out)
        return FhirConverted(kind, target, count, list(findings))
    from gateway.conversion import ConversionError, read_canonical

    try:
        encounters = read_canonical(Path(source))
    except ConversionError as exc:
        raise FhirConversionUsageError(str(exc)) from None
    return FhirConverted(kind, target, write_encounter_bundle(encounters, out), [])
