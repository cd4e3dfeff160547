"""Blank invoice templates for providers, made from an invoice layout: the header row (CSV), or
a workbook with the header row and a data dictionary sheet (XLSX)."""

from __future__ import annotations

import csv
from pathlib import Path

from gateway.tabular import load_layout

TYPE_WORDS = {"npi": "10-digit NPI", "tin": "9-digit TIN", "cin": "Medi-Cal CIN (8 digits + letter)",
              "date": "date", "money": "amount", "decimal": "number", "zip": "ZIP code",
              "text": "text"}


def dictionary(layout_name: str = "default") -> list[list[str]]:
    layout = load_layout("invoice", layout_name)
    rows = []
    for column in layout.columns:
        kind = TYPE_WORDS.get(column.type, column.type)
        if column.type == "date":
            kind += " (" + " or ".join(layout.date_formats).replace("%Y", "YYYY").replace(
                "%m", "MM").replace("%d", "DD") + ")"
        rows.append([column.headers[0], "yes" if column.required else "no", kind,
                     str(column.options.get("description", ""))])
    return rows


def write_template(path: Path, layout_name: str = "default") -> None:
    layout = load_layout("invoice", layout_name)
    headers = [c.headers[0] for c in layout.columns]
    if path.suffix.lower() == ".xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        sheet.title = layout.sheet or "Invoice"
        sheet.append(headers)
        guide = book.create_sheet("Data dictionary")
        guide.append(["Column", "Required", "Type", "Description"])
        for row in dictionary(layout_name):
            guide.append(row)
        book.save(path)
        return
    with open(path, "w", encoding="utf-8", newline="") as out:
        csv.writer(out, lineterminator="\n").writerow(headers)
