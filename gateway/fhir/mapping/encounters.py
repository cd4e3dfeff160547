"""Canonical encounters → FHIR R4 Bundle of Encounter + Claim (``mappings/fhir/
encounters-to-bundle.yaml``). Entries are generated one encounter at a time, so a Bundle of any
size is written with :func:`write_encounter_bundle` in bounded memory (only the keys of the shared
Patient / Organization / Coverage / Practitioner entries already written are kept)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from gateway.fhir.mapping.engine import CollectionBundleWriter, TemplateEntries, systems
from gateway.model.encounter import Encounter

SPEC = "encounters-to-bundle"


def dotted_icd10(code: str) -> str:
    """ICD-10-CM as FHIR writes it (``E119`` → ``E11.9``); 837P HI carries it without the dot."""
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 and "." not in code else code


def _view(encounter: Encounter, position: int) -> dict:
    data = encounter.model_dump()
    claim = data["claim"]
    billing = data["billing_provider"]
    billing["display_name"] = " ".join(p for p in (billing.get("first_name"), billing["name"])
                                       if p)
    team: dict[str, dict] = {}
    for line in [encounter.rendering_provider] + [x.rendering_provider
                                                   for x in encounter.claim.lines]:
        if line is not None and line.npi not in team:
            team[line.npi] = {"sequence": len(team) + 1, "npi": line.npi,
                              "last_name": line.last_name, "first_name": line.first_name}
    claim_level = encounter.rendering_provider.npi if encounter.rendering_provider else None
    lines = []
    days = []
    for source, line in zip(encounter.claim.lines, claim["lines"]):
        end = source.service_date_end
        days.extend(d for d in (source.service_date, end) if d)
        rendering = source.rendering_provider.npi if source.rendering_provider else claim_level
        lines.append({
            **line, "sequence": source.line_number,
            "place_of_service": source.place_of_service or encounter.claim.place_of_service,
            "served_on": None if end else source.service_date,
            "period_start": source.service_date if end else None,
            "period_end": end,
            "care_team_sequence": team[rendering]["sequence"] if rendering else None,
        })
    return {
        "member": data["member"], "billing": billing, "payer": data["payer"], "claim": claim,
        "claim_key": f"{position}|{encounter.claim.id}",
        "service_from": min(days), "service_to": max(days),
        "created": encounter.envelope.created or max(days),
        "diagnoses": [{"code": dotted_icd10(code), "sequence": i}
                      for i, code in enumerate(encounter.claim.diagnosis_codes, start=1)],
        "procedure_codes": list(dict.fromkeys(line.procedure_code
                                              for line in encounter.claim.lines)),
        "lines": lines, "care_team": list(team.values()), "sys": systems(),
    }


def encounter_entries(encounters: Iterable[Encounter]) -> Iterator[dict]:
    """Bundle entries (``fullUrl`` + ``resource``) for the encounters, shared resources once."""
    entries = TemplateEntries(SPEC, _view)
    for encounter in encounters:
        yield from entries.of(encounter)


def encounters_to_bundle(encounters: Iterable[Encounter]) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": list(encounter_entries(encounters))}


class EncounterBundleWriter(CollectionBundleWriter):
    """Writes a Bundle (type collection) entry by entry, one line per entry."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, TemplateEntries(SPEC, _view))


def write_encounter_bundle(encounters: Iterable[Encounter], out: TextIO) -> int:
    """Write the Bundle of the encounters incrementally; returns the number of entries."""
    writer = EncounterBundleWriter(out)
    for encounter in encounters:
        writer.write(encounter)
    return writer.close()


def x12_to_bundle(source: Path, out: TextIO) -> tuple[int, list]:
    """An 837P → its encounters as a Bundle, streamed as the claims are read; returns (entries
    written, findings of the X12 validation). Claims that cannot become canonical encounters
    are left out (the findings say why)."""
    from gateway.x12.validate import validate_x12

    writer = EncounterBundleWriter(out)

    def deliver(claim) -> None:
        if claim.encounter is not None:
            writer.write(claim.encounter)

    with open(source, "rb") as handle:
        result = validate_x12(handle, keep_encounters=True, on_claim=deliver)
    return writer.close(), result.findings
