"""Invoices → 837P and a row report: golden files per layout, nothing lost, bad input."""

import csv
import io
import zipfile
from datetime import date, datetime
from pathlib import Path

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_acks import pyx12_accepts
from test_cli import run

from gateway.conversion import canonical_to_837p
from gateway.ecm.rules import EncounterRules
from gateway.invoice.convert import read_invoice
from gateway.invoice.report import neutralise, write_csv
from gateway.registry.load import load_registries
from gateway.registry.store import Registry
from gateway.tabular import LayoutError, load_layout
from gateway.x12.validate import validate_x12
from gateway.x12.writer import ControlNumbers, envelope_settings

INVOICES = FIXTURES / "invoice"
RECEIVED = date(2025, 7, 1)
SETTINGS = envelope_settings("plan-default")
REGISTRIES = ["--members", FIXTURES / "mif" / "mif-clean.csv",
              "--providers", FIXTURES / "roster" / "providers.csv",
              "--history", FIXTURES / "history"]


def ecm_rules() -> EncounterRules:
    registry = Registry()
    load_registries(registry, [FIXTURES / "mif" / "mif-clean.csv"],
                    [FIXTURES / "roster" / "providers.csv"], [FIXTURES / "history"])
    return EncounterRules(registry)


def convert(path: Path, rules=None):
    result = read_invoice(path, SETTINGS, RECEIVED, rules=rules or ecm_rules())
    out = io.StringIO()
    if result.encounters:
        canonical_to_837p(result.encounters, out, SETTINGS, ControlNumbers(900, 900),
                          datetime(2025, 7, 1, 9, 0))
    report = io.StringIO()
    write_csv(result, report)
    return result, out.getvalue(), report.getvalue()


@pytest.mark.parametrize("name", ["invoice-clean.csv", "invoice-clean.xlsx",
                                  "invoice-valley.csv", "invoice-valley.xlsx",
                                  "invoice-sunrise.csv"])
def test_every_layout_gives_the_golden_837p_and_report(name):
    result, x12, report = convert(INVOICES / name)
    assert result.rejected_rows == 0 and result.accepted_rows == 6
    assert x12 == (INVOICES / "expected" / "invoice-clean.837p.x12").read_text()
    golden = INVOICES / "expected" / f"{name.replace('.', '-')}.report.csv"
    assert report == golden.read_text()


def test_golden_837p_is_valid_in_ours_and_in_pyx12():
    text = (INVOICES / "expected" / "invoice-clean.837p.x12").read_text()
    assert validate_x12(text.encode()).valid
    assert pyx12_accepts(text)
    # claims: one per invoice + billing provider + member, totals = sum of lines
    assert "CLM*INV-2001-1*50***11:B:1" in text and "CLM*INV-2002-1*100***12:B:1" in text
    assert "DTP*472*RD8*20250604-20250610~" in text  # a service range
    assert "HI*ABK:Z7189~" in text and "HI*ABK:Z5900~" in text  # default and given diagnosis


def test_mixed_invoice_golden_report_and_837p():
    result, x12, report = convert(INVOICES / "invoice-mixed.csv")
    assert report == (INVOICES / "expected" / "invoice-mixed.report.csv").read_text()
    assert x12 == (INVOICES / "expected" / "invoice-mixed.837p.x12").read_text()
    rows = list(csv.DictReader(io.StringIO(report)))
    assert [(r["Row"], r["Status"]) for r in rows] == [
        ("2", "accepted"), ("3", "accepted"), ("4", "rejected"), ("5", "rejected"),
        ("6", "rejected"), ("8", "rejected"), ("9", "rejected"), ("10", "rejected"),
        ("11", "accepted")]  # row 7 is blank: skipped, not lost
    reasons = {r["Row"]: r["Reasons"] for r in rows}
    assert reasons["5"].startswith("ECM-DUP-001: this line duplicates claim INV-1001-2 line 1")
    assert "INV-003: rejected with its claim INV-1001-2" in reasons["4"]
    assert reasons["6"].startswith("ROW-003: Member CIN is not a Medi-Cal CIN")
    assert reasons["8"].startswith("ECM-CODE-001")
    assert reasons["9"].startswith("INV-001: the service date 2099-06-12 is in the future")
    assert reasons["10"].startswith("ROW-013: Charge is not an amount")


def test_timely_filing_is_configurable_and_counts_from_the_received_date():
    result = read_invoice(INVOICES / "invoice-clean.csv", SETTINGS, date(2026, 7, 2),
                          rules=ecm_rules())
    assert result.accepted_rows == 0
    assert {f.rule for f in result.findings if f.is_error} == {"INV-002"}
    result = read_invoice(INVOICES / "invoice-clean.csv", SETTINGS, date(2026, 6, 2),
                          rules=ecm_rules())
    # 2025-06-02 is exactly 365 days before 2026-06-02: still in time
    assert result.rows[2].accepted


@pytest.mark.parametrize("value, shown", [("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"),
                                          ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
                                          ("safe", "safe"), (None, "")])
def test_report_cells_are_neutralised(value, shown):
    assert neutralise(value) == shown


# -- nothing lost -------------------------------------------------------------------------------
LAYOUT = load_layout("invoice", "default")
GOOD = next(csv.reader(io.StringIO((INVOICES / "invoice-clean.csv").read_text().splitlines()[1])))
DEFECTS = {
    "Member CIN": ["9123", "", "ABCDEFGHI"],
    "Billing Provider NPI": ["1234500002", "12345"],
    "Service Date": ["2025-02-30", "yesterday", ""],
    "Charge": ["abc", "-5", "1.234"],
    "Units": ["0", "x"],
    "HCPCS Code": ["99", "G9008X"],
    "Modifier 1": ["U9", "UUU"],
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(sorted(DEFECTS)), st.integers(0, 2),
                          st.booleans(), st.integers(1, 4)), min_size=1, max_size=30))
def test_nothing_is_lost(tmp_path, plan):
    headers = [c.headers[0] for c in LAYOUT.columns]
    lines = [headers]
    for index, (column, choice, broken, day) in enumerate(plan):
        row = list(GOOD)
        row[headers.index("Service Date")] = f"2025-06-{day:02d}"
        row[headers.index("Invoice Number")] = f"INV-{index % 3}"
        if broken:
            options = DEFECTS[column]
            row[headers.index(column)] = options[choice % len(options)]
        lines.append(row)
    path = tmp_path / "generated.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(lines)
    result = read_invoice(path, SETTINGS, RECEIVED, rules=EncounterRules(None))
    assert len(result.rows) == len(plan)  # every data row is accounted for
    assert result.accepted_rows + result.rejected_rows == len(plan)
    for outcome in result.rows.values():
        if outcome.accepted:
            assert outcome.claim_id
        else:
            assert any(f.is_error for f in outcome.findings)
    assert sum(len(e.claim.lines) for e in result.encounters) == result.accepted_rows


# -- bad input ----------------------------------------------------------------------------------
def test_missing_columns_name_the_missing_and_the_unexpected(tmp_path):
    path = tmp_path / "invoice.csv"
    text = (INVOICES / "invoice-clean.csv").read_text().replace("Member CIN", "Client Number")
    path.write_text(text)
    with pytest.raises(LayoutError) as caught:
        read_invoice(path, SETTINGS, RECEIVED)
    assert "Member CIN" in str(caught.value) and "Client Number" in str(caught.value)
    done = run("validate", path)
    assert done.returncode == 2 and "Member CIN" in done.stderr


@pytest.mark.parametrize("content, rule", [
    (b"PK\x03\x04garbage-not-a-zip", "FILE-004"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, None),  # .xls, or encrypted
])
def test_corrupt_or_legacy_workbooks_are_findings_not_crashes(tmp_path, content, rule):
    path = tmp_path / "invoice.xlsx"
    path.write_bytes(content)
    done = run("validate", path)
    assert done.returncode in (1, 2)
    assert done.stderr or done.stdout


def test_a_numbers_file_renamed_xlsx(tmp_path):
    path = tmp_path / "invoice.xlsx"
    with zipfile.ZipFile(path, "w") as z:  # a Numbers package is a zip without a workbook
        z.writestr("Index/Document.iwa", b"\x00\x01")
    done = run("validate", path, "--kind", "invoice")
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr
    assert "FILE-004" in done.stdout or "not" in done.stderr


def test_empty_sheet_is_reported(tmp_path):
    from openpyxl import Workbook

    path = tmp_path / "empty.xlsx"
    book = Workbook()
    book.active.title = "Invoice"
    book.save(path)
    done = run("validate", path, "--kind", "invoice")
    assert done.returncode in (1, 2)
    assert "empty" in (done.stdout + done.stderr).lower()


# -- end to end ---------------------------------------------------------------------------------
def test_cli_invoice_to_837p_and_report(tmp_path):
    out, report = tmp_path / "out.x12", tmp_path / "report.xlsx"
    done = run("convert", INVOICES / "invoice-mixed.csv", "--to", "837p", "-o", out,
               "--report", report, "--received", "2025-07-01", *REGISTRIES)
    assert done.returncode == 1  # rows were rejected
    assert "3 row(s) accepted into 2 claim(s), 6 rejected" in done.stderr
    assert run("validate", out).returncode == 0
    from openpyxl import load_workbook

    sheet = load_workbook(report, read_only=True)["Results"]
    values = [tuple(row) for row in sheet.iter_rows(values_only=True)]
    assert values[0][:3] == ("Row", "Status", "Claim ID")
    assert len(values) == 1 + 9


def test_cli_validate_invoice_and_templates(tmp_path):
    done = run("validate", INVOICES / "invoice-clean.csv", "--received", "2025-07-01",
               *REGISTRIES)
    assert done.returncode == 0
    assert "invoice valid — 6 rows: 6 accepted, 0 rejected, 4 claims" in done.stdout
    assert run("template", "invoice", "-o", tmp_path / "t.csv").returncode == 0
    assert (tmp_path / "t.csv").read_text().startswith("Invoice Number,Invoice Date,")
    assert run("template", "invoice", "-o", tmp_path / "t.xlsx", "--layout",
               "valley-health-plan").returncode == 0
    names = zipfile.ZipFile(tmp_path / "t.xlsx").namelist()
    assert any("sheet2" in n for n in names)  # the data dictionary sheet
    assert run("template", "invoice", "-o", tmp_path / "x.csv", "--layout", "nope"
               ).returncode == 2


def test_a_zip_bomb_workbook_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", b"<row/>" * (12 * 1024 * 1024))  # 72 MB of rows
    assert path.stat().st_size < 1024 * 1024
    done = run("validate", path, "--kind", "invoice", "--format", "json")
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr
    assert "zip bomb" in done.stdout + done.stderr
