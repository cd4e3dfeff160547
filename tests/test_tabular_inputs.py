"""Bad and unusual inputs for the tabular reader: empty files and sheets, encodings, delimiters,
XLSX peculiarities (shared strings, date cells and serials, formulas, merged cells, hidden and
empty sheets, 1904 dates, a wrong <dimension>) and files that are not tables at all. The reader
reports findings for all of them; it never raises anything but LayoutError."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import date

import pytest

from gateway.tabular import LayoutError, read_table, sniff_table
from test_tabular import (
    FIX, GOOD_NPI, MIF_HEADER, excel_serial, make_xlsx, mif_row, rule_ids, rules_at, write_table,
)

VALLEY_MIN = ["CIN", "Last Name", "First Name", "DOB", "POF - High Utilizer", "Auth Date",
              "ECM Start", "Assigned ECM Provider", "Provider NPI", "Provider Tax ID",
              "Reporting Month"]


def mif_values(**changes) -> list:
    return list(mif_row(**changes).values())


# --- empty -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf", b",,,\n , ,\n"])
def test_empty_csv_is_a_file_002_finding(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    result = read_table(path, "mif")
    assert rules_at(result) == [("FILE-002", "file")]
    assert result.rows == [] and result.rows_total == 0
    assert sniff_table(path) is None


def test_header_only_is_a_file_007_warning(tmp_path):
    result = read_table(write_table(tmp_path / "h.csv", MIF_HEADER, []), "mif")
    assert rules_at(result) == [("FILE-007", "file")]
    assert result.layout == "default"


def test_empty_xlsx_sheet(tmp_path):
    path = make_xlsx(tmp_path / "e.xlsx", [("Sheet1", [])])
    assert rules_at(read_table(path, "mif")) == [("FILE-002", "file")]
    # the sheet a layout names is empty; another sheet has text only
    named = make_xlsx(tmp_path / "n.xlsx", [("Read me", [["Member file for June"]]),
                                            ("Members", [])])
    result = read_table(named, "mif")
    assert rules_at(result) == [("FILE-002", "file")]
    assert "Members" in result.findings[0].message
    assert result.layout == "valley-health-plan"


def test_workbook_with_only_hidden_sheets(tmp_path):
    path = make_xlsx(tmp_path / "h.xlsx", [("Secret", [MIF_HEADER, mif_values()], "hidden")])
    result = read_table(path, "mif")
    assert rules_at(result) == [("FILE-002", "file")]
    assert "no visible sheet" in result.findings[0].message


def test_hidden_sheets_are_ignored(tmp_path):
    path = make_xlsx(tmp_path / "h.xlsx", [
        ("Notes", [["Instructions"], ["Send by the 5th"]]),
        ("Old", [MIF_HEADER, mif_values()], "hidden"),
        ("Veryhidden", [MIF_HEADER, mif_values()], "veryHidden")])
    with pytest.raises(LayoutError):
        read_table(path, "mif")
    both = make_xlsx(tmp_path / "b.xlsx", [
        ("Old", [MIF_HEADER, mif_values(**{"Member CIN": "91239999Z"})], "hidden"),
        ("Current", [MIF_HEADER, mif_values()])])
    result = read_table(both, "mif")
    assert result.sheet == "Current"
    assert [r["member_cin"] for _, r in result.rows] == ["91230000A"]


# --- encodings and delimiters ------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_encodings_and_delimiters(tmp_path, encoding, delimiter):
    row = mif_row(**{"Member Last Name": "Peña-Müller", "Member City": "San José"})
    path = write_table(tmp_path / "m.csv", MIF_HEADER, [row], delimiter=delimiter,
                       encoding=encoding)
    result = read_table(path, "mif")
    values = result.rows[0][1]
    assert values["member_last_name"] == "Peña-Müller"
    assert values["member_city"] == "San José"
    assert result.delimiter == delimiter
    if encoding in ("latin-1", "cp1252"):
        assert rules_at(result) == [("FILE-006", "file")]
        assert result.findings[0].severity.value == "info"
    else:
        assert result.findings == []
    assert sniff_table(path) == "mif"
    # the file's kind as every edge (CLI, upload, file drop) tells it first: an audit found a
    # UTF-16 export refused as "binary" there although the reader reads it
    from gateway.sniff import sniff
    assert sniff(path) == "csv"


@pytest.mark.parametrize("content, message", [
    (b"Member CIN,Member Last Name\n9123\x000000A,Doe\n", "the file is binary and not of a "
                                                         "known kind"),  # a NUL in UTF-8 text
    ("\ufeffnot a table at all".encode("utf-16-le"), "not a file of any known kind"),
])
def test_sniff_refuses_binary_and_unknown_text_clearly(tmp_path, content, message):
    from gateway.sniff import UnknownKind, sniff
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(UnknownKind, match=message):
        sniff(path)


def test_windows_1252_punctuation(tmp_path):
    row = mif_row(**{"Member Residential Address": "12 O’Farrell St – Apt 3"})
    path = write_table(tmp_path / "m.csv", MIF_HEADER, [row], encoding="cp1252")
    result = read_table(path, "mif")
    assert result.rows[0][1]["member_address_line1"] == "12 O’Farrell St – Apt 3"


def test_mixed_encoding_lines_are_read_line_by_line(tmp_path):
    text = write_table(tmp_path / "a.csv", MIF_HEADER, [mif_row()]).read_bytes()
    latin = ",".join(mif_values(**{"Member CIN": "91230001B", "Member City": "Atascadero"})
                     ).replace("Atascadero", "Ca\xf1ada").encode("latin-1")
    path = tmp_path / "mixed.csv"
    path.write_bytes(text + latin + b"\r\n")
    result = read_table(path, "mif")
    assert [r["member_city"] for _, r in result.rows] == ["Fresno", "Cañada"]
    assert "1 line" in result.findings[0].message


def test_quoted_values_with_delimiters_and_line_breaks(tmp_path):
    row = mif_row(**{"Member Residential Address": 'Unit 4, "Blue" House\nRear entrance'})
    row2 = mif_row(**{"Member CIN": "bad"})
    result = read_table(write_table(tmp_path / "q.csv", MIF_HEADER, [row, row2]), "mif")
    assert result.rows[0][1]["member_address_line1"].startswith('Unit 4, "Blue" House')
    # the second record starts on physical line 4: its row number says so
    assert rules_at(result) == [("ROW-003", "row 4, column Member CIN")]


def test_title_lines_above_the_csv_header(tmp_path):
    body = write_table(tmp_path / "t.csv", MIF_HEADER, [mif_row()]).read_text("utf-8")
    path = tmp_path / "titled.csv"
    path.write_text("Valley Health Plan MIF\r\nJune 2025\r\n\r\n" + body, encoding="utf-8")
    result = read_table(path, "mif")
    assert result.header_row == 4 and [n for n, _ in result.rows] == [5]


def test_old_mac_line_endings(tmp_path):
    body = write_table(tmp_path / "t.csv", MIF_HEADER, [mif_row()]).read_text("utf-8")
    path = tmp_path / "cr.csv"
    path.write_bytes(body.replace("\r\n", "\r").encode())
    assert len(read_table(path, "mif").rows) == 1


def test_nul_byte_inside_a_csv_row(tmp_path):
    rows = [mif_row(**{"Member CIN": f"9123{i:04d}A"}) for i in range(60)]
    data = write_table(tmp_path / "n.csv", MIF_HEADER, rows).read_bytes()
    cut = data.index(b"91230050A")
    path = tmp_path / "nul.csv"
    path.write_bytes(data[:cut] + b"\x00" + data[cut:])
    result = read_table(path, "mif")
    assert rules_at(result) == [("ROW-003", "row 52, column Member CIN")]
    assert len(result.rows) == 59


def test_unclosed_quote_runs_to_the_end_of_the_file(tmp_path):
    data = write_table(tmp_path / "n.csv", MIF_HEADER, [mif_row()]).read_bytes()
    path = tmp_path / "q.csv"
    path.write_bytes(data + b'91230001B,"unclosed\r\n' + b"x" * 2000)
    result = read_table(path, "mif")
    assert len(result.rows) == 1 and result.rows_total == 2 and result.rows_rejected == 1


def test_csv_structure_error_stops_reading_with_file_008(tmp_path):
    data = write_table(tmp_path / "n.csv", MIF_HEADER, [mif_row()]).read_bytes()
    path = tmp_path / "q.csv"
    path.write_bytes(data + b'91230001B,"unclosed\r\n' + b"x" * (1 << 21))
    result = read_table(path, "mif")
    assert rules_at(result) == [("FILE-008", "row 3")]
    assert "unclosed quote" in result.findings[0].message
    assert len(result.rows) == 1 and result.rows_total == 1


# --- not a table -------------------------------------------------------------------------------
def _xlsx_bytes(tmp_path) -> bytes:
    return make_xlsx(tmp_path / "ok.xlsx", [("MIF", [MIF_HEADER, mif_values()])]).read_bytes()


def test_corrupt_and_fake_xlsx_files_are_findings(tmp_path):
    cases = {
        "random.xlsx": os.urandom(3000) + b"\x00",
        "truncated.xlsx": _xlsx_bytes(tmp_path)[:700],
        "legacy.xlsx": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600,
    }
    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    cases["report.xlsx"] = docx.getvalue()
    broken_xml = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_xlsx_bytes(tmp_path))) as src, \
            zipfile.ZipFile(broken_xml, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data[:-40] if item.filename == "xl/workbook.xml" else data)
    cases["badxml.xlsx"] = broken_xml.getvalue()
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = read_table(path, "mif")
        assert rules_at(result) == [("FILE-004", "file")], name
        assert result.findings[0].message.startswith("the file cannot be read as an XLSX")
        assert sniff_table(path) is None


def test_damaged_sheet_data_is_a_finding(tmp_path):
    good = _xlsx_bytes(tmp_path)
    damaged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sheet1.xml"):
                data = data.replace(b"</sheetData>", b"<row r='3'><c r='A3'><v>1</v></sheetData>")
            dst.writestr(item, data)
    path = tmp_path / "damaged.xlsx"
    path.write_bytes(damaged.getvalue())
    result = read_table(path, "mif")
    assert "FILE-004" in rule_ids(result)
    assert len(result.rows) == 1  # the rows before the damage were read


def test_binary_csv_is_file_005_and_csv_named_xlsx_is_read_as_csv(tmp_path):
    path = tmp_path / "blob.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02" * 100)
    assert rules_at(read_table(path, "mif")) == [("FILE-005", "file")]
    renamed = tmp_path / "actually-csv.xlsx"
    renamed.write_bytes(write_table(tmp_path / "c.csv", MIF_HEADER, [mif_row()]).read_bytes())
    result = read_table(renamed, "mif")  # content decides, not the name
    assert result.format == "csv" and len(result.rows) == 1


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        read_table(tmp_path / "nope.csv", "mif")


# --- XLSX cells --------------------------------------------------------------------------------
def test_xlsx_shared_strings_date_cells_serials_and_numbers(tmp_path):
    auth = date(2025, 3, 3)
    row = [
        "91230000A", "Quillfeather", "Odessa", date(1971, 4, 9),  # a real date cell
        "Y", excel_serial(auth),  # a serial number in a General cell
        "03/03/2025",  # date typed as text
        "Harbor & Sons <East>", int(GOOD_NPI), 41200000,  # TIN lost its leading zero
        ("=TEXT(DATE(2025,6,1),\"mm/yyyy\")", "06/2025")]
    path = make_xlsx(tmp_path / "v.xlsx", [("Members", [VALLEY_MIN, row])])
    result = read_table(path, "mif")
    assert result.layout == "valley-health-plan"
    values = result.rows[0][1]
    assert values["member_birth_date"] == date(1971, 4, 9)
    assert values["authorization_date"] == auth == values["ecm_benefit_start"]
    assert values["ecm_provider_name"] == "Harbor & Sons <East>"
    assert values["ecm_provider_npi"] == GOOD_NPI
    assert values["ecm_provider_tin"] == "041200000"
    assert values["reporting_period"] == "2025-06"
    assert [f.rule for f in result.findings] == ["FILE-003"]  # the optional columns left out


def test_xlsx_inline_strings_and_1904_dates(tmp_path):
    row = ["91230000A", "Quillfeather", "Odessa", date(1971, 4, 9), "Y", date(2025, 3, 3),
           date(2025, 3, 3), "Harbor", GOOD_NPI, "941200000", "06/2025"]
    path = make_xlsx(tmp_path / "v.xlsx", [("Members", [VALLEY_MIN, row])], shared=False,
                     date1904=True)
    values = read_table(path, "mif").rows[0][1]
    assert values["member_birth_date"] == date(1971, 4, 9)
    assert values["authorization_date"] == date(2025, 3, 3)


def test_xlsx_wrong_dimension_and_gaps(tmp_path):
    rows = [MIF_HEADER, mif_values(), None, None, mif_values(**{"Member CIN": "x"})]
    path = make_xlsx(tmp_path / "d.xlsx", [("MIF", rows)], dimension="A1")
    result = read_table(path, "mif")
    assert [n for n, _ in result.rows] == [2]
    assert rules_at(result) == [("ROW-003", "row 5, column Member CIN")]
    assert result.rows_total == 2


def test_xlsx_formula_without_cached_value_reads_as_empty(tmp_path):
    row = mif_values()
    row[MIF_HEADER.index("Member Last Name")] = ("=UPPER(\"x\")", "")
    path = make_xlsx(tmp_path / "f.xlsx", [("MIF", [MIF_HEADER, row])])
    result = read_table(path, "mif")
    assert rules_at(result) == [("ROW-001", "row 2, column Member Last Name")]


def test_xlsx_merged_cells_take_the_top_left_value(tmp_path):
    second = mif_values(**{"Other Program": "GHPP", "Other Program Start Date": "2020-01-01"})
    first = mif_values(**{"Other Program": "CCS", "Other Program Start Date": "2020-01-01"})
    for name in ("Member Last Name", "ECM Provider NPI"):
        second[MIF_HEADER.index(name)] = None
    rows = [["Valley Health Plan - June 2025"], MIF_HEADER, first, second]
    path = make_xlsx(tmp_path / "m.xlsx", [("MIF", rows)],
                     merges={"MIF": ["A1:F1", "B3:B4", "Q3:Q4"]})
    result = read_table(path, "mif")
    assert result.findings == [] and result.header_row == 2
    a, b = (r for _, r in result.rows)
    assert b["member_last_name"] == a["member_last_name"]
    assert b["ecm_provider_npi"] == GOOD_NPI


def test_xlsx_error_cells_are_invalid_values(tmp_path):
    row = mif_values()
    row[MIF_HEADER.index("Member Date of Birth")] = ("=1/0", "#DIV/0!")
    path = make_xlsx(tmp_path / "e.xlsx", [("MIF", [MIF_HEADER, row])])
    assert rule_ids(read_table(path, "mif")) == {"ROW-002"}


def test_workbook_with_rtf_and_otf_sheets(tmp_path):
    assert read_table(FIX / "rtf" / "valley-rtf-otf.xlsx", "otf").sheet == "OTF"
    assert read_table(FIX / "rtf" / "valley-rtf-otf.xlsx", "rtf").sheet == "RTF"
    with pytest.raises(LayoutError):
        read_table(FIX / "rtf" / "valley-rtf-otf.xlsx", "mif")


def test_layout_restricted_to_a_format(tmp_path):
    from gateway.tabular import Layout
    layout = Layout.from_dict({"kind": "mif", "formats": ["xlsx"], "columns": [
        {"field": "member_cin", "header": "Member CIN", "type": "cin", "required": True}]},
        name="xlsx-only")
    with pytest.raises(LayoutError, match="reads only xlsx"):
        read_table(FIX / "mif" / "mif-clean.csv", "mif", layout)


def test_a_file_with_nothing_readable_reports_why(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'"' + b"x" * (1 << 21))
    result = read_table(path, "mif")
    assert rules_at(result) == [("FILE-008", "row 1")]
