"""Member Information File rows → FHIR R4 Bundle for a provider's EHR
(``mappings/fhir/mif-to-bundle.yaml``): Patient, Coverage, POF Conditions, EpisodeOfCare (ECM
benefit period), CareTeam (Lead Care Manager), the ECM provider and the plan."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from gateway.fhir.mapping.engine import TemplateEntries, systems
from gateway.findings import Finding
from gateway.tabular import read_table
from gateway.tabular.layouts import codesets_dir
from gateway.x12.writer import EnvelopeSettings, envelope_settings

SPEC = "mif-to-bundle"


def _pof_labels() -> dict[str, str]:
    with open(codesets_dir() / "pof.csv", encoding="utf-8", newline="") as handle:
        return {row["code"]: row["label"] for row in csv.DictReader(handle)}


def _viewer(today: date, settings: EnvelopeSettings):
    labels = _pof_labels()
    plan = {"id": settings.receiver.id, "name": settings.receiver.name}

    def view(row: dict, _position: int) -> dict:
        values = dict(row)
        end = row.get("ecm_benefit_end")
        values["episode_status"] = "finished" if end and end < today else "active"
        values["pofs"] = [{"code": code, "label": labels.get(code)}
                          for code in row.get("pof_codes") or []]
        name = (row.get("lead_care_manager_name") or "").strip()
        given, _, family = name.rpartition(" ")
        values["lead_care_manager_given"] = given or None
        values["lead_care_manager_family"] = family or None
        values["plan"] = plan
        values["sys"] = systems()
        return values

    return view


def mif_to_bundle(source: Path | str | Iterable[dict], today: date | None = None,
                  settings: EnvelopeSettings | None = None) -> dict:
    """The Bundle (type collection) of a MIF file (path; rows with errors are left out) or of
    MIF rows already read (dicts of the layout's field names)."""
    bundle, _ = mif_file_to_bundle(source, today, settings)
    return bundle


def mif_file_to_bundle(source: Path | str | Iterable[dict], today: date | None = None,
                       settings: EnvelopeSettings | None = None, layout: str | None = None
                       ) -> tuple[dict, list[Finding]]:
    """As :func:`mif_to_bundle`, with the findings of reading the file."""
    findings: list[Finding] = []
    if isinstance(source, (str, Path)):
        result = read_table(Path(source), "mif", layout)
        rows = [values for _, values in result.rows]
        findings = result.findings
    else:
        rows = list(source)
    entries = TemplateEntries(SPEC, _viewer(today or date.today(),
                                            settings or envelope_settings("plan-default")))
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [entry for row in rows for entry in entries.of(row)]}
    return bundle, findings
