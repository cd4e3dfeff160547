"""The results report a provider gets back for an invoice: every data row of the input, accepted
(with the claim it went into) or rejected (with the reasons), as CSV or XLSX.

Cells are neutralised against spreadsheet formula injection: a value that begins with ``=``,
``+``, ``-``, ``@`` (or a tab / carriage return) is prefixed with an apostrophe, so Excel shows
it as text instead of evaluating it (OWASP "CSV injection")."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from gateway.invoice.convert import InvoiceResult
from gateway.tabular.cells import neutralise, xlsx_row

__all__ = ["neutralise", "report_rows", "write_csv", "write_xlsx", "write_report"]

COLUMNS = ["Row", "Status", "Claim ID", "Invoice Number", "Service Date", "HCPCS Code",
           "Charge", "Reasons"]


def report_rows(result: InvoiceResult) -> list[list[str]]:
    rows = []
    for outcome in result.rows.values():  # in row order
        reasons = "; ".join(f"{f.rule}: {f.message}" for f in outcome.findings
                            if f.severity.value in ("error", "warning"))
        rows.append([neutralise(x) for x in (
            outcome.row, "accepted" if outcome.accepted else "rejected",
            outcome.claim_id if outcome.accepted else (outcome.claim_id or ""),
            outcome.value("invoice_number"), outcome.value("service_date"),
            outcome.value("procedure_code"), outcome.value("charge"), reasons)])
    return rows


def write_csv(result: InvoiceResult, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(report_rows(result))


def write_xlsx(result: InvoiceResult, path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Results")
    sheet.append(COLUMNS)
    for row in report_rows(result):
        sheet.append(xlsx_row(sheet, row))
    book.save(path)


def write_report(result: InvoiceResult, path: Path) -> None:
    """CSV or XLSX by the file name's suffix."""
    if path.suffix.lower() == ".xlsx":
        write_xlsx(result, path)
    else:
        with open(path, "w", encoding="utf-8", newline="") as out:
            write_csv(result, out)
