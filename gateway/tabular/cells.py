"""Cells the gateway writes into any CSV or XLSX file (forwarded MIF/RTF/OTF subsets, row
reports, history extracts, state-response reports, conversions): no live formulas.

The OWASP CSV-injection rule: a text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return is prefixed with a single quote, so a spreadsheet shows it as text instead of
running it (``=HYPERLINK(...)`` from one partner never runs on another partner's desk). XLSX
text cells are also written with the string type, never as formulas. Numbers and dates that
came typed from an XLSX stay typed (they cannot hold a formula). The file a partner sent is
kept in the store as received; only what the gateway writes is neutralised.
"""

from __future__ import annotations

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """The text of ``value`` as a spreadsheet must show it (``None`` is empty)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(DANGEROUS) else text


def neutral_row(values) -> list:
    """A row for a CSV writer: every cell as neutralised text."""
    return [neutralise(v) for v in values]


def xlsx_row(sheet, values) -> list:
    """A row for an openpyxl write-only ``sheet``: text cells neutralised and typed as
    strings; numbers, dates and booleans as they are."""
    from openpyxl.cell import WriteOnlyCell

    cells = []
    for value in values:
        if value is None or isinstance(value, (int, float, bool)) or hasattr(value, "isoformat"):
            cells.append(value)
            continue
        cell = WriteOnlyCell(sheet, value=neutralise(value))
        cell.data_type = "s"
        cells.append(cell)
    return cells
