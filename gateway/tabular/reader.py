"""Physical reading of member-level tables: CSV (any of UTF-8, UTF-8 with BOM, UTF-16 with BOM,
Windows-1252/Latin-1; comma, semicolon or tab delimited) and XLSX workbooks (read-only,
streaming, formulas read as their cached values, merged cells filled with their value, hidden
sheets ignored).

Every source yields ``(row_number, cells)``: the 1-based physical row number in the file or sheet
and the raw cell values (strings for CSV; strings, numbers, dates or None for XLSX). What the
reader could not read is recorded as :class:`Problem` s for the caller to turn into findings;
nothing here raises on bad input except :class:`SourceError` for a file that cannot be opened
as a table at all.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = b"PK\x03\x04"
HEAD = 64 * 1024
DELIMITERS = (",", ";", "\t")

csv.field_size_limit(1 << 20)


class SourceError(Exception):
    """The file cannot be read as a table at all: ``rule`` (FILE-004 / FILE-005) with values."""

    def __init__(self, rule: str, **values: object) -> None:
        super().__init__(rule, values)
        self.rule = rule
        self.values = values


@dataclass
class Problem:
    """Something the reader met while reading: a rule id, the row it happened at (or None for the
    whole file) and the message values."""
    rule: str
    row: int | None
    values: dict = field(default_factory=dict)


class SheetSource:
    """One table-bearing part of a file: the CSV itself, or one visible worksheet."""

    name: str | None = None
    what: str = "file"
    problems: list[Problem]

    def rows(self) -> Iterator[tuple[int, tuple]]:  # pragma: no cover - interface
        raise NotImplementedError


# --- CSV ---------------------------------------------------------------------------------------
class CsvSheet(SheetSource):
    def __init__(self, path: Path, head: bytes) -> None:
        self.path = path
        self.what = "file"
        self.problems = []
        self.fallback_lines = 0
        if head.startswith(_UTF16_BOMS):
            self.encoding = "utf-16"
            text = head.decode("utf-16", errors="ignore")
        else:
            self.encoding = "utf-8-sig" if head.startswith(_BOM) else "utf-8"
            text = head[len(_BOM):].decode("utf-8", errors="replace") \
                if head.startswith(_BOM) else head.decode("utf-8", errors="replace")
        self.cr_only = b"\n" not in head and b"\r" in head
        self.delimiter = _detect_delimiter(text)

    def _lines(self, handle) -> Iterator[str]:
        first = True
        if self.cr_only:
            raw_lines = (part + b"\r" for part in handle.read().split(b"\r"))
        else:
            raw_lines = handle
        for raw in raw_lines:
            if first:
                first = False
                if raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.fallback_lines += 1
                try:
                    yield raw.decode("cp1252")
                except UnicodeDecodeError:
                    yield raw.decode("latin-1")

    def rows(self) -> Iterator[tuple[int, tuple]]:
        self.fallback_lines = 0
        with open(self.path, "rb") as handle:
            if self.encoding == "utf-16":
                lines: Iterator[str] = io.TextIOWrapper(handle, encoding="utf-16", newline="")
            else:
                lines = self._lines(handle)
            reader = csv.reader(lines, delimiter=self.delimiter)
            start = 1
            try:
                for cells in reader:
                    yield start, cells
                    start = reader.line_num + 1
            except csv.Error as exc:
                self.problems.append(Problem("FILE-008", start, {"reason": _csv_reason(exc)}))
            except UnicodeDecodeError:
                self.problems.append(Problem("FILE-008", start,
                                             {"reason": "text that is not valid UTF-16"}))
        if self.fallback_lines:
            self.problems.append(Problem("FILE-006", None, {"count": self.fallback_lines}))


def _csv_reason(exc: csv.Error) -> str:
    text = str(exc).lower()
    if "nul" in text:
        return "a NUL byte inside the text"
    if "field limit" in text:
        return "a value longer than 1 MB, probably an unclosed quote"
    if "new-line" in text:
        return "a line break inside an unquoted value"
    if "end of data" in text:
        return "an unclosed quote at the end of the file"
    return "malformed CSV structure"


def _count_outside_quotes(line: str, char: str) -> int:
    count, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == char and not quoted:
            count += 1
    return count


def _detect_delimiter(text: str) -> str:
    """The delimiter used most often, outside quotes, on any of the first ten non-blank lines (a
    title line above the header has none)."""
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()][:10]
    best, best_count = ",", 0
    for delim in DELIMITERS:
        count = max((_count_outside_quotes(ln, delim) for ln in lines), default=0)
        if count > best_count:
            best, best_count = delim, count
    return best


# --- XLSX ---------------------------------------------------------------------------------------
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Z]+)([0-9]+)(?::([A-Z]+)([0-9]+))?"')
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _col_index(letters: bytes) -> int:
    index = 0
    for ch in letters:
        index = index * 26 + (ch - 64)
    return index


def _local(tag: object) -> str:
    tag = str(tag)
    return tag[tag.index("}") + 1:] if tag.startswith("{") else tag


def _xml_parser():
    from lxml import etree
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True,
                           remove_comments=True)


class XlsxBook:
    """The parts of an XLSX package needed to stream its sheets: sheet names, states and XML
    paths, shared strings, which cell styles are dates, and the date epoch. Read with lxml (no
    entity expansion, no network); openpyxl's read-only loader is avoided because it parses every
    sheet without a <dimension> element in full just to size it, and reads cells through
    ElementTree's Python layer (about ten times slower)."""

    def __init__(self, path: Path) -> None:
        from lxml import etree

        self.archive = zipfile.ZipFile(path)
        parser = _xml_parser()
        names = set(self.archive.namelist())

        def xml(part: str):
            return etree.fromstring(self.archive.read(part), parser)

        def rels(part: str) -> dict[str, tuple[str, str]]:
            folder, _, base = part.rpartition("/")
            rel_part = f"{folder}/_rels/{base}.rels" if folder else f"_rels/{base}.rels"
            if rel_part not in names:
                return {}
            found = {}
            for rel in xml(rel_part):
                target = rel.get("Target") or ""
                if rel.get("TargetMode") == "External":
                    continue
                if target.startswith("/"):
                    target = target[1:]
                elif folder:
                    target = f"{folder}/{target}"
                parts: list[str] = []
                for piece in target.split("/"):
                    if piece == "..":
                        if parts:
                            parts.pop()
                    elif piece and piece != ".":
                        parts.append(piece)
                found[rel.get("Id")] = ("/".join(parts), (rel.get("Type") or "").rsplit("/", 1)[-1])
            return found

        root_rels = rels("")
        workbook_part = next((t for t, kind in root_rels.values() if kind == "officeDocument"),
                             "xl/workbook.xml")
        if workbook_part not in names:
            raise KeyError(workbook_part)
        workbook = xml(workbook_part)
        book_rels = rels(workbook_part)
        self.date1904 = False
        self.sheets: list[tuple[str, str, str]] = []  # (name, state, part)
        for element in workbook.iter():
            local = _local(element.tag)
            if local == "workbookPr":
                self.date1904 = (element.get("date1904") or "").lower() in ("1", "true")
            elif local == "sheet":
                rid = element.get(f"{{{_REL_NS}}}id") or element.get(
                    "{http://purl.oclc.org/ooxml/officeDocument/relationships}id")
                target = book_rels.get(rid)
                if target and target[1] == "worksheet" and target[0] in names:
                    self.sheets.append((element.get("name") or "", element.get("state")
                                        or "visible", target[0]))
        self.shared: list[str] = []
        self.date_styles: set[int] = set()
        self.delta_styles: set[int] = set()
        for part, kind in book_rels.values():
            if kind == "sharedStrings" and part in names:
                self.shared = self._shared_strings(part)
            elif kind == "styles" and part in names:
                self._styles(xml(part))

    def _shared_strings(self, part: str) -> list[str]:
        from lxml import etree

        strings = []
        with self.archive.open(part) as src:
            for _event, si in etree.iterparse(src, events=("end",), tag="{*}si", huge_tree=True,
                                               resolve_entities=False, no_network=True):
                parts = []
                for child in si:
                    local = _local(child.tag)
                    if local == "t":
                        parts.append(child.text or "")
                    elif local == "r":
                        parts.extend(t.text or "" for t in child if _local(t.tag) == "t")
                strings.append("".join(parts))
                si.clear()
        return strings

    def _styles(self, root) -> None:
        from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format

        custom = {}
        for element in root.iter():
            if _local(element.tag) == "numFmt":
                try:
                    custom[int(element.get("numFmtId"))] = element.get("formatCode") or ""
                except (TypeError, ValueError):
                    continue
        for container in root:
            if _local(container.tag) != "cellXfs":
                continue
            for index, xf in enumerate(c for c in container if _local(c.tag) == "xf"):
                try:
                    fmt_id = int(xf.get("numFmtId") or 0)
                except ValueError:
                    continue
                code = custom.get(fmt_id, BUILTIN_FORMATS.get(fmt_id, "General"))
                if is_timedelta_format(code):
                    self.delta_styles.add(index)
                elif is_date_format(code):
                    self.date_styles.add(index)

    def close(self) -> None:
        self.archive.close()


class XlsxSheet(SheetSource):
    def __init__(self, book: XlsxBook, name: str, part: str) -> None:
        self.book = book
        self.part = part
        self.name = name
        self.what = f"sheet {name}"
        self.problems = []

    def _merged_ranges(self) -> list[tuple[int, int, int, int]]:
        """Merged ranges (min_row, min_col, max_row, max_col), found by a byte scan of the sheet
        XML: the list sits after the cell data, but must be known before the rows are read."""
        ranges = []
        try:
            with self.book.archive.open(self.part) as src:
                tail = b""
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    data = tail + chunk
                    if b"mergeCell" in data:
                        for m in _MERGE.finditer(data):
                            c1, r1, c2, r2 = m.groups()
                            ranges.append((int(r1), _col_index(c1), int(r2 or r1),
                                           _col_index(c2 or c1)))
                    tail = data[-512:]
        except Exception:  # a damaged sheet is reported when its rows are read
            return []
        return sorted(set(ranges))

    def _cells(self) -> Iterator[tuple[int, tuple]]:
        """The sheet's rows straight from its XML. Cell values: shared and inline strings,
        numbers, booleans, formula results (the cached value: a formula is read as its value),
        and numbers in a date style as datetimes (durations as timedeltas)."""
        from lxml import etree
        from openpyxl.utils.datetime import MAC_EPOCH, WINDOWS_EPOCH, from_excel, from_ISO8601

        book = self.book
        shared = book.shared
        date_styles, delta_styles = book.date_styles, book.delta_styles
        epoch = MAC_EPOCH if book.date1904 else WINDOWS_EPOCH
        style_kind: dict[str, int] = {}  # style id -> 0 number, 1 date, 2 duration
        columns: dict[str, int] = {}
        excel_cache: dict[tuple, object] = {}
        with book.archive.open(self.part) as src:
            context = etree.iterparse(src, events=("end",), tag="{*}row", huge_tree=True,
                                      resolve_entities=False, no_network=True)
            tag_v = tag_is = tag_t = tag_r = None
            last = 0
            for _event, row in context:
                if tag_v is None:
                    ns = row.tag[:row.tag.index("}") + 1] if row.tag.startswith("{") else ""
                    tag_v, tag_is, tag_t, tag_r = ns + "v", ns + "is", ns + "t", ns + "r"
                ref = row.get("r")
                number = int(ref) if ref else last + 1
                while last + 1 < number:
                    last += 1
                    yield last, ()
                last = number
                cells: list = []
                col = 0
                for cell in row:
                    cref = cell.get("r")
                    if cref:
                        letters = cref.rstrip("0123456789")
                        col = columns.get(letters)
                        if col is None:
                            col = columns[letters] = _col_index(letters.encode())
                    else:
                        col += 1
                    kind = cell.get("t")
                    value = None
                    if kind == "inlineStr":
                        parts = []
                        first = cell[0] if len(cell) == 1 else None
                        if first is not None and first.tag == tag_is and len(first) == 1 \
                                and first[0].tag == tag_t:
                            value = first[0].text or ""
                            cell = ()
                        for child in cell:
                            if child.tag == tag_is:
                                for piece in child:
                                    if piece.tag == tag_t:
                                        parts.append(piece.text or "")
                                    elif piece.tag == tag_r:
                                        parts.extend(t.text or "" for t in piece
                                                     if t.tag == tag_t)
                        if parts or value is None:
                            value = "".join(parts)
                    else:
                        text = None
                        for child in cell:
                            if child.tag == tag_v:
                                text = child.text
                                break
                        if text is None:
                            continue
                        if kind is None or kind == "n":
                            try:
                                value = (float(text) if "." in text or "E" in text
                                         or "e" in text else int(text))
                            except ValueError:
                                value = text
                            style = cell.get("s")
                            if style and value.__class__ is not str:
                                sk = style_kind.get(style)
                                if sk is None:
                                    sid = int(style) if style.isdigit() else -1
                                    sk = style_kind[style] = (2 if sid in delta_styles else
                                                              1 if sid in date_styles else 0)
                                if sk:
                                    key = (value, sk)
                                    converted = excel_cache.get(key)
                                    if converted is None:
                                        try:
                                            converted = from_excel(value, epoch,
                                                                   timedelta=sk == 2)
                                        except (OverflowError, ValueError, TypeError):
                                            converted = value
                                        if len(excel_cache) < 100_000:
                                            excel_cache[key] = converted
                                    value = converted
                        elif kind == "s":
                            try:
                                value = shared[int(text)]
                            except (ValueError, IndexError):
                                value = None
                        elif kind == "b":
                            value = text == "1"
                        elif kind == "d":
                            try:
                                value = from_ISO8601(text)
                            except ValueError:
                                value = text
                        else:  # str (a formula's text result), e (an error such as #N/A)
                            value = text
                    if value is None:
                        continue
                    if len(cells) < col:
                        cells.extend([None] * (col - len(cells)))
                    cells[col - 1] = value
                yield number, tuple(cells)
                row.clear()
                parent = row.getparent()
                if parent is not None:
                    while row.getprevious() is not None:
                        del parent[0]

    def rows(self) -> Iterator[tuple[int, tuple]]:
        try:
            pending = self._merged_ranges()
            active: list[tuple[int, int, int, int, object]] = []
            for number, row in self._cells():
                if pending or active:
                    row, pending, active = _fill_merged(number, row, pending, active)
                yield number, row
        except GeneratorExit:
            raise
        except Exception:
            self.problems.append(Problem("FILE-004", None, {
                "reason": f"worksheet {self.name} is damaged or truncated; rows after the last "
                          "one read were not read"}))


def _fill_merged(number, row, pending, active):
    """Give every cell of a merged range the value of its top-left cell."""
    while pending and pending[0][0] <= number:
        r1, c1, r2, c2 = pending.pop(0)
        value = row[c1 - 1] if c1 - 1 < len(row) else None
        if r1 == number:
            active.append((r1, c1, r2, c2, value))
    active = [a for a in active if a[2] >= number]
    if not active:
        return row, pending, active
    cells = list(row)
    for _r1, c1, _r2, c2, value in active:
        if len(cells) < c2:
            cells.extend([None] * (c2 - len(cells)))
        for c in range(c1 - 1, c2):
            cells[c] = value
    return tuple(cells), pending, active


# --- opening -----------------------------------------------------------------------------------
class TableSource:
    def __init__(self, path: Path, fmt: str, sheets: list[SheetSource], workbook=None,
                 hidden: int = 0) -> None:
        self.path = path
        self.format = fmt
        self.sheets = sheets
        self.workbook = workbook
        self.hidden_sheets = hidden

    def close(self) -> None:
        if self.workbook is not None:
            try:
                self.workbook.close()
            except Exception:
                pass
            self.workbook = None

    def __enter__(self) -> "TableSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_binary(head: bytes) -> bool:
    sample = head[:4096]
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32 and b != 27)
    return controls > max(4, len(sample) // 100)


def open_source(path: Path) -> TableSource:
    """Open a CSV or XLSX file (decided from its content). Raises :class:`SourceError` for a file
    that is neither; ``OSError`` when the file cannot be read at all."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(HEAD)
    named_xlsx = path.suffix.lower() in (".xlsx", ".xlsm")
    if head.startswith(_ZIP) or (named_xlsx and head.startswith(b"PK")):
        return _open_xlsx(path)
    if head.startswith(_OLE2):
        raise SourceError("FILE-004", reason="it is a legacy Excel 97-2003 (.xls) or other OLE2 "
                                             "file; save it as .xlsx or CSV")
    if head.startswith(_UTF16_BOMS):
        return TableSource(path, "csv", [CsvSheet(path, head)])
    if _is_binary(head):
        if named_xlsx:
            raise SourceError("FILE-004", reason="it is named .xlsx but its content is not a "
                                                 "ZIP-based Office workbook")
        raise SourceError("FILE-005", reason="the content is binary")
    return TableSource(path, "csv", [CsvSheet(path, head)])


# A zip bomb guard: real invoices and member files expand a few times over; a workbook that
# expands past these limits is refused before anything is decompressed.
MAX_UNZIPPED_BYTES = 1024 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200


def _zip_bomb(path: Path) -> str | None:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    expanded = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if expanded > MAX_UNZIPPED_BYTES:
        return f"it would expand to {expanded // (1024 * 1024):,} MB"
    if expanded > 10 * 1024 * 1024 and expanded / packed > MAX_COMPRESSION_RATIO:
        return f"it is compressed {expanded // packed:,} to 1 (a zip bomb?)"
    return None


def _open_xlsx(path: Path) -> TableSource:
    try:
        bomb = _zip_bomb(path)
    except zipfile.BadZipFile:
        raise SourceError("FILE-004", reason="the ZIP container is damaged or truncated") from None
    if bomb:
        raise SourceError("FILE-004", reason=f"the workbook is refused: {bomb}")
    try:
        book = XlsxBook(path)
    except zipfile.BadZipFile:
        raise SourceError("FILE-004", reason="the ZIP container is damaged or truncated") from None
    except KeyError:
        raise SourceError("FILE-004", reason="the ZIP archive holds no Excel workbook (another "
                                             "kind of document?)") from None
    except Exception:  # malformed XML parts, bad relationships, damaged members
        raise SourceError("FILE-004", reason="the workbook's structure is invalid") from None
    visible, hidden = [], 0
    for name, state, part in book.sheets:
        if state == "visible":
            visible.append(XlsxSheet(book, name, part))
        else:
            hidden += 1
    return TableSource(path, "xlsx", visible, workbook=book, hidden=hidden)
