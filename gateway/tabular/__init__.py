"""Member-level tabular files exchanged between plan and provider — the Member Information File
(MIF, plan -> provider), the Return Transmission File (RTF) and the Outreach Tracker File (OTF)
(provider -> plan) — and the ECM/CS provider roster, read from CSV or XLSX through column layouts
kept as data in ``mappings/layouts/<kind>/*.yaml``, validated row by row against the rule pack
``profiles/rules/tabular.yaml``.

    result = read_table(path, "mif")            # layout auto-detected from the header row
    result.rows       # [(row_number, {canonical_field: typed value}), ...] rows without errors
    result.findings   # FILE-* and ROW-* findings
"""

from gateway.tabular.layouts import (
    KINDS, Layout, LayoutDefinitionError, layout_names, load_codeset, load_layout, load_layouts,
)
from gateway.tabular.table import (
    LayoutError, TableReader, TableResult, collector_paused, open_table, read_table,
    sniff_table,
)

__all__ = [
    "KINDS", "Layout", "LayoutDefinitionError", "LayoutError", "TableReader", "TableResult",
    "collector_paused", "layout_names", "load_codeset", "load_layout", "load_layouts",
    "open_table", "read_table", "sniff_table",
]
