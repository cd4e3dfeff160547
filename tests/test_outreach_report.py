"""The quarterly outreach tracking report (ECM Policy Guide 002:1885-1912): golden CSV/XLSX
through the CLI, the attempt definition (MAIL and STREET are not attempts), quarters, bad
input, and the API for a plan."""

import csv
import io
import subprocess
import sys
from datetime import date
from decimal import Decimal

import pytest
from conftest import FIXTURES

from gateway.ecm.outreach import OutreachReport, Quarter, QuarterError

GOLDEN = FIXTURES / "reports" / "outreach-demo-plan-2025Q1-Q2.csv"
OTF = FIXTURES / "otf" / "otf-clean.csv"
MIF = FIXTURES / "mif" / "mif-clean.csv"


def run(*args):
    return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)],
                          capture_output=True, text=True, check=False)


def test_cli_csv_is_the_golden_file():
    done = run("report", "outreach", "--quarter", "2025Q1", "--quarter", "2025Q2", "--otf", OTF,
               "--mif", MIF, "--plan", "demo-plan")
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace("\r\n", "\n") == GOLDEN.read_text().replace("\r\n", "\n")


def test_cli_takes_several_files_after_one_option_or_repeated(tmp_path):
    """``--otf a.csv b.csv`` (what a shell glob gives) and ``--otf a.csv --otf b.csv``: the same
    report as the one file they were cut from."""
    header, *rows = OTF.read_text().splitlines(keepends=True)
    half = len(rows) // 2
    first, second = tmp_path / "otf-1.csv", tmp_path / "otf-2.csv"
    first.write_text(header + "".join(rows[:half]))
    second.write_text(header + "".join(rows[half:]))
    golden = GOLDEN.read_text().replace("\r\n", "\n")
    for files in (["--otf", first, second], ["--otf", first, "--otf", second]):
        done = run("report", "outreach", "--quarter", "2025Q1", "--quarter", "2025Q2", *files,
                   "--mif", MIF, "--plan", "demo-plan")
        assert done.returncode == 0, done.stderr
        assert done.stdout.replace("\r\n", "\n") == golden


def test_cli_xlsx_has_the_same_rows(tmp_path):
    from openpyxl import load_workbook

    out = tmp_path / "outreach.xlsx"
    done = run("report", "outreach", "--quarter", "2025Q1", "--quarter", "2025Q2", "--otf", OTF,
               "--mif", MIF, "--plan", "demo-plan", "--output", out)
    assert done.returncode == 0, done.stderr
    sheet = load_workbook(out, read_only=True)["Outreach"]
    got = [list(row) for row in sheet.iter_rows(values_only=True)]
    golden = list(csv.reader(io.StringIO(GOLDEN.read_text())))
    assert len(got) == len(golden)
    assert got[0] == golden[0]
    value = golden[0].index("Value")
    for cells, expected in zip(got[1:], golden[1:]):
        # the figures as numbers (counts and hours alike), the rest the CSV's text
        assert isinstance(cells[value], (int, float)) and not isinstance(cells[value], bool)
        assert cells[value] == float(expected[value])
        assert [("" if v is None else v) for i, v in enumerate(cells) if i != value] == \
            [v for i, v in enumerate(expected) if i != value]
    hours = [cells[value] for cells in got[1:] if cells[2] == "outreach_hours"]
    assert hours and all(isinstance(h, float) for h in hours)


def test_a_plan_label_that_looks_like_a_formula_is_text(tmp_path):
    """``--plan '=HYPERLINK(...)'``: text in both formats, as every file the gateway writes
    (gateway/tabular/cells.py), never a live formula."""
    from openpyxl import load_workbook

    plan = '=HYPERLINK("http://evil","x")'
    done = run("report", "outreach", "--quarter", "2025Q1", "--otf", OTF, "--mif", MIF,
               "--plan", plan)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert {row[0] for row in rows[1:]} == {"'" + plan}
    out = tmp_path / "outreach.xlsx"
    assert run("report", "outreach", "--quarter", "2025Q1", "--otf", OTF, "--mif", MIF,
               "--plan", plan, "-o", out).returncode == 0
    book = load_workbook(out)
    cells = [row[0] for row in book["Outreach"].iter_rows(min_row=2)]
    assert {(c.value, c.data_type) for c in cells} == {("'" + plan, "s")}


def value(rows, quarter, measure, method=""):
    return next(r[5] for r in rows if r[1] == quarter and r[2] == measure and r[3] == method)


def test_only_in_person_telephonic_and_individualized_electronic_count():
    report = OutreachReport("p", [Quarter(2026, 3)])
    day = date(2026, 7, 1)
    report.add_outreach([
        {"member_cin": "91111111A", "outreach_date": day, "outreach_method": "MAIL",
         "outreach_successful": True, "outreach_minutes": 30},
        {"member_cin": "92222222B", "outreach_date": day, "outreach_method": "STREET",
         "outreach_successful": True, "outreach_minutes": 30},
        {"member_cin": "93333333C", "outreach_date": day, "outreach_method": "TELEPHONE",
         "outreach_successful": True, "outreach_minutes": 15},
        {"member_cin": "93333333C", "outreach_date": day, "outreach_method": "IN_PERSON",
         "outreach_successful": False, "outreach_minutes": 15},
    ])
    rows = report.rows()
    assert value(rows, "2026Q3", "targeted_members") == 3
    assert value(rows, "2026Q3", "members_with_attempt") == 1  # unduplicated
    assert value(rows, "2026Q3", "attempts", "MAIL") == 1
    assert value(rows, "2026Q3", "attempts_total") == 2
    assert value(rows, "2026Q3", "successful_attempts") == 1
    assert value(rows, "2026Q3", "outreach_hours") == Decimal("1.50")


@pytest.mark.parametrize("day, counted", [
    (date(2026, 6, 30), 0), (date(2026, 7, 1), 1), (date(2026, 9, 30), 1), (date(2026, 10, 1), 0)])
def test_quarter_boundaries(day, counted):
    report = OutreachReport("p", [Quarter.parse("2026Q3")])
    report.add_outreach([{"member_cin": "93333333C", "outreach_date": day,
                          "outreach_method": "TELEPHONE", "outreach_successful": False}])
    assert value(report.rows(), "2026Q3", "attempts_total") == counted


@pytest.mark.parametrize("start, end, targeted", [
    (date(2026, 9, 30), None, 1), (date(2026, 10, 1), None, 0),
    (date(2026, 1, 1), date(2026, 7, 1), 1), (date(2026, 1, 1), date(2026, 6, 30), 0)])
def test_targeted_members_are_those_assigned_in_the_quarter(start, end, targeted):
    report = OutreachReport("p", [Quarter(2026, 3)])
    report.add_assignments([{"member_cin": "93333333C", "authorization_date": start,
                             "ecm_benefit_end": end}])
    assert value(report.rows(), "2026Q3", "targeted_members") == targeted


def test_bad_quarter_and_bad_files():
    with pytest.raises(QuarterError):
        Quarter.parse("2026Q5")
    done = run("report", "outreach", "--quarter", "Q3-2026", "--otf", OTF)
    assert done.returncode == 2 and "write it like 2026Q3" in done.stderr
    done = run("report", "outreach", "--quarter", "2025Q1", "--otf",
               FIXTURES / "otf" / "otf-defects.csv")
    assert done.returncode == 1 and done.stdout == ""
    assert "row 2, column Outreach Attempt Method" in done.stderr
    assert "no report" in done.stderr


# -- the API: a plan's report from the OTF its providers sent and its MIF ------------------------
def test_api_report_for_a_plan(tmp_path):
    from conftest import demo_gateway
    from fastapi.testclient import TestClient

    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        sent = client.post("/files", files={"file": ("otf.csv", OTF.read_bytes(), "text/csv")},
                           headers=auth["harbor"])
        assert sent.status_code == 200 and sent.json()["status"] == "routed", sent.text
        answer = client.get("/reports/outreach?quarter=2025Q1&quarter=2025Q2",
                            headers=auth["demo-plan"])
        assert answer.status_code == 200
        rows = list(csv.reader(io.StringIO(answer.text)))
        golden = list(csv.reader(io.StringIO(GOLDEN.read_text())))
        # the same outreach figures as the CLI over the same OTF and MIF (the demo registries
        # hold the fixtures' MIF)
        assert rows == golden
        xlsx = client.get("/reports/outreach?quarter=2025Q1&format=xlsx",
                          headers=auth["demo-plan"])
        assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
        assert client.get("/reports/outreach?quarter=2025Q1",
                          headers=auth["harbor"]).status_code == 403
        assert client.get("/reports/outreach?quarter=2025Q9",
                          headers=auth["demo-plan"]).status_code == 422
        assert client.get("/reports/outreach?quarter=2025Q1").status_code == 401


@pytest.mark.parametrize("quarter", ["0000Q1", "9999Q4", "1899Q4", "2101Q1"])
def test_a_quarter_out_of_range_is_a_usage_error(quarter):
    year = quarter[:4]
    with pytest.raises(QuarterError, match=f"^{year}Q{quarter[-1]} is out of range: the year "
                                           "must be 1900 to 2100$"):
        Quarter.parse(quarter)
    done = run("report", "outreach", "--quarter", quarter, "--otf", OTF)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"ecm-gateway: error: --quarter: {year}Q{quarter[-1]} is out of "
                           "range: the year must be 1900 to 2100\n")


def test_the_first_and_last_quarters_in_range():
    assert (Quarter.parse("1900Q1").first, Quarter.parse("2100Q4").last) == (
        date(1900, 1, 1), date(2100, 12, 31))


def test_api_a_quarter_out_of_range_is_a_422_and_the_server_stays_healthy(tmp_path):
    from conftest import demo_gateway
    from fastapi.testclient import TestClient

    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/reports/outreach?quarter=0000Q1", headers=auth["demo-plan"])
        assert answer.status_code == 422
        assert answer.json() == {"detail": "quarter: 0000Q1 is out of range: the year must be "
                                           "1900 to 2100"}
        answer = client.get("/reports/outreach?quarter=2025Q1&quarter=2025Q9",
                            headers=auth["demo-plan"])
        assert answer.status_code == 422
        assert answer.json() == {"detail": "quarter: '2025Q9' is not a quarter: write it like "
                                           "2026Q3"}
        sent = client.post("/files", files={"file": ("mif.csv", MIF.read_bytes(), "text/csv")},
                           headers=auth["demo-plan"])
        assert sent.status_code == 200 and sent.json()["status"] == "routed", sent.text


def test_a_report_that_fails_half_way_leaves_the_registry_writable(tmp_path, monkeypatch):
    """A report whose code raises while it reads the registry (its rows half read, the failure
    held on to -- as a server's error handling may) answers 500 without a traceback, and the
    next MIF upload still loads the registry (the failed read's cursor no longer holds a stale
    SQLite snapshot on a pooled connection: every later load failed 'database is locked')."""
    from conftest import demo_gateway
    from fastapi.testclient import TestClient

    from gateway.ecm import outreach

    held = []

    def failing(self, rows):
        held.append(rows)  # the half-read result stays alive, as a held traceback keeps it
        next(iter(rows))
        raise RuntimeError("the report failed")

    monkeypatch.setattr(outreach.OutreachReport, "add_assignments", failing)
    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(2):
            answer = client.get("/reports/outreach?quarter=2025Q1", headers=auth["demo-plan"])
            assert answer.status_code == 500
            assert answer.json() == {"detail": "internal error"}
        for plan in ("demo-plan", "demo-plan"):
            sent = client.post("/files", files={"file": ("mif.csv", MIF.read_bytes(),
                                                         "text/csv")}, headers=auth[plan])
            assert sent.status_code == 200 and sent.json()["status"] == "routed", sent.text
    assert len(held) == 2
