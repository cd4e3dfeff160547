"""Reading a member-level table end to end: open the file, find the header row and the layout
that fits it, then stream the data rows through the row validator."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Iterator

from gateway.findings import Finding
from gateway.gcpause import collector_paused
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular.layouts import (
    KINDS, Layout, default_fields, layout_names, load_layout, load_layouts,
)
from gateway.tabular.reader import SheetSource, SourceError, TableSource, open_source
from gateway.tabular.validate import HeaderMatch, RowValidator, match_header


class LayoutError(ValueError):
    """No layout of the kind matches the file's header row (a usage-level error). Its message
    names the columns found, the layouts tried and the required columns each one misses."""

    def __init__(self, kind: str, path: Path | None, columns_found: list[str],
                 tried: dict[str, list[str]], note: str = "") -> None:
        self.kind = kind
        self.path = path
        self.columns_found = columns_found
        self.tried = tried
        found = ", ".join(columns_found) if columns_found else "(no header row found)"
        parts = [f"layout {name!r} misses {', '.join(missing) if missing else '-'}"
                 for name, missing in tried.items()]
        where = f" of {Path(path).name}" if path else ""
        message = (f"no {kind} layout matches the header row{where}: columns found: {found}; "
                   + ("; ".join(parts) if parts else f"no {kind} layouts are defined"))
        if note:
            message += f" ({note})"
        super().__init__(message)

    def finding(self, catalogue: RuleCatalogue | None = None) -> Finding | None:
        """The same problem as a file-level FILE-001 finding."""
        tried = "; ".join(f"{name}: missing {', '.join(missing)}"
                          for name, missing in self.tried.items()) or "none defined"
        return (catalogue or default_catalogue()).finding("FILE-001", "file", kind=self.kind,
                                                          tried=tried)


@dataclass
class TableResult:
    kind: str
    layout: str | None
    findings: list[Finding] = field(default_factory=list)
    rows: list[tuple[int, dict]] = field(default_factory=list)
    rows_total: int = 0
    rows_rejected: int = 0
    format: str | None = None  # csv or xlsx
    sheet: str | None = None
    header_row: int | None = None
    encoding: str | None = None
    delimiter: str | None = None

    @property
    def rows_accepted(self) -> int:
        return self.rows_total - self.rows_rejected

    @property
    def valid(self) -> bool:
        return not any(f.is_error for f in self.findings)


def _blank(cells) -> bool:
    for cell in cells:
        if cell is not None and (cell.__class__ is not str or cell.strip()):
            return False
    return True


_LOOKS_LIKE_DATA = re.compile(r"\d{4}|@")


def _safe_header_text(cell: object) -> str:
    """Header texts for error messages; a cell that looks like member data (a headerless file)
    is withheld."""
    text = str(cell).strip()
    if _LOOKS_LIKE_DATA.search(text) or len(text) > 60:
        return "<value withheld>"
    return text


class _SheetHead:
    """The first rows of a sheet, kept so that reading continues from where detection stopped."""

    def __init__(self, sheet: SheetSource, depth: int) -> None:
        self.sheet = sheet
        self.iterator = sheet.rows()
        self.head: list[tuple[int, tuple]] = []  # non-blank rows only
        self.consumed: list[tuple[int, tuple]] = []  # every row read so far
        for number, cells in self.iterator:
            self.consumed.append((number, cells))
            if not _blank(cells):
                self.head.append((number, cells))
                if len(self.head) >= depth:
                    break

    @property
    def empty(self) -> bool:
        return not self.head

    def rows_after(self, header_row: int) -> Iterator[tuple[int, tuple]]:
        rest = [(n, c) for n, c in self.consumed if n > header_row]
        return chain(rest, self.iterator)

    def close(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close:
            close()


def _candidates(kind: str, layout: str | Layout | None, folder: Path | None) -> list[Layout]:
    if kind not in KINDS:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(layout, Layout):
        return [layout]
    if layout is not None:
        try:
            return [load_layout(kind, layout, folder)]
        except FileNotFoundError:
            names = ", ".join(layout_names(kind, folder)) or "none"
            raise LayoutError(kind, None, [], {},
                              note=f"there is no {kind} layout named {layout!r}; "
                                   f"available: {names}") from None
    return load_layouts(kind, folder)


def _best_match(source: TableSource, layouts: list[Layout]) -> tuple[HeaderMatch | None,
                                                                         _SheetHead | None,
                                                                         list[_SheetHead]]:
    """The best (layout, sheet, header row) over every visible sheet and candidate header row."""
    usable = [lay for lay in layouts if source.format in lay.formats]
    depth = max((lay.header_search_rows for lay in layouts), default=20)
    preferred = [lay.sheet for lay in usable if lay.sheet]
    sheets = sorted(source.sheets, key=lambda s: 0 if s.name in preferred else 1)
    heads: list[_SheetHead] = []
    best: tuple | None = None
    for order, sheet in enumerate(sheets):
        head = _SheetHead(sheet, depth)
        heads.append(head)
        for lay in usable:
            for position, (number, cells) in enumerate(head.head[:lay.header_search_rows]):
                match = match_header(lay, number, cells)
                if not match.positions:
                    continue
                sheet_pref = 1 if lay.sheet and lay.sheet == sheet.name else 0
                key = match.score + (sheet_pref, -order, -position)
                if best is None or key > best[0]:
                    best = (key, match, head)
    if best is None:
        return None, None, heads
    return best[1], best[2], heads


def _layout_error(kind: str, path: Path, layouts: list[Layout], source: TableSource,
                  heads: list[_SheetHead]) -> LayoutError:
    tried: dict[str, list[str]] = {}
    found: list[str] = []
    best_cells = None
    best_count = -1
    for head in heads:
        for number, cells in head.head[:20]:
            for lay in layouts:
                m = match_header(lay, number, cells)
                count_matched = len(m.positions)
                if count_matched > best_count:
                    best_count, best_cells = count_matched, cells
    if best_cells is None and heads and heads[0].head:
        best_cells = heads[0].head[0][1]
    if best_cells is not None:
        found = [_safe_header_text(c) for c in best_cells
                 if c is not None and str(c).strip()][:60]
    for lay in layouts:
        if source.format not in lay.formats:
            tried[lay.name] = [f"(reads only {', '.join(lay.formats)})"]
            continue
        best_missing = None
        for head in heads:
            for number, cells in head.head[:lay.header_search_rows]:
                m = match_header(lay, number, cells)
                if best_missing is None or len(m.missing_required) < len(best_missing):
                    best_missing = m.missing_required
        if best_missing is None:
            best_missing = [s.label for s in lay.slots if s.required]
        tried[lay.name] = best_missing
    return LayoutError(kind, path, found, tried)


class TableReader:
    """Streams the accepted rows of one table: iterate it for ``(row_number, values)``; its
    ``findings``, ``rows_total`` and ``rows_rejected`` are complete once iteration ends."""

    def __init__(self, path: Path, kind: str, layout: str | Layout | None = None, *,
                 catalogue: RuleCatalogue | None = None, folder: Path | None = None) -> None:
        self.path = Path(path)
        self.kind = kind
        self.catalogue = catalogue or default_catalogue()
        layouts = _candidates(kind, layout, folder)
        self.layout_name: str | None = (layout.name if isinstance(layout, Layout) else layout)
        self.findings: list[Finding] = []
        self.rows_total = 0
        self.rows_rejected = 0
        self.format = self.sheet = self.encoding = self.delimiter = None
        self.header_row: int | None = None
        self._rows: Iterator | None = None
        self._validator: RowValidator | None = None
        self._source: TableSource | None = None
        try:
            source = open_source(self.path)
        except SourceError as exc:
            self._file_finding(exc.rule, **exc.values)
            return
        self._source = source
        self.format = source.format
        if not source.sheets:
            source.close()
            self._file_finding("FILE-002", what="workbook (it has no visible sheet)")
            return
        match, head, heads = _best_match(source, layouts)
        if match is None or not match.ok:
            for h in heads:
                h.close()
            if all(h.empty for h in heads):
                source.close()
                problems = [p for h in heads for p in h.sheet.problems]
                if problems:  # nothing readable at all (e.g. one endless unquoted value)
                    for problem in problems:
                        location = "file" if problem.row is None else f"row {problem.row}"
                        self._file_finding(problem.rule, location, **problem.values)
                    return
                what = heads[0].sheet.what if len(heads) == 1 else "workbook"
                self._file_finding("FILE-002", what=what)
                return
            named_empty = next((h for h in heads for lay in layouts
                                if lay.sheet and h.sheet.name == lay.sheet and h.empty), None)
            if named_empty is not None:
                source.close()
                self.layout_name = next(lay.name for lay in layouts
                                        if lay.sheet == named_empty.sheet.name)
                self._file_finding("FILE-002", what=named_empty.sheet.what)
                return
            error = _layout_error(kind, self.path, layouts, source, heads)
            source.close()
            raise error
        for h in heads:
            if h is not head:
                h.close()
        self.layout_name = match.layout.name
        self.header_row = match.header_row
        sheet = head.sheet
        self._sheet = sheet
        self.sheet = sheet.name
        self.encoding = getattr(sheet, "encoding", None)
        self.delimiter = getattr(sheet, "delimiter", None)
        self._what = sheet.what
        for text in match.duplicates:
            self._file_finding("FILE-009", column=text)
        if match.missing_optional or match.unexpected:
            self._file_finding("FILE-003", layout=match.layout.name,
                               missing=", ".join(match.missing_optional) or "none",
                               unexpected=", ".join(match.unexpected) or "none")
        self._validator = RowValidator(match, self.catalogue, default_fields(kind, folder),
                                       check_width=source.format == "csv")
        self._rows = head.rows_after(match.header_row)

    def _file_finding(self, rule: str, location: str = "file", **values) -> None:
        finding = self.catalogue.finding(rule, location, **values)
        if finding is not None:
            self.findings.append(finding)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        if self._rows is None:
            return
        validate = self._validator.validate
        findings = self.findings
        try:
            for number, cells in self._rows:
                if _blank(cells):
                    continue
                self.rows_total += 1
                values, row_findings, has_error = validate(number, cells)
                if row_findings:
                    findings.extend(row_findings)
                if has_error:
                    self.rows_rejected += 1
                else:
                    yield number, values
        finally:
            self._rows = None
            for problem in self._sheet.problems:
                location = "file" if problem.row is None else f"row {problem.row}"
                self._file_finding(problem.rule, location, **problem.values)
            if self.rows_total == 0 and not any(f.rule == "FILE-008" for f in findings):
                self._file_finding("FILE-007", what=self._what)
            if self._source is not None:
                self._source.close()

    def result(self, rows: list[tuple[int, dict]]) -> TableResult:
        return TableResult(kind=self.kind, layout=self.layout_name, findings=self.findings,
                           rows=rows, rows_total=self.rows_total,
                           rows_rejected=self.rows_rejected, format=self.format,
                           sheet=self.sheet, header_row=self.header_row,
                           encoding=self.encoding, delimiter=self.delimiter)


def open_table(path: Path, kind: str, layout: str | Layout | None = None, *,
               catalogue: RuleCatalogue | None = None, folder: Path | None = None) -> TableReader:
    """A streaming reader (for very large files whose rows should not all be kept)."""
    return TableReader(path, kind, layout, catalogue=catalogue, folder=folder)


def read_table(path: Path, kind: str, layout: str | Layout | None = None, *,
               catalogue: RuleCatalogue | None = None,
               folder: Path | None = None) -> TableResult:
    """Read and validate a MIF, RTF, OTF or provider roster (``kind``) with the named layout, or
    the layout of that kind whose columns match the file's header row (``layout=None``).

    Raises :class:`LayoutError` when no layout of the kind matches the header row; every other
    problem of the input is a finding in the result."""
    reader = TableReader(path, kind, layout, catalogue=catalogue, folder=folder)
    with collector_paused():
        rows = list(reader)
    return reader.result(rows)


def sniff_table(path: Path, folder: Path | None = None) -> str | None:
    """``mif``, ``rtf``, ``otf`` or ``roster`` when the file's header row matches a layout of
    that kind (the best-fitting layout wins); None otherwise. Never raises on bad input."""
    try:
        source = open_source(Path(path))
    except (SourceError, OSError):
        return None
    try:
        layouts: list[Layout] = []
        for kind in KINDS:
            try:
                layouts.extend(load_layouts(kind, folder))
            except (OSError, ValueError):
                continue
        match, _head, heads = _best_match(source, layouts)
        for h in heads:
            h.close()
        return match.layout.kind if match is not None and match.ok else None
    except Exception:  # sniffing must never fail loudly
        return None
    finally:
        source.close()
