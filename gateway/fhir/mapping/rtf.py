"""Task and CarePlan → rows of the Return Transmission File (``mappings/fhir/task-to-rtf.yaml``,
``careplan-to-rtf.yaml``), written with the columns of an RTF layout
(``mappings/layouts/rtf/default.yaml`` unless told otherwise)."""

from __future__ import annotations

import csv
from datetime import date
from typing import Any, TextIO

from gateway.fhir.mapping.engine import (
    Mapper,
    entry_base,
    field_specs,
    load_spec,
    sources_of,
    wrong_type,
)
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import Layout, load_layout
from gateway.tabular.cells import neutralise
from gateway.x12.writer import EnvelopeSettings, envelope_settings


def _text(value: Any, layout: Layout) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, date):
        return value.strftime(layout.date_formats[0])
    if isinstance(value, (list, tuple)):
        return ";".join(_text(v, layout) for v in value)
    return str(value)


def layout_row(values: dict, layout: Layout, base: str, catalogue: RuleCatalogue
               ) -> tuple[dict[str, str], list[Finding]]:
    """``values`` (RTF field names) as a row keyed by the layout's column headers, in column
    order, with a finding for every column the layout requires that stays empty."""
    row = {column.headers[0]: _text(values.get(column.field), layout)
           for column in layout.columns if column.type != "flags"}
    findings: list[Finding] = []
    for column in layout.columns:
        if column.type == "flags" or row[column.headers[0]]:
            continue
        needed = column.required
        for condition in column.required_with:
            other = values.get(condition.field)
            if other not in (None, "", []) and (condition.values is None
                                                or other in condition.values):
                needed = True
        if needed:
            found = catalogue.finding("FHIR-MAP-007", base, None, column=column.headers[0],
                                      target=column.field)
            if found:
                findings.append(found)
    return row, findings


def typed_row(row: dict[str, str], layout: Layout) -> dict:
    """The inverse of :func:`layout_row` for the values it writes: a row keyed by the layout's
    headers back to field names with booleans, dates and lists typed (what a file read with
    the layout gives), for the gateway's own registries."""
    from datetime import datetime

    values: dict = {}
    for column in layout.columns:
        if column.type == "flags":
            continue
        text = row.get(column.headers[0], "")
        if text in ("", None):
            values[column.field] = [] if column.type == "list" else None
        elif column.type == "bool":
            values[column.field] = text == "Y"
        elif column.type == "date":
            values[column.field] = datetime.strptime(text, layout.date_formats[0]).date()
        elif column.type == "list":
            values[column.field] = [v for v in text.split(";") if v]
        else:
            values[column.field] = text
    return values


def write_rtf_csv(rows: list[dict[str, str]], out: TextIO, layout: str = "default") -> None:
    """RTF rows (from :func:`task_to_rtf` / :func:`careplan_to_rtf`) as CSV with the header row
    of the layout."""
    headers = [c.headers[0] for c in load_layout("rtf", layout).columns if c.type != "flags"]
    writer = csv.DictWriter(out, fieldnames=headers, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: neutralise(v) for k, v in row.items()} for row in rows)


def _rows(data: dict, resource_type: str, spec_name: str, extra: dict, layout: str,
          catalogue: RuleCatalogue) -> tuple[list[dict[str, str]], list[Finding]]:
    sources = sources_of(data, resource_type)
    if not sources:
        found = wrong_type(data, resource_type, catalogue)
        return [], [found] if found else []
    spec = load_spec(spec_name)
    mapper = Mapper(spec, catalogue)
    specs = field_specs(spec, "fields", spec_name)
    target = load_layout("rtf", layout)
    rows, findings = [], []
    for source in sources:
        base = entry_base(data, source)
        found: list[Finding] = []
        values = mapper.values(specs, source.resource, source, base, found,
                               roots=spec.get("roots"), fill=extra)
        values.update({k: v for k, v in extra.items() if values.get(k) in (None, "")})
        row, missing = layout_row(values, target, base, catalogue)
        findings.extend(found)
        findings.extend(missing)
        rows.append(row)
    return rows, findings


def tasks_to_rtf(data: dict, today: date | None = None, layout: str = "default",
                 catalogue: RuleCatalogue | None = None, fill: dict | None = None
                 ) -> tuple[list[dict[str, str]], list[Finding]]:
    """Every Task of ``data`` (a Task or a Bundle) as an RTF row; ``fill`` gives values (RTF
    field names) for the fields the Task leaves empty (what the gateway knows: the sender,
    the member's plan)."""
    extra = {**(fill or {}), "rtf_production_date": today or date.today()}
    return _rows(data, "Task", "task-to-rtf", extra, layout, catalogue or default_catalogue())


def task_to_rtf(resource: dict, today: date | None = None, layout: str = "default",
                catalogue: RuleCatalogue | None = None) -> tuple[dict[str, str], list[Finding]]:
    """A Task (or the first Task of a Bundle) as one RTF row keyed by the layout's headers."""
    rows, findings = tasks_to_rtf(resource, today, layout, catalogue)
    return (rows[0] if rows else {}), findings


def consents_to_rtf(data: dict, today: date | None = None, layout: str = "data-sharing",
                    catalogue: RuleCatalogue | None = None, fill: dict | None = None
                    ) -> tuple[list[dict[str, str]], list[Finding]]:
    """Every Consent of ``data`` (the member's written authorization to share data, ECM Policy
    Guide 002:1589-1599) as an RTF row of the data-sharing layout
    (``mappings/fhir/consent-to-rtf.yaml``); ``fill`` as for :func:`tasks_to_rtf`."""
    extra = {**(fill or {}), "rtf_production_date": today or date.today()}
    return _rows(data, "Consent", "consent-to-rtf", extra, layout,
                 catalogue or default_catalogue())


def careplans_to_rtf(data: dict, today: date | None = None,
                     settings: EnvelopeSettings | None = None, layout: str = "default",
                     catalogue: RuleCatalogue | None = None, fill: dict | None = None
                     ) -> tuple[list[dict[str, str]], list[Finding]]:
    """Every CarePlan of ``data`` as an RTF row; the plan (MCP identifier and name) is the
    envelope profile's receiver; ``fill`` as for :func:`tasks_to_rtf`."""
    settings = settings or envelope_settings("plan-default")
    extra = {**(fill or {}), "rtf_production_date": today or date.today(),
             "mcp_identifier": settings.receiver.id, "mcp_name": settings.receiver.name}
    return _rows(data, "CarePlan", "careplan-to-rtf", extra, layout,
                 catalogue or default_catalogue())


def careplan_to_rtf(resource: dict, today: date | None = None,
                    settings: EnvelopeSettings | None = None, layout: str = "default",
                    catalogue: RuleCatalogue | None = None
                    ) -> tuple[dict[str, str], list[Finding]]:
    """A CarePlan (or the first of a Bundle) as one RTF row keyed by the layout's headers."""
    rows, findings = careplans_to_rtf(resource, today, settings, layout, catalogue)
    return (rows[0] if rows else {}), findings
