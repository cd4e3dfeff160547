"""Forwarding part of a member-level table (MIF, RTF, OTF) to another partner: the header row and
the chosen data rows, in the layout the file came in (same columns in the same order, same
delimiter; CSV stays CSV, XLSX stays XLSX). Title blocks above the header row and other sheets
are not forwarded; values are copied as read (XLSX dates stay dates), except that no cell
becomes a live formula (:mod:`gateway.tabular.cells`: a partner's ``=HYPERLINK(...)`` reaches
the other partner as text); the file as received stays in the store."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from pathlib import Path

from gateway.tabular.cells import neutral_row, xlsx_row
from gateway.tabular.reader import open_source
from gateway.tabular.table import TableResult

CSV_MEDIA = "text/csv"
XLSX_MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def table_subset(path: Path, table: TableResult, rows: Collection[int]) -> tuple[bytes, str, str]:
    """``(content, media type, suffix)`` of the table with only ``rows`` (row numbers of
    ``table.rows``) under its header."""
    wanted = set(rows)
    picked: list[tuple] = []
    header: tuple | None = None
    with open_source(Path(path)) as source:
        sheet = next((s for s in source.sheets if s.name == table.sheet), source.sheets[0])
        for number, cells in sheet.rows():
            if number == table.header_row:
                header = tuple(cells)
            elif number in wanted:
                picked.append(tuple(cells))
            if header is not None and number > max(wanted, default=0):
                break
    header = header or ()
    if table.format == "xlsx":
        return _xlsx(header, picked, table.sheet or "Sheet1"), XLSX_MEDIA, ".xlsx"
    return _csv(header, picked, table.delimiter or ",", table.encoding or "utf-8"), \
        CSV_MEDIA, ".csv"


def _csv(header: tuple, rows: list[tuple], delimiter: str, encoding: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(neutral_row(header))
    writer.writerows(neutral_row(row) for row in rows)
    return out.getvalue().encode(encoding if encoding in ("utf-8", "utf-8-sig", "utf-16")
                                 else "utf-8")


def _xlsx(header: tuple, rows: list[tuple], sheet: str) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    ws = book.create_sheet(title=sheet[:31])
    ws.append(xlsx_row(ws, header))
    for row in rows:
        ws.append(xlsx_row(ws, row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
