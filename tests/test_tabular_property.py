"""Properties of the tabular reader over generated files (hypothesis), and its speed."""

from __future__ import annotations

import csv
import io
import time
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.findings import Severity
from gateway.tabular import LayoutError, open_table, read_table
from test_tabular import GOOD_NPI, MIF_HEADER, make_xlsx, mif_row

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# defects that make a row an error (rejected) and defects that only warn (accepted)
ERROR_DEFECTS = {
    "cin": {"Member CIN": "1234"},
    "last_name": {"Member Last Name": ""},
    "birth_date": {"Member Date of Birth": "1971-02-30"},
    "npi": {"ECM Provider NPI": "1234500002"},
    "tin": {"ECM Provider TIN": "94120"},
    "pof": {"Member POF": "HOMELESS;Q1"},
    "dates": {"ECM Benefit End Date": "2025-03-02"},
    "program_start": {"Other Program": "MSSP"},
    "phone": {"Member Phone Number": "12"},
    "period": {"MIF Reporting Period": "soon"},
}
WARNING_DEFECTS = {
    "late": {"ECM Provider Assignment Date": "2025-04-30"},
    "pof_not_in_effect": {"Member POF": "INCARCERATION", "ECM Authorization Date": "2023-03-01",
                          "ECM Benefit Start Date": "2023-03-01",
                          "ECM Provider Assignment Date": "2023-03-01"},
}
KINDS_OF_ROW = ["clean", "blank", "extra"] + list(ERROR_DEFECTS) + list(WARNING_DEFECTS)


def _render(specs: list[str], delimiter: str, encoding: str) -> tuple[bytes, int, set[int]]:
    """The CSV bytes, the number of non-blank rows and the row numbers that must be rejected."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(MIF_HEADER)
    rejected: set[int] = set()
    total = 0
    for n, spec in enumerate(specs):
        line = n + 2
        cin = f"{92000000 + n:08d}Z"
        if spec == "blank":
            writer.writerow([""] * (n % 3))
            continue
        total += 1
        changes = {"Member CIN": cin, "Member Last Name": "Zyzzyva-Ñandú"}
        changes.update(ERROR_DEFECTS.get(spec) or WARNING_DEFECTS.get(spec) or {})
        values = list(mif_row(**changes).values())
        if spec == "extra":
            values.append("surplus")
        if spec in ERROR_DEFECTS or spec == "extra":
            rejected.add(line)
        writer.writerow(values)
    return buffer.getvalue().encode(encoding), total, rejected


@SETTINGS
@given(specs=st.lists(st.sampled_from(KINDS_OF_ROW), max_size=40),
       delimiter=st.sampled_from([",", ";", "\t"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]))
def test_input_rows_are_accepted_plus_rejected(tmp_path_factory, specs, delimiter, encoding):
    data, total, rejected = _render(specs, delimiter, encoding)
    path = tmp_path_factory.mktemp("prop") / "mif.csv"
    path.write_bytes(data)
    result = read_table(path, "mif")
    assert result.rows_total == total
    assert result.rows_total == len(result.rows) + result.rows_rejected
    assert result.rows_rejected == len(rejected)
    accepted = {n for n, _ in result.rows}
    assert accepted.isdisjoint(rejected)
    error_rows = {int(f.location.split(",")[0].split()[1]) for f in result.findings
                  if f.severity is Severity.ERROR and f.location.startswith("row")}
    assert error_rows == rejected
    for _, row in result.rows:
        assert row["member_last_name"] == "Zyzzyva-Ñandú"


@SETTINGS
@given(cells=st.lists(st.tuples(st.integers(0, len(MIF_HEADER) - 1),
                                st.text(max_size=12)), max_size=30),
       rows=st.integers(1, 8))
def test_random_cell_values_never_break_the_count(tmp_path_factory, cells, rows):
    table = [list(mif_row(**{"Member CIN": f"{93000000 + i:08d}Y"}).values())
             for i in range(rows)]
    for i, (column, text) in enumerate(cells):
        table[i % rows][column] = text
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(MIF_HEADER)
    writer.writerows(table)
    path = tmp_path_factory.mktemp("cells") / "mif.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    result = read_table(path, "mif")
    assert result.rows_total == len(result.rows) + result.rows_rejected
    assert result.rows_total <= rows


@SETTINGS
@given(data=st.binary(max_size=400), name=st.sampled_from(["f.csv", "f.xlsx", "f.txt"]))
def test_arbitrary_bytes_never_raise_anything_but_layout_error(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("bytes") / name
    path.write_bytes(data)
    try:
        result = read_table(path, "mif")
    except LayoutError:
        return
    assert result.rows_total == len(result.rows) + result.rows_rejected


# --- speed -------------------------------------------------------------------------------------
def _big_mif_rows(count: int) -> list[list]:
    base = list(mif_row().values())
    rows = []
    for i in range(count):
        row = list(base)
        row[0] = f"{10000000 + i:08d}A"
        rows.append(row)
    return rows


def test_large_csv_streams_quickly(tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MIF_HEADER)
        writer.writerows(_big_mif_rows(20_000))
    start = time.perf_counter()
    reader = open_table(path, "mif")
    count = sum(1 for _ in reader)  # streaming: rows are not kept
    elapsed = time.perf_counter() - start
    assert count == 20_000 and reader.rows_rejected == 0 and reader.findings == []
    assert elapsed < 10, elapsed  # about 0.6 s on the development machine


def test_large_xlsx_streams(tmp_path):
    rows = _big_mif_rows(5_000)
    for row in rows:
        row[3] = date(1971, 4, 9)
        row[16] = int(GOOD_NPI)
    path = make_xlsx(tmp_path / "big.xlsx", [("MIF", [MIF_HEADER] + rows)])
    start = time.perf_counter()
    result = read_table(path, "mif")
    elapsed = time.perf_counter() - start
    assert len(result.rows) == 5_000 and result.findings == []
    assert elapsed < 15, elapsed  # about 0.7 s on the development machine


def test_path_objects_and_strings(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(",".join(MIF_HEADER) + "\n" + ",".join(mif_row().values()) + "\n")
    assert len(read_table(str(path), "mif").rows) == 1
    assert len(read_table(Path(path), "mif").rows) == 1
