"""CarePlan → canonical encounters (``mappings/fhir/careplan-to-encounters.yaml``): the completed
activities coded with an ECM or Community Supports HCPCS code become 837P service lines, one
claim per CarePlan and day, checked with the ECM rules before they are handed on."""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal

from pydantic import ValidationError

from gateway.ecm.codesets import load_codesets
from gateway.ecm.rules import ClaimPlace, EncounterRules
from gateway.fhir.mapping.engine import (
    EvaluationError,
    Mapper,
    Source,
    entry_base,
    field_specs,
    load_spec,
    sources_of,
    wrong_type,
)
from gateway.findings import Finding, Severity
from gateway.model.encounter import (
    Address,
    BillingProvider,
    Claim,
    Encounter,
    Member,
    RenderingProvider,
    ServiceLine,
)
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.x12.writer import EnvelopeSettings, envelope_settings

SPEC = "careplan-to-encounters"
MAX_LINES_PER_CLAIM = 50
CLAIM_ID_LENGTH = 38  # CLM01


def claim_id(template: str, **values: str) -> str:
    text = template.format(**values)
    if len(text) <= CLAIM_ID_LENGTH:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text[:29]}-{digest}"


def careplan_to_encounters(resource: dict, settings: EnvelopeSettings | None = None,
                           rules: EncounterRules | None = None,
                           catalogue: RuleCatalogue | None = None, fill: dict | None = None,
                           claims: list[tuple[list | None, list[Finding]]] | None = None,
                           notes: bool = True) -> tuple[list[Encounter], list[Finding]]:
    """The encounters of a CarePlan (or of every CarePlan in a Bundle) that pass the ECM rules,
    and the findings. ``settings`` give the submitter and the plan (payer); ``rules`` default
    to the code-set rules alone (pass one with registries for assignment checks); ``fill``
    (claim field → value) what the caller knows when the CarePlan names its member or billing
    provider by identifier only (member name, billing provider name, NPI, TIN, address).
    ``claims``: :func:`careplan_claims` of the same resource, settings and fill, made before
    (the mapping is not done again; only the rules run). ``notes``: with ``rules`` given, say
    which rule groups they cannot run (``ECM-REG-001``; False when the caller said it already
    for the same submission)."""
    catalogue = catalogue or default_catalogue()
    if claims is None:
        claims = careplan_claims(resource, settings, catalogue, fill)
    encounters: list[Encounter] = []
    findings: list[Finding] = []
    if notes and rules is not None and any(batch for batch, _ in claims):
        # ECM rules given (registries): the rule groups they cannot run, once per call
        findings.extend(rules.notes())
    rules = rules or EncounterRules(None, catalogue=catalogue)
    for batch, found in claims:
        findings.extend(found)
        if batch is not None:
            encounters.extend(_checked(batch, rules, catalogue, findings))
    return encounters, findings


def careplan_claims(resource: dict, settings: EnvelopeSettings | None = None,
                    catalogue: RuleCatalogue | None = None, fill: dict | None = None
                    ) -> list[tuple[list | None, list[Finding]]]:
    """The mapping half of :func:`careplan_to_encounters`: per CarePlan of ``resource``, its
    claims as ``(encounter, place)`` before the ECM rules (None: nothing to check) and the
    mapping's findings. The same input gives the same answer, which the rules only read."""
    catalogue = catalogue or default_catalogue()
    settings = settings or envelope_settings("plan-default")
    sources = sources_of(resource, "CarePlan")
    if not sources:
        found = wrong_type(resource, "CarePlan", catalogue)
        return [(None, [found] if found else [])]
    return [_one_careplan(source, entry_base(resource, source), settings, catalogue, fill)
            for source in sources]


def _one_careplan(source: Source, base: str, settings: EnvelopeSettings,
                  catalogue: RuleCatalogue, fill: dict | None = None
                  ) -> tuple[list | None, list[Finding]]:
    spec = load_spec(SPEC)
    mapper = Mapper(spec, catalogue)
    codes = load_codesets()
    findings: list[Finding] = []
    header = mapper.values(field_specs(spec, "claim", SPEC), source.resource, source, base,
                           findings, roots=spec.get("roots"), fill=fill)
    header_ok = not any(f.is_error for f in findings)
    line_specs = field_specs(spec, "line", SPEC)
    date_spec = next(s for s in line_specs if s.target == "service_date")
    procedure_spec = next(s for s in line_specs if s.target == "procedure")
    other_specs = [s for s in line_specs if s is not procedure_spec]
    activities = source.resource.get("activity")
    by_day: dict[date, list[tuple[int, dict]]] = {}
    for index, activity in enumerate(activities if isinstance(activities, list) else []):
        where = f"{base}.activity[{index}]"
        try:
            if mapper.evaluate(spec["activity_filter"], activity, source) != [True]:
                continue
        except EvaluationError as exc:
            mapper.finding(findings, "FHIR-MAP-011", where, target="activity_filter",
                           problem=str(exc))
            continue
        line_findings: list[Finding] = []
        procedure = mapper.value(procedure_spec, activity, source, where, line_findings)
        if not procedure or not codes.is_service_code(procedure[0]):
            # not an ECM/CS service (goals, notes, other care): no line; a HCPCS coding that
            # cannot be read is still reported
            findings.extend(line_findings)
            continue
        values = {"procedure": procedure, **mapper.values(other_specs, activity, source, where,
                                                          line_findings)}
        if values.get("status") != spec.get("completed_status", "completed"):
            mapper.finding(findings, "FHIR-MAP-006", f"{where}.detail.status",
                           reason="its status is not completed")
            continue
        if values.get("service_date") is None and not any(
                f.rule == "FHIR-MAP-002" for f in line_findings):
            mapper.finding(line_findings, "FHIR-MAP-001", f"{where}.detail",
                           target="service date", looked=" | ".join(date_spec.paths))
        findings.extend(line_findings)
        if any(f.is_error for f in line_findings):
            continue
        by_day.setdefault(values["service_date"], []).append((index, values))
    if not by_day:
        if header_ok and not any(f.is_error for f in findings):
            mapper.finding(findings, "FHIR-MAP-010", base)
        return None, findings
    if not header_ok:
        return None, findings
    defaults = spec.get("defaults") or {}
    batch = []
    for day in sorted(by_day):
        lines = by_day[day]
        for start in range(0, len(lines), MAX_LINES_PER_CLAIM):
            part = lines[start:start + MAX_LINES_PER_CLAIM]
            suffix = f"{day:%Y%m%d}" + (f"-{start // MAX_LINES_PER_CLAIM + 1}" if start else "")
            identifier = claim_id(spec["claim_id"], careplan_id=header["careplan_id"],
                                  service_day=suffix)
            try:
                encounter = _encounter(identifier, header, part, settings, defaults)
            except ValidationError as exc:  # a value the canonical model does not take
                first = exc.errors()[0]
                mapper.finding(findings, "FHIR-MAP-008", base, claim=identifier,
                               reason=f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
                continue
            place = ClaimPlace(
                claim=base, member=f"{base}.subject",
                lines=[f"{base}.activity[{index}].detail.code" for index, _ in part],
                label=f"claim {identifier}")
            batch.append((encounter, place))
    return batch, findings


def _checked(batch: list, rules: EncounterRules, catalogue: RuleCatalogue,
             findings: list[Finding]) -> list[Encounter]:
    """The encounters of ``batch`` the ECM rules accept; their findings go to ``findings``."""
    accepted = []
    for (encounter, place), found in zip(batch, rules.check(batch)):
        findings.extend(found)
        errors = [f for f in found if f.severity is Severity.ERROR]
        if errors:
            finding = catalogue.finding("FHIR-MAP-008", place.claim, None,
                                        claim=encounter.claim.id,
                                        reason=f"{errors[0].rule} at {errors[0].location}")
            if finding:
                findings.append(finding)
            continue
        accepted.append(encounter)
    return accepted


def _member_address(header: dict) -> Address | None:
    parts = [header.get(k) for k in ("member_address_line1", "member_city", "member_state",
                                     "member_zip")]
    if not all(parts):  # the 837P needs the whole address or none
        return None
    line1, city, state, postal = parts
    return Address(line1=line1.upper(), city=city.upper(), state=state.upper(),
                   postal_code=postal)


def _encounter(identifier: str, header: dict, part: list[tuple[int, dict]],
               settings: EnvelopeSettings, defaults: dict) -> Encounter:
    claim_pos = part[0][1].get("place_of_service") or str(defaults["place_of_service"])
    lines = []
    for number, (_, v) in enumerate(part, start=1):
        code, *inline = v["procedure"]
        modifiers = list(dict.fromkeys([*inline, *(m.upper() for m in v.get("modifiers") or [])]))
        pos = v.get("place_of_service") or str(defaults["place_of_service"])
        end = v.get("service_date_end")
        rendering = None
        if v.get("rendering_npi") and v["rendering_npi"] != header["billing_npi"]:
            rendering = RenderingProvider(last_name=(v.get("rendering_last_name") or
                                                     "RENDERING PROVIDER").upper(),
                                          first_name=(v.get("rendering_first_name") or
                                                      "").upper() or None,
                                          npi=v["rendering_npi"])
        lines.append(ServiceLine(
            line_number=number, procedure_code=code, modifiers=modifiers[:4],
            charge=v.get("charge") if v.get("charge") is not None else Decimal(0),
            unit_type=str(defaults.get("unit_type", "UN")), units=v["units"],
            place_of_service=pos if pos != claim_pos else None,
            service_date=v["service_date"],
            service_date_end=end if end and end != v["service_date"] else None,
            rendering_provider=rendering))
    first_name = header.get("billing_first_name")
    submitter, receiver = settings.parties()
    return Encounter(
        submitter=submitter, receiver=receiver,
        billing_provider=BillingProvider(
            name=header["billing_name"].upper(),
            first_name=first_name.upper() if first_name else None,
            npi=header["billing_npi"], tin=header["billing_tin"],
            address=Address(line1=header["billing_address_line1"].upper(),
                            city=header["billing_city"].upper(),
                            state=header["billing_state"].upper(),
                            postal_code=header["billing_zip"])),
        member=Member(cin=header["member_cin"], last_name=header["member_last_name"].upper(),
                      first_name=(header.get("member_first_name") or "").upper() or None,
                      birth_date=header.get("member_birth_date"),
                      gender=header.get("member_gender"), address=_member_address(header)),
        payer=receiver.model_copy(),
        claim=Claim(id=identifier, total_charge=sum((line.charge for line in lines), Decimal(0)),
                    place_of_service=claim_pos,
                    frequency_code=str(defaults.get("claim_frequency", "1")),
                    diagnosis_codes=(header.get("diagnosis_codes") or
                                     [str(defaults["diagnosis_code"])])[:12],
                    prior_authorization=header.get("prior_authorization"),
                    lines=lines),
    )
