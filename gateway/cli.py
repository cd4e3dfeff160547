"""``ecm-gateway``: validate, convert, acknowledge and serve.

Exit codes: 0 no error finding (warnings allowed); 1 at least one error finding; 2 usage error
or a file that is not of any known kind. No Python traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
# only what `validate` needs is imported here (start-up time: a small file is checked in well
# under a second); each other command imports its own modules when it runs.
# tests/test_cli_startup.py keeps pydantic, FastAPI, openpyxl, ... out of this path.
from gateway.findings import Finding, Severity
from gateway.reports import KINDS, FileReport, UnsupportedKind, validate_file
from gateway.rules import UnknownPartner
from gateway.settings import current as gateway_settings
from gateway.sniff import UnknownKind, sniff
from gateway.x12.reader import NotX12Error
from gateway.x12.validate import DEFAULT_ENGINE, ENGINES, validate_x12

if TYPE_CHECKING:
    from gateway.x12.writer import ControlNumbers

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecm-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="validate files and print the findings")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--kind", choices=KINDS, default="auto")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                          help="X12 implementation-guide engine: native (default) or pyx12 "
                               "(the reference implementation, much slower)")
    validate.add_argument("--jobs", type=int, default=1, metavar="N",
                          help="share the X12 validation among N processes (the file cut "
                               "into byte ranges at transaction-set boundaries; same output "
                               "as one; a file with one transaction set uses one process)")
    _registry_options(validate)

    convert = sub.add_parser("convert", help="convert a file to another format")
    convert.add_argument("file", type=Path, metavar="FILE")
    convert.add_argument("--to", required=True,
                         choices=("837p", "274", "fhir", "rtf", "mif", "csv", "json"))
    convert.add_argument("-o", "--output", type=Path, default=None,
                         help="output file (default: standard output)")
    convert.add_argument("--envelope", default="plan-default",
                         help="envelope profile in profiles/envelopes/ for 837P output "
                              "(e.g. dhcs-encounters); 274 output uses dhcs-274 unless "
                              "another is named")
    convert.add_argument("--report", type=Path, default=None,
                         help="invoices: write the row-level results report here (.csv or "
                              ".xlsx)")
    _store_option(convert)
    _registry_options(convert)

    replay = sub.add_parser("replay", help="process a stored submission again (operator)")
    replay.add_argument("submission_id", metavar="ID")
    replay.add_argument("--force", action="store_true",
                        help="replay a submission already routed or delivered (documents "
                             "identical to ones delivered before are not delivered again)")
    replay.add_argument("--store", default=None, help="store URL (default: SQLite under ./var)")
    replay.add_argument("--partners", type=Path, default=None,
                        help="trading partners (default: var/partners.yaml)")

    template = sub.add_parser("template", help="write a blank invoice template (CSV or XLSX)")
    template.add_argument("kind", choices=("invoice",))
    template.add_argument("-o", "--output", type=Path, required=True,
                          help="the template file (.csv, or .xlsx with a data dictionary)")
    template.add_argument("--layout", default="default",
                          help="invoice layout in mappings/invoice/layouts/")

    ack = sub.add_parser("ack", help="write TA1 / 999 / 277CA for an inbound interchange")
    ack.add_argument("file", type=Path, metavar="FILE")
    ack.add_argument("-o", "--output-dir", type=Path, default=Path("."))
    _store_option(ack)
    _registry_options(ack)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--store", default=None, help="store URL (default: SQLite under ./var)")
    serve.add_argument("--partners", type=Path, default=None,
                       help="trading partners and routes (YAML, tokens hashed)")
    serve.add_argument("--drop", type=Path, default=None,
                       help="root of the partners' file-drop folders (<root>/<partner>/inbox, "
                            "outbox, archive); --demo uses var/drop")
    serve.add_argument("--demo", action="store_true",
                       help="demo partners (config/demo/partners.yaml) with fresh tokens, "
                            "printed at start-up")
    serve.add_argument("--queue", default=None, metavar="URL",
                       help="redis://host:port/db: process in Celery workers "
                            "(`ecm-gateway worker`); default: worker threads in this process")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker threads of the embedded queue (default 1)")
    serve.add_argument("--api-workers", type=int, default=None, metavar="N",
                       help="N API processes over the same store (uvicorn workers; default "
                            "the api_workers setting, 1). One of them (the leader) also "
                            "watches the file drop and runs the schedules")

    partners = sub.add_parser("partners", help="onboard trading partners: add, rotate-token, "
                                                "disable, list (tokens shown once, stored hashed)")
    partners.add_argument("--partners", type=Path, default=None, metavar="FILE",
                          help="the partners file (default: var/partners.yaml)")
    partners.add_argument("--store", default=None, metavar="URL",
                          help="the store whose audit log records the change (default: SQLite "
                               "under ./var)")
    actions = partners.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a partner and print its token once")
    add.add_argument("partner_id", metavar="ID")
    add.add_argument("--role", required=True, choices=("plan", "provider", "state"))
    add.add_argument("--name", default="")
    add.add_argument("--envelope", default=None, help="envelope profile for 837P sent to it")
    add.add_argument("--plan-code", default="")
    for option in ("--payer-id", "--npi", "--tin", "--x12-sender-id"):
        add.add_argument(option, action="append", default=[], help="may be repeated")
    rotate = actions.add_parser("rotate-token", help="a new token (printed once); the old one "
                                                     "stops working")
    rotate.add_argument("partner_id", metavar="ID")
    disable = actions.add_parser("disable", help="the partner's token stops working")
    disable.add_argument("partner_id", metavar="ID")
    actions.add_parser("list", help="partners, roles and whether they can sign in")

    purge = sub.add_parser("purge", help="remove member data past its retention period "
                                         "(payloads, documents, findings), keeping the audit "
                                         "trail")
    purge.add_argument("--store", default=None, metavar="URL",
                       help="store URL (default: the settings' store, else SQLite under "
                            "./var); the periods are the retention_*_days settings")

    report = sub.add_parser("report", help="make a report from files (outreach tracking, "
                                           "POF evidence, data-sharing authorizations)")
    reports = report.add_subparsers(dest="report", required=True)
    outreach = reports.add_parser(
        "outreach", help="the quarterly ECM outreach tracking report (ECM Policy Guide "
                         "002:1885-1912) from OTF and MIF files")
    outreach.add_argument("--quarter", action="append", required=True, metavar="YYYYQn",
                          help="the quarter, e.g. 2026Q3 (repeat for several)")
    outreach.add_argument("--otf", type=Path, nargs="+", action="extend", default=[],
                          metavar="FILE",
                          help="outreach tracker files (CSV or XLSX): one or more, or repeat")
    outreach.add_argument("--mif", type=Path, nargs="+", action="extend", default=[],
                          metavar="FILE",
                          help="member information files (the members targeted): one or more, "
                               "or repeat")
    outreach.add_argument("--plan", default="all", metavar="ID",
                          help="the plan the report is for (its label)")
    outreach.add_argument("--format", choices=("csv", "xlsx"), default=None,
                          help="default: by the --output suffix, else csv")
    outreach.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                          help="write the report here (default: standard output, CSV only)")

    evidence = reports.add_parser(
        "pof-evidence", help="members whose utilization Population of Focus (high utilizer, "
                             "SMI/SUD) lacks evidence in the claims history (ECM Policy Guide "
                             "002:411-443, 002:474-482)")
    evidence.add_argument("--mif", type=Path, nargs="+", action="extend", default=[],
                          metavar="FILE",
                          help="member information files (the members and their POFs): one or "
                               "more, or repeat")
    evidence.add_argument("--history", type=Path, nargs="+", action="extend", default=[],
                          metavar="PATH",
                          help="claims extracts, accepted 837P or encounter-lines CSV, or "
                               "folders of them: one or more, or repeat")
    evidence.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                          help="write the CSV here (default: standard output)")
    sharing = reports.add_parser(
        "data-sharing", help="members' data-sharing authorizations (ECM Policy Guide "
                             "002:1589-1599) from RTF files, with their status on a day")
    sharing.add_argument("--rtf", type=Path, nargs="+", action="extend", default=[],
                         metavar="FILE",
                         help="RTFs with the data-sharing columns (CSV or XLSX): one or more, "
                              "or repeat")
    sharing.add_argument("--plan", default="all", metavar="ID", help="the plan (its label)")
    sharing.add_argument("--as-of", default=None, metavar="YYYY-MM-DD",
                         help="the day the status is for (default: today)")
    sharing.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                         help="write the CSV here (default: standard output)")

    worker = sub.add_parser("worker", help="run a Celery worker for a scale-out deployment")
    worker.add_argument("--store", required=True, metavar="URL",
                        help="the store every worker and the API share (postgresql+psycopg://…)")
    worker.add_argument("--queue", required=True, metavar="URL", help="redis://host:port/db")
    worker.add_argument("--partners", type=Path, required=True, metavar="FILE",
                        help="trading partners and routes (the same file as the API's)")
    worker.add_argument("--concurrency", type=int, default=1,
                        help="worker processes (default 1)")
    worker.add_argument("--name", default=None, help="Celery node name (default: by pid)")
    return parser


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, metavar="URL",
                        help="the store whose control-number counters outgoing envelopes use "
                             "(default: the same SQLite store under ./var as `serve`)")


def _registry_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "ECM registries", "given any of these, 837P claims, invoice lines and CarePlan "
                          "activities are also checked against the ECM rules "
                          "(profiles/rules/ecm.yaml); each option may be repeated")
    group.add_argument("--members", type=Path, action="append", default=[], metavar="FILE",
                       help="member information file (MIF, CSV or XLSX)")
    group.add_argument("--providers", type=Path, action="append", default=[], metavar="FILE",
                       help="ECM / Community Supports provider roster (CSV or XLSX)")
    group.add_argument("--history", type=Path, action="append", default=[], metavar="PATH",
                       help="encounter history: an accepted 837P, an encounter-lines CSV, a "
                            "plan's claims extract (with diagnoses), or a folder of them")
    group.add_argument("--cs-authorizations", type=Path, action="append", default=[],
                       metavar="FILE", help="Community Supports authorization file (CSV or XLSX)")
    group.add_argument("--received", type=date.fromisoformat, default=None, metavar="DATE",
                       help="invoices: the date the invoice was received (YYYY-MM-DD, default "
                            "today), for the future-date and timely-filing checks")
    group.add_argument("--partner", default=None, metavar="ID",
                       help="apply this trading partner's rule overrides "
                            "(profiles/rules/overrides/ID.yaml) and, for a plan, its ECM "
                            "settings (profiles/plans/ID.yaml: presumptive authorization); "
                            "either file may be missing, not both")


def _ecm_rules(args) -> tuple[object | None, list[FileReport]]:
    """The ECM rule engine and the reports on the registry files, when registries are given."""
    if not (args.members or args.providers or args.history or args.cs_authorizations):
        if args.partner:
            raise UsageError("--partner applies the ECM rules: give --members, --providers "
                             "or --history too")
        return None, []
    from gateway.ecm.rules import EncounterRules
    from gateway.registry.load import load_registries
    from gateway.registry.store import Registry

    from gateway.ecm.plans import partner_rules, presumptive_of

    catalogue = partner_rules(args.partner)
    registry = Registry.in_memory_file()  # (a rules worker process opens it too)
    presumptive = presumptive_of(args.partner)
    reports = load_registries(registry, args.members, args.providers, args.history,
                              args.cs_authorizations, presumptive=presumptive)
    return EncounterRules(registry, catalogue=catalogue, presumptive=presumptive), reports


# -- validate -----------------------------------------------------------------------------------
def _text_report(report: FileReport) -> str:
    verdict = "valid" if report.valid else "INVALID"
    stats = report.stats
    counts = ""
    if "rows" in stats and "accepted_rows" in stats:
        counts = (f" — {stats['rows']} rows: {stats['accepted_rows']} accepted, "
                  f"{stats['rejected_rows']} rejected")
    if "rows" in stats and "claims" in stats:
        counts += f", {stats['claims']} claims"
    elif "claims" in stats:
        counts = (f" — {stats['claims']} claims, {stats['lines']} lines: "
                  f"{stats['accepted_claims']} accepted, {stats['rejected_claims']} rejected")
    lines = [f"{report.path}: {report.kind} {verdict}{counts}"]
    for f in report.findings:
        where = f.location + (f" (segment {f.segment})" if f.segment else "")
        lines.append(f"  {f.severity.value:<7} {f.rule:<14} {where}: {f.message}")
    return "\n".join(lines)


def cmd_validate(args) -> int:
    rules, reports = _ecm_rules(args)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    for path in args.files:
        with _progress_bar(path) as progress:
            reports.append(validate_file(path, args.kind, rules=rules, received=args.received,
                                         engine=args.engine, jobs=args.jobs,
                                         progress=progress))
    if args.format == "json":
        json.dump({"files": [r.as_dict() for r in reports]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(_text_report(r) for r in reports))
    return EXIT_OK if all(r.valid for r in reports) else EXIT_FINDINGS


PROGRESS_MIN_BYTES = 5 * 1024 * 1024


@contextmanager
def _progress_bar(path: Path):
    """A rich progress bar on stderr for a large file on a terminal; nothing when piped."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0
    if size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from rich.console import Console

    import time

    # refreshed from the callback, not by rich's refresh thread: the process stays
    # single-threaded, so the ECM rules may run in a forked worker (gateway/ecm/pipelined.py)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                  auto_refresh=False) as bar:
        task = bar.add_task(Path(path).name, total=size)
        shown = [0.0]

        def report(done: int) -> None:
            now = time.monotonic()
            due = now - shown[0] >= 0.1 or done >= size
            if due:
                shown[0] = now
            bar.update(task, completed=done, refresh=due)

        yield report


# -- convert ------------------------------------------------------------------------------------
@contextmanager
def _output(path: Path | None):
    if path is None:
        yield sys.stdout
        return
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            yield handle
        partial.replace(path)  # never leave a half-written output under the real name
    finally:
        partial.unlink(missing_ok=True)


def _summarise(findings: list[Finding]) -> int:
    errors = [f for f in findings if f.severity is Severity.ERROR]
    for f in findings:
        print(f"{f.severity.value}: {f.rule} {f.location}: {f.message}", file=sys.stderr)
    return EXIT_FINDINGS if errors else EXIT_OK


def cmd_convert(args) -> int:
    from gateway.conversion import TARGETS_BY_KIND, canonical_to_837p, read_canonical, x12_to_file
    from gateway.x12.writer import envelope_settings

    kind = sniff(args.file)
    if kind in ("csv", "xlsx"):
        from gateway.tabular import sniff_table

        kind = sniff_table(args.file) or kind
    if args.report and kind != "invoice":
        raise UsageError("--report goes with invoices")
    if kind in ("directory", "274") or (kind == "fhir" and args.to == "274"):
        return _convert_directory(args, "plannet" if kind == "fhir" else kind)
    if kind == "invoice" and args.to == "837p":
        return _convert_invoice(args)
    if kind == "fhir" or (args.to == "fhir" and kind in ("mif", "837p", "json")):
        return _convert_fhir(args, kind)
    allowed = TARGETS_BY_KIND.get(kind, ())
    if args.to not in allowed:
        what = f"{kind} → {args.to}"
        hint = f"; from {kind} this version converts to: {', '.join(allowed)}" if allowed \
            else f"; this version converts from: {', '.join(TARGETS_BY_KIND)}"
        raise UsageError(f"cannot convert {what}{hint}")
    if kind == "837p" and args.to == "837p":
        return _split(args)
    if kind == "837p":
        with _output(args.output) as out:
            done = x12_to_file(args.file, args.to, out)
        if done.skipped:
            print(f"{done.skipped} claim(s) could not be converted (see findings)",
                  file=sys.stderr)
        return _summarise(done.findings)
    settings = envelope_settings(args.envelope)
    encounters = read_canonical(args.file)
    with _output(args.output) as out:
        canonical_to_837p(encounters, out, settings, _control_numbers(args, settings), datetime.now())
    return EXIT_OK


def _convert_directory(args, kind: str) -> int:
    """Provider directory: roster (CSV/XLSX) → 274 or Plan-Net; 274 → Plan-Net, roster CSV or a
    clean 274; Plan-Net Bundle → 274 or roster CSV (gateway/directory)."""
    from gateway.x12.writer import envelope_settings

    from gateway.directory.convert import (
        TARGETS, open_directory, write_274, write_plannet, write_roster,
    )
    from gateway.directory.plannet import PlanNetError
    from gateway.tabular import LayoutError

    allowed = TARGETS[kind]
    shown = {"directory": "directory roster", "274": "274", "plannet": "FHIR Plan-Net"}[kind]
    if args.to not in allowed:
        raise UsageError(f"cannot convert {shown} → {args.to}; from a {shown} this version "
                         f"converts to: {', '.join(allowed)}")
    name = "dhcs-274" if args.envelope == "plan-default" else args.envelope
    settings = envelope_settings(name)
    try:
        source = open_directory(args.file, kind, settings)
    except LayoutError as exc:
        raise UsageError(str(exc)) from exc
    except NotX12Error as exc:
        raise UnknownKind(str(exc)) from exc
    except PlanNetError as exc:
        raise UsageError(f"{args.file}: {exc}") from exc
    with _output(args.output) as out:
        if args.to == "274":
            write_274(source, out, settings, _control_numbers(args, settings),
                      datetime.now())
        elif args.to == "fhir":
            write_plannet(source, out)
        else:
            write_roster(source, out)
    stats = source.stats
    print(f"{stats.get('groups', 0)} group(s), {stats.get('sites', 0)} site(s), "
          f"{stats.get('providers', 0)} provider(s) converted", file=sys.stderr)
    return _summarise(source.findings)


def _store(args):
    """The store whose counters the command line draws from: ``--store``, else the same
    ``./var`` store as ``serve`` (so the CLI and the server never hand out the same ISA13)."""
    from gateway.pipeline.store import Store

    return Store(getattr(args, "store", None) or gateway_settings().store_url())


def _control_numbers(args, settings) -> ControlNumbers:
    """The next ISA13 and GS06 of the envelope profile, from the one counter store
    (:func:`gateway.pipeline.delivery.envelope_numbers`)."""
    from gateway.pipeline.delivery import envelope_numbers

    store = _store(args)
    try:
        return envelope_numbers(store, settings.name)
    finally:
        store.close()


def _convert_fhir(args, kind: str) -> int:
    """FHIR in (CarePlan → rtf/837p, ServiceRequest → json, Task → rtf) or out (MIF, 837P or
    canonical JSON → a FHIR Bundle); the mappings are data in mappings/fhir/."""
    from gateway.x12.writer import envelope_settings

    from gateway.fhir.mapping.convert import FhirConversionUsageError, convert_fhir

    rules, registry_reports = _ecm_rules(args)
    for report in registry_reports:
        _summarise(report.findings)
    settings = envelope_settings(args.envelope)
    done = None
    try:
        with _output(args.output) as out:
            done = convert_fhir(args.file, args.to, out, settings=settings,
                                controls=_control_numbers(args, settings), when=datetime.now(),
                                rules=rules)
            if args.to == "837p" and not done.written:
                raise _NothingToWrite  # no empty 837P is left behind
    except _NothingToWrite:
        pass
    except FhirConversionUsageError as exc:
        raise UsageError(str(exc)) from exc
    code = _summarise(done.findings)
    if args.to == "837p" and not done.written:
        print("ecm-gateway: no claim to write: no completed ECM/CS activity became an "
              "encounter line", file=sys.stderr)
    return code


@contextmanager
def _progress(label: str):
    """A progress bar on standard error for long reads, when a person is watching."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                  TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda rows: bar.update(task, completed=rows)


class _NothingToWrite(Exception):
    """Every row was rejected: no 837P is left behind."""


def _convert_invoice(args) -> int:
    """Invoice → 837P of the valid claims, written as they are accepted (memory does not hold
    them all), and the row report (--report, CSV or XLSX)."""
    from gateway.x12.writer import envelope_settings

    from gateway.invoice.report import write_report
    from gateway.reports import validate_invoice
    from gateway.x12.write837 import Encounter837Writer

    rules, registry_reports = _ecm_rules(args)  # None: the code-set rules alone
    for report in registry_reports:
        _summarise(report.findings)
    settings = envelope_settings(args.envelope)
    result = None
    try:
        with _output(args.output) as out:
            writer = Encounter837Writer(out, settings, _control_numbers(args, settings), datetime.now())
            with _progress(f"reading {args.file.name}") as progress:
                report = validate_invoice(args.file, rules, args.envelope, progress=progress,
                                          received=args.received, on_encounter=writer.write)
            result = report.invoice
            if not result.claims:
                raise _NothingToWrite
            writer.close()
    except _NothingToWrite:
        pass
    if args.report:
        write_report(result, args.report)
    print(f"{result.accepted_rows} row(s) accepted into {result.claims} claim(s), "
          f"{result.rejected_rows} rejected", file=sys.stderr)
    code = _summarise(report.findings)
    if not result.claims:
        print("ecm-gateway: no claim to write: every row was rejected", file=sys.stderr)
        return EXIT_FINDINGS
    return code


def _split(args) -> int:
    """837P → the accepted claims as a clean 837P for the receiving partner."""
    from gateway.conversion import split_837p
    from gateway.x12.writer import envelope_settings

    rules, registry_reports = _ecm_rules(args)
    for report in registry_reports:
        _summarise(report.findings)
    settings = envelope_settings(args.envelope)
    done = None
    try:
        with _output(args.output) as out:
            done = split_837p(args.file, out, settings, _control_numbers(args, settings),
                              datetime.now(), rules=rules)
            if not done.accepted:
                raise _NothingToWrite  # no empty 837P is left behind
    except _NothingToWrite:
        pass
    if done.accepted:
        print(f"{done.accepted} claim(s) accepted and written, {done.rejected} rejected",
              file=sys.stderr)
    code = _summarise(done.result.findings)
    if not done.accepted:
        if code != EXIT_FINDINGS:  # no claim at all, and nothing wrong with that
            raise UsageError(f"{args.file}: no claim in the file: nothing to write")
        print(f"ecm-gateway: no claim to write: every claim ({done.rejected}) was rejected",
              file=sys.stderr)
        return EXIT_FINDINGS
    return code


# -- ack ----------------------------------------------------------------------------------------
def cmd_ack(args) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    rules, registry_reports = _ecm_rules(args)
    for report in registry_reports:
        _summarise(report.findings)
    from gateway.x12.acks import AckControls, AckParty, acknowledge

    try:
        result = validate_x12(str(args.file), rules=rules)
    except NotX12Error as exc:
        raise UnknownKind(str(exc)) from exc
    from gateway.pipeline.delivery import ack_numbers

    store = _store(args)
    try:
        isa, gs = ack_numbers(store)
    finally:
        store.close()
    acks = acknowledge(result, controls=AckControls(isa[0], gs[0]), when=datetime.now(),
                       sender=AckParty())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.file.stem
    for suffix, text in (("ta1", acks.ta1), ("999", acks.ack999), ("277ca", acks.ack277ca)):
        if text:
            target = args.output_dir / f"{stem}.{suffix}.x12"
            target.write_text(text, encoding="utf-8")
            print(target)
    return EXIT_OK if result.valid else EXIT_FINDINGS


def _partners_file(given: Path | None) -> Path:
    """The trading-partner file of ``serve``: ``--partners``, else the ``partners`` setting
    (``ECM_GATEWAY_PARTNERS``, or ``partners:`` in the settings file; the container image sets
    it to /config/partners.yaml). A clear usage error naming the path when it is missing."""
    from gateway.pipeline.partners import PartnerConfigError, Partners

    where = "--partners" if given is not None else "ECM_GATEWAY_PARTNERS"
    path = given if given is not None else gateway_settings().partners
    if path is None:
        raise UsageError("no trading partners: give --partners FILE, set ECM_GATEWAY_PARTNERS "
                         "(or `partners:` in the ECM_GATEWAY_SETTINGS file), or use --demo")
    if not Path(path).is_file():
        raise UsageError(f"no trading-partner file at {path} ({where}): mount or write it "
                         f"there (deploy/config/partners.yaml is a sample; "
                         f"config/demo/partners.yaml documents the format), or use --demo")
    try:
        Partners.load(Path(path))
    except PartnerConfigError as exc:
        raise UsageError(str(exc)) from exc
    return Path(path)


def cmd_serve(args) -> int:
    import uvicorn

    from gateway.api.http import (
        NoDelayH11Protocol,
        prepare_process,
        reuse_port_available,
        reuse_port_sockets,
        run_balanced,
    )

    args.queue = args.queue or gateway_settings().queue
    if args.queue and not args.queue.startswith(("redis://", "rediss://")):
        raise UsageError(f"--queue {args.queue}: give a redis://host:port/db URL")

    from gateway import logs
    from gateway.api.app import create_app
    from gateway.paths import HOME, var_dir

    logs.configure()
    from gateway.pipeline.partners import issue_demo_tokens

    partners = args.partners
    drop = args.drop
    tokens: dict[str, str] = {}
    if args.demo:
        drop = drop or var_dir() / "drop"
        partners = var_dir() / "partners.yaml"
        tokens = issue_demo_tokens(HOME / "config" / "demo" / "partners.yaml", partners)
    else:
        partners = _partners_file(partners)
    from gateway.pipeline.filedrop import UnsafeDropFolder

    store_url = args.store or gateway_settings().store_url()
    api_workers = args.api_workers or gateway_settings().api_workers
    try:
        app = create_app(store=store_url, partners=partners, drop=drop, queue=args.queue,
                         workers=args.workers)
    except UnsafeDropFolder as exc:
        raise UsageError(f"--drop {drop}: {exc}") from None
    # the access log is gateway.access (JSON, route templates only: no query strings, no ids);
    # uvicorn's own would print every URL with its query string
    if api_workers > 1:
        # N processes, each building its app from the settings (the same store, partners,
        # queue and drop as this one): they share everything through the store
        settings = gateway_settings().model_copy(update=dict(
            store=app.state.store.url, partners=Path(partners).resolve(), queue=args.queue,
            drop=Path(drop).resolve() if drop else None, workers=args.workers,
            api_workers=api_workers))
        for name in ("store", "partners", "queue", "drop", "workers", "api_workers"):
            value = getattr(settings, name)
            if value is not None:
                os.environ[f"ECM_GATEWAY_{name.upper()}"] = str(value)
        options = dict(factory=True, host=args.host, port=args.port, log_level="info",
                       access_log=False, workers=api_workers,
                       http=NoDelayH11Protocol,  # TCP_NODELAY on every connection
                       timeout_worker_healthcheck=60)  # a busy machine starts slowly
        if not reuse_port_available():  # uvicorn's one shared socket
            uvicorn.run("gateway.api.app:app_from_settings", **options)
            return EXIT_OK
        # one socket per API process (SO_REUSEPORT): connections spread over the processes
        # instead of a burst going to whichever wakes first (gateway/api/http.py)
        try:
            sockets = reuse_port_sockets(args.host, args.port, api_workers)
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") \
                from None
        config = uvicorn.Config("gateway.api.app:app_from_settings", **options)
        logging.getLogger("gateway").info(
            "listening on %s:%d with %d API processes", args.host,
            sockets[0].getsockname()[1], api_workers)
        try:
            run_balanced(config, sockets)
        except KeyboardInterrupt:
            pass
        finally:
            for sock in sockets:
                sock.close()
        return EXIT_OK
    prepare_process()  # the FHIR path loaded, the garbage collector set (gateway/api/http.py)
    config = uvicorn.Config(app, host=args.host, port=args.port, http=NoDelayH11Protocol,
                            log_level="warning" if args.demo else "info", access_log=False)
    server = uvicorn.Server(config)
    if args.demo:
        import threading

        from gateway import demo

        folder = var_dir() / "demo"
        files = demo.write_files(folder, date.today())
        # the demo's terminal shows the banner; the JSON logs go to a file beside the files
        log_file = open(folder / "gateway.log", "a", encoding="utf-8")  # noqa: SIM115
        for handler in logging.getLogger("gateway").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log_file)
        demo.load_registries(app.state.store, app.state.partners, folder)
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        base = f"http://{host}:{args.port}"

        def tell_the_story() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.1)
            if server.should_exit:
                return
            rows = demo.send(base, tokens, files)
            demo.wait_until_settled(app.state.store)
            print(demo.banner(base, tokens, rows, drop, folder) +
                  f"Logs: {folder / 'gateway.log'} · stop with Ctrl-C\n", flush=True)

        threading.Thread(target=tell_the_story, name="demo", daemon=True).start()
    server.run()
    return EXIT_OK


def cmd_worker(args) -> int:
    from gateway import logs
    from gateway.pipeline.partners import PartnerConfigError, Partners
    from gateway.pipeline.worker import run_worker

    if not args.queue.startswith(("redis://", "rediss://")):
        raise UsageError(f"--queue {args.queue}: give a redis://host:port/db URL")
    try:
        Partners.load(args.partners)
    except PartnerConfigError as exc:
        raise UsageError(str(exc)) from exc
    logs.configure()
    run_worker(args.store, args.queue, args.partners, concurrency=args.concurrency,
               name=args.name)
    return EXIT_OK


def cmd_replay(args) -> int:
    from gateway.paths import var_dir
    from gateway.pipeline.partners import PartnerConfigError, Partners
    from gateway.pipeline.process import ReplayRefused, replay
    from gateway.pipeline.status import Status
    from gateway.pipeline.store import Store

    path = args.partners or var_dir() / "partners.yaml"
    try:
        partners = Partners.load(path)
    except PartnerConfigError as exc:
        raise UsageError(str(exc)) from exc
    store = Store(args.store)
    if store.submission(args.submission_id) is None:
        raise UsageError(f"no submission {args.submission_id}")
    try:
        outcome = replay(store, partners, args.submission_id, actor="operator",
                         force=args.force)
    except ReplayRefused as exc:
        raise UsageError(str(exc)) from exc
    print(json.dumps({"submission_id": outcome.submission_id,
                      "replay_of": args.submission_id, "status": outcome.status}))
    return EXIT_OK if outcome.status not in (Status.DEAD_LETTER, Status.FAILED) else EXIT_FINDINGS


def cmd_template(args) -> int:
    from gateway.invoice.template import write_template
    from gateway.tabular import layout_names

    if args.layout not in layout_names("invoice"):
        raise UsageError(f"no invoice layout {args.layout!r}; known: "
                         f"{', '.join(layout_names('invoice'))}")
    write_template(args.output, args.layout)
    print(args.output)
    return EXIT_OK


def cmd_partners(args) -> int:
    from gateway.paths import var_dir
    from gateway.pipeline import onboarding
    from gateway.pipeline.store import Store

    path = args.partners or var_dir() / "partners.yaml"
    try:
        if args.action == "list":
            print(json.dumps(onboarding.listing(path), indent=2))
            return EXIT_OK
        token = None
        if args.action == "add":
            identifiers = {"plan_code": args.plan_code, "payer_ids": args.payer_id,
                           "npis": args.npi, "tins": args.tin,
                           "x12_sender_ids": args.x12_sender_id}
            token = onboarding.add(path, args.partner_id, args.name, args.role, identifiers,
                                   args.envelope)
            detail = f"role {args.role}; " + "; ".join(
                f"{k} {','.join(v) if isinstance(v, list) else v}"
                for k, v in identifiers.items() if v)
        elif args.action == "rotate-token":
            token = onboarding.rotate_token(path, args.partner_id)
            detail = "new token issued; the old one no longer works"
        else:
            onboarding.disable(path, args.partner_id)
            detail = "token removed; the partner can no longer sign in"
    except onboarding.OnboardingError as exc:
        raise UsageError(str(exc)) from None
    _store(args).audit(actor="operator", action=f"partner-{args.action}",
                            target=args.partner_id, detail=detail)
    if token is not None:
        print(f"token for {args.partner_id} (shown once; only its SHA-256 is kept):")
        print(token)
    else:
        print(f"{args.partner_id}: disabled")
    return EXIT_OK


def cmd_purge(args) -> int:
    from gateway.pipeline.retention import Retention, purge

    retention = Retention.from_settings()
    counts = purge(_store(args), retention, actor="operator")
    print(json.dumps({"purged": counts, "retention_days": retention.days}))


def _input_findings(files, made: bool, why: str) -> bool:
    """Print each input file's findings (stderr); when no report could be ``made``, say so
    and ``why`` (a report is made from whole files only). ``made``, returned."""
    for report in files:
        if report.findings:
            print(_text_report(report), file=sys.stderr)
    if not made:
        print(f"ecm-gateway: no report: fix the errors above ({why})", file=sys.stderr)
    return made


def _write_report(content: bytes, output) -> int:
    """A report to ``--output`` (its path printed) or to stdout."""
    if output is None:
        sys.stdout.write(content.decode("utf-8"))
    else:
        output.write_bytes(content)
        print(output)
    return EXIT_OK


def cmd_report(args) -> int:
    if args.report == "data-sharing":
        return _report_data_sharing(args)
    if args.report == "pof-evidence":
        return _report_pof_evidence(args)
    from gateway.ecm.outreach import Quarter, QuarterError, outreach_from_files, report_csv, \
        report_xlsx

    try:
        quarters = [Quarter.parse(q) for q in args.quarter]
    except QuarterError as exc:
        raise UsageError(f"--quarter: {exc}") from None
    if not args.otf:
        raise UsageError("report outreach needs at least one --otf file")
    fmt = args.format or ("xlsx" if args.output and args.output.suffix.lower() == ".xlsx"
                          else "csv")
    if fmt == "xlsx" and args.output is None:
        raise UsageError("an XLSX report needs --output FILE")
    rows, files = outreach_from_files(args.otf, args.mif, args.plan, quarters)
    if not _input_findings(files, rows is not None, "a report is made from whole files only"):
        return EXIT_FINDINGS
    return _write_report(report_xlsx(rows) if fmt == "xlsx" else report_csv(rows), args.output)


def _report_pof_evidence(args) -> int:
    """The MIF and history go into a registry in a temporary SQLite file (a plan's history of
    millions of lines: bounded memory), then :func:`gateway.ecm.pof.pof_evidence` (one pass)."""
    import tempfile

    from gateway.ecm.codesets import load_codesets
    from gateway.ecm.pof import evidence_report_csv, pof_evidence
    from gateway.registry.load import load_registries
    from gateway.registry.store import Registry

    if not args.mif or not args.history:
        raise UsageError("report pof-evidence needs --mif and --history files")
    with tempfile.TemporaryDirectory(prefix="ecm-pof-") as folder:
        registry = Registry(f"sqlite:///{Path(folder) / 'registry.sqlite'}")
        files = load_registries(registry, members=args.mif, history=args.history)
        if not _input_findings(files, all(r.valid for r in files),
                               "a file is applied whole or not at all"):
            return EXIT_FINDINGS
        codes = load_codesets()
        content = evidence_report_csv(pof_evidence(
            registry, codes.utilization, None, (codes.event_by_place, codes.event_by_code)))
        registry.engine.dispose()
    return _write_report(content, args.output)


def _report_data_sharing(args) -> int:
    from datetime import date

    from gateway.ecm.data_sharing import data_sharing_from_files, report_csv

    if not args.rtf:
        raise UsageError("report data-sharing needs at least one --rtf file")
    try:
        as_of = date.fromisoformat(args.as_of) if args.as_of else date.today()
    except ValueError:
        raise UsageError(f"--as-of {args.as_of!r}: use YYYY-MM-DD") from None
    rows, files = data_sharing_from_files(args.rtf, args.plan, as_of)
    if not _input_findings(files, rows is not None, "a file is applied whole or not at all"):
        return EXIT_FINDINGS
    return _write_report(report_csv(rows), args.output)


COMMANDS = {"validate": cmd_validate, "convert": cmd_convert, "ack": cmd_ack,
            "serve": cmd_serve, "template": cmd_template, "replay": cmd_replay,
            "worker": cmd_worker, "partners": cmd_partners, "purge": cmd_purge,
            "report": cmd_report}


# errors that are the user's to fix (exit 2, no traceback): module -> exception class
_USAGE_ERRORS = {"gateway.sniff": "UnknownKind", "gateway.reports": "UnsupportedKind",
                 "gateway.conversion": "ConversionError",
                 "gateway.x12.envelope_profiles": "UnknownProfile",
                 "gateway.rules": "UnknownPartner"}


def _usage_errors() -> tuple[type[Exception], ...]:
    """The usage-error classes of the modules loaded so far (one that was not loaded cannot
    have raised, so the command line does not import a module just to name its error)."""
    return (UsageError, *(getattr(sys.modules[module], name)
                          for module, name in _USAGE_ERRORS.items() if module in sys.modules))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _usage_errors() as exc:
        print(f"ecm-gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        print(f"ecm-gateway: error: {exc.strerror or exc}: {exc.filename or ''}",
              file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - a defect of ours: say so, keep the trace out of sight
        if gateway_settings().debug:
            raise
        print("ecm-gateway: internal error; run with ECM_GATEWAY_DEBUG=1 for details",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
