"""Provider-directory conversions between the directory roster (CSV/XLSX), the X12 274 and a
FHIR Plan-Net Bundle, all through the directory model, one group at a time.

The caller (CLI, pipeline) supplies the envelope settings, control numbers and clock; this
module only reads and writes formats."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from gateway.directory.model import Directory, Group
from gateway.findings import Finding
from gateway.x12.writer import ControlNumbers, EnvelopeSettings

SOURCES = ("directory", "274", "plannet")
TARGETS = {"directory": ("274", "fhir"), "274": ("fhir", "csv", "274"),
           "plannet": ("274", "csv")}


@dataclass
class DirectorySource:
    """An opened directory: its header, its groups (iterate once) and, once iterated, its
    findings and counts."""

    kind: str
    directory: Directory
    groups: Iterable[Group]
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def plan_header(settings: EnvelopeSettings | None) -> Directory:
    """The information source of a directory read from a roster: the plan of the envelope."""
    if settings is None:
        return Directory(plan_id="", plan_name="")
    return Directory(plan_id=settings.submitter.id, plan_name=settings.submitter.name,
                     receiver_id=settings.receiver.id, receiver_name=settings.receiver.name,
                     contact_name=settings.submitter.contact_name or "",
                     contact_phone=settings.submitter.contact_phone or "")


def open_directory(path: Path, kind: str, settings: EnvelopeSettings | None = None
                   ) -> DirectorySource:
    """``kind``: ``directory`` (roster), ``274`` or ``plannet``. Raises LayoutError (roster
    whose header fits no layout), NotX12Error, PlanNetError for input that is not of the kind."""
    if kind == "directory":
        from gateway.directory.roster import DirectoryRosterReader

        reader = DirectoryRosterReader(path)
        source = DirectorySource(kind, plan_header(settings), reader, reader.findings,
                                 reader.stats)
        return source
    if kind == "274":
        from gateway.directory.x274 import Directory274Reader

        reader = Directory274Reader(path)
        source = DirectorySource(kind, reader.directory, reader, reader.findings, reader.stats)
        return source
    if kind == "plannet":
        from gateway.directory.plannet import PlanNetReader

        reader = PlanNetReader(path)
        directory, groups = reader.read()
        if not directory.plan_id and settings is not None:
            header = plan_header(settings)
            directory.plan_id, directory.plan_name = header.plan_id, \
                directory.plan_name or header.plan_name
        return DirectorySource(kind, directory, groups, reader.findings, reader.stats)
    raise ValueError(f"unknown directory kind {kind!r}")


def _groups_with_header(source: DirectorySource) -> Iterator[Group]:
    """Groups of a source; for a 274 the header is known once the first group is read."""
    yield from source.groups


def write_274(source: DirectorySource, out: TextIO, settings: EnvelopeSettings,
              controls: ControlNumbers, when: datetime,
              select=None) -> int:
    """Write ``source`` (optionally only the groups/sites ``select(group)`` returns) as a 274;
    returns the number of providers written."""
    from gateway.directory.x274 import Directory274Writer

    groups = iter(_groups_with_header(source))
    first = next(groups, None)  # a 274 source fills its header while reading its first group
    writer = Directory274Writer(out, source.directory, settings, controls, when)
    for group in ([first] if first is not None else []):
        _write_selected(writer, group, select)
    for group in groups:
        _write_selected(writer, group, select)
    return writer.close()


def _write_selected(writer, group: Group, select) -> None:
    if select is None:
        writer.write(group)
        return
    chosen = select(group)
    if chosen is not None and chosen.sites:
        writer.write(chosen)


def write_plannet(source: DirectorySource, out: TextIO) -> int:
    from gateway.directory.plannet import PlanNetBundleWriter

    groups = iter(source.groups)
    first = next(groups, None)
    writer = PlanNetBundleWriter(out, source.directory)
    if first is not None:
        writer.write(first)
    for group in groups:
        writer.write(group)
    return writer.close()


def write_roster(source: DirectorySource, out: TextIO) -> int:
    from gateway.directory.roster import DirectoryRosterWriter

    writer = DirectoryRosterWriter(out)
    for group in source.groups:
        writer.write(group)
    return writer.rows
