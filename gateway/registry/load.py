"""Build the registries for a validation run from the files a user names (CLI) or that a
partner sends (later: the file drop and API). Bad registry files become findings on those
files: rows with errors are not loaded, a file that cannot be read at all is reported whole."""

from __future__ import annotations

from pathlib import Path

from gateway.registry.history import HistoryError, load_history
from gateway.registry.store import Registry
from gateway.reports import FileReport
from gateway.rules import default_catalogue
from gateway.tabular import LayoutError, read_table


def _file_problem(path: Path, kind: str, message: str) -> FileReport:
    finding = default_catalogue().finding("REG-FILE-001", "file", None, kind=kind,
                                          problem=message)
    return FileReport(path=str(path), kind=kind, findings=[finding] if finding else [],
                      stats={"rows": 0, "loaded": 0})


def load_registries(registry: Registry, members: list[Path] = (), providers: list[Path] = (),
                    history: list[Path] = ()) -> list[FileReport]:
    reports: list[FileReport] = []
    for kind, paths, load in (("mif", members, registry.load_members),
                              ("roster", providers, registry.load_providers)):
        for path in paths:
            try:
                table = read_table(path, kind)
            except (LayoutError, OSError) as exc:
                reports.append(_file_problem(path, kind, str(exc)))
                continue
            rows = [row for _, row in table.rows]
            loaded = load(rows, source=str(Path(path).resolve()))
            reports.append(FileReport(path=str(path), kind=kind, findings=table.findings,
                                      stats={"rows": table.rows_total, "loaded": len(rows),
                                             "rejected_rows": table.rows_rejected,
                                             "records": loaded}))
    for path in history:
        try:
            lines = load_history(registry, Path(path))
        except (HistoryError, OSError) as exc:
            reports.append(_file_problem(path, "history", str(exc)))
            continue
        reports.append(FileReport(path=str(path), kind="history", findings=[],
                                  stats={"lines": lines}))
    return reports
