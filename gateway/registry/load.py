"""Build the registries for a validation run from the files a user names (CLI) or that a
partner sends. Bad registry files become findings on those files, with row and column; a file
is applied whole or not at all (any error: nothing of it is loaded)."""

from __future__ import annotations

from pathlib import Path

from gateway.registry.claims import load_claims_extract
from gateway.registry.history import HistoryError, load_history
from gateway.registry.store import Registry
from gateway.reports import FileReport
from gateway.rules import default_catalogue
from gateway.tabular import LayoutError, sniff_table


def _file_problem(path: Path, kind: str, message: str) -> FileReport:
    finding = default_catalogue().finding("REG-FILE-001", "file", None, kind=kind,
                                          problem=message)
    return FileReport(path=str(path), kind=kind, findings=[finding] if finding else [],
                      stats={"rows": 0, "loaded": 0})


def not_applied(table) -> list:
    """The ECM-REG-002 finding when a registry file has errors (then nothing is loaded)."""
    errors = sum(1 for f in table.findings if f.is_error)
    finding = default_catalogue().finding("ECM-REG-002", "file", None, errors=errors,
                                          rows=table.rows_total)
    return [finding] if finding else []


def load_registries(registry: Registry, members: list[Path] = (), providers: list[Path] = (),
                    history: list[Path] = (), cs_authorizations: list[Path] = (),
                    presumptive=None) -> list[FileReport]:
    """``presumptive``: the plan's arrangement; a MIF is then re-checked against the lines its
    providers billed under it (the history is loaded first)."""
    from gateway.ecm.presumptive import recheck
    from gateway.ecm.tables import read_checked_table

    reports: list[FileReport] = []
    history_reports = _load_history(registry, history)  # first: the MIF re-check reads it
    for kind, paths, load in (("mif", members, registry.load_members),
                              ("roster", providers, registry.load_providers),
                              ("cs-auth", cs_authorizations, registry.load_cs_authorizations)):
        for path in paths:
            try:
                table = read_checked_table(path, kind)
            except (LayoutError, OSError) as exc:
                reports.append(_file_problem(path, kind, str(exc)))
                continue
            findings = list(table.findings)
            if kind == "mif":
                findings += recheck(registry, table.rows, presumptive)
            rows = [row for _, row in table.rows]
            if table.valid:
                loaded = load(rows, source=str(Path(path).resolve()))
            else:  # applied whole or not at all
                loaded, rows = 0, []
                findings += not_applied(table)
            reports.append(FileReport(path=str(path), kind=kind, findings=findings,
                                      stats={"rows": table.rows_total, "loaded": len(rows),
                                             "rejected_rows": table.rows_rejected,
                                             "records": loaded}))
    return reports + history_reports


def _load_history(registry: Registry, history: list[Path]) -> list[FileReport]:
    reports: list[FileReport] = []
    for given in history:
        given = Path(given)
        files = sorted(p for p in given.iterdir() if p.is_file()) if given.is_dir() else [given]
        claims = [p for p in files if p.suffix.lower() in (".csv", ".xlsx")
                  and sniff_table(p) == "claims"]
        for path in claims:
            try:
                outcome = load_claims_extract(registry, path, str(Path(path).resolve()))
            except (LayoutError, OSError) as exc:
                reports.append(_file_problem(path, "claims", str(exc)))
                continue
            reports.append(FileReport(path=str(path), kind="claims", findings=outcome.findings,
                                      stats={"rows": outcome.rows, "lines": outcome.loaded}))
        if claims and len(claims) == len(files):
            continue
        try:
            lines = sum(load_history(registry, p) for p in files if p not in claims) \
                if given.is_dir() else load_history(registry, given)
        except (HistoryError, OSError) as exc:
            reports.append(_file_problem(given, "history", str(exc)))
            continue
        reports.append(FileReport(path=str(given), kind="history", findings=[],
                                  stats={"lines": lines}))
    return reports
