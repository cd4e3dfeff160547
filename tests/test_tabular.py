"""Member-level tabular files (MIF, RTF, OTF, provider roster): layouts, fixtures, golden
comparison of layouts, and every ROW-* rule firing and not firing."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from gateway.findings import Severity
from gateway.paths import MAPPINGS, PROFILES
from gateway.rules import default_catalogue
from gateway.tabular import (
    KINDS, Layout, LayoutDefinitionError, LayoutError, TableResult, load_layouts, read_table,
    sniff_table,
)
from gateway.tabular.validate import business_days_between, luhn_npi_ok

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"

# --- helpers shared with the other test_tabular_* files ----------------------------------------
MIF_HEADER = [
    "Member CIN", "Member Last Name", "Member First Name", "Member Date of Birth", "Member Gender",
    "Member Phone Number", "Member Residential Address", "Member City", "Member State",
    "Member Zip", "Member POF", "ECM Authorization Date", "ECM Provider Assignment Date",
    "ECM Benefit Start Date", "ECM Benefit End Date", "ECM Provider Name", "ECM Provider NPI",
    "ECM Provider TIN", "ECM Lead Care Manager Name", "ECM Lead Care Manager Phone Number",
    "ECM Lead Care Manager Email", "Other Program", "Other Program Start Date",
    "Other Program End Date", "MIF Reporting Period"]

GOOD_NPI = "1234500001"


def mif_row(**changes: str) -> dict[str, str]:
    """One valid default-layout MIF row (header -> text), with changes by header."""
    row = {
        "Member CIN": "91230000A", "Member Last Name": "Quillfeather",
        "Member First Name": "Odessa", "Member Date of Birth": "1971-04-09",
        "Member Gender": "F", "Member Phone Number": "559-555-0142",
        "Member Residential Address": "42 Larkspur Ln", "Member City": "Fresno",
        "Member State": "CA", "Member Zip": "93721", "Member POF": "HOMELESS;SMI_SUD",
        "ECM Authorization Date": "2025-03-03", "ECM Provider Assignment Date": "2025-03-05",
        "ECM Benefit Start Date": "2025-03-03", "ECM Benefit End Date": "",
        "ECM Provider Name": "Harbor Community Health Center", "ECM Provider NPI": GOOD_NPI,
        "ECM Provider TIN": "941200000", "ECM Lead Care Manager Name": "Ezra Bellamy",
        "ECM Lead Care Manager Phone Number": "9165550401",
        "ECM Lead Care Manager Email": "ezra@example.org", "Other Program": "",
        "Other Program Start Date": "", "Other Program End Date": "",
        "MIF Reporting Period": "2025-06"}
    for key, value in changes.items():
        assert key in row, key
        row[key] = value
    return row


def write_table(path: Path, header: list[str], rows: list[dict | list], delimiter: str = ",",
                encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(h, "") for h in header] if isinstance(row, dict) else row)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def read_mif_rows(tmp_path: Path, *rows: dict, layout=None, name: str = "mif.csv") -> TableResult:
    return read_table(write_table(tmp_path / name, MIF_HEADER, list(rows)), "mif", layout)


def rules_at(result: TableResult) -> list[tuple[str, str]]:
    return [(f.rule, f.location) for f in result.findings]


def rule_ids(result: TableResult) -> set[str]:
    return {f.rule for f in result.findings}


def excel_serial(day: date) -> int:
    return (day - date(1899, 12, 30)).days


def make_xlsx(path: Path, sheets: list[tuple], *, shared: bool = True, date1904: bool = False,
              merges: dict | None = None, dimension: str | None = None) -> Path:
    """A minimal XLSX written part by part, as Excel writes it (shared strings, date styles,
    formulas with cached values), for the reader tests. ``sheets``: (name, rows[, state]); a cell
    is str, int, float, bool, date, None, or ("=FORMULA", cached value)."""
    strings: list[str] = []
    index: dict[str, int] = {}
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel_ns = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"

    def esc(text: str) -> str:
        return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                .replace('"', "&quot;"))

    def col(n: int) -> str:
        out = ""
        while n:
            n, rem = divmod(n - 1, 26)
            out = chr(65 + rem) + out
        return out

    def cell(ref: str, value) -> str:
        if value is None:
            return ""
        if isinstance(value, tuple):
            formula, cached = value
            if isinstance(cached, str):
                return f'<c r="{ref}" t="str"><f>{esc(formula[1:])}</f><v>{esc(cached)}</v></c>'
            return f'<c r="{ref}"><f>{esc(formula[1:])}</f><v>{cached}</v></c>'
        if isinstance(value, bool):
            return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
        if isinstance(value, date):
            epoch = date(1904, 1, 1) if date1904 else date(1899, 12, 30)
            return f'<c r="{ref}" s="1"><v>{(value - epoch).days}</v></c>'
        if isinstance(value, (int, float)):
            return f'<c r="{ref}"><v>{value}</v></c>'
        if shared:
            if value not in index:
                index[value] = len(strings)
                strings.append(value)
            return f'<c r="{ref}" t="s"><v>{index[value]}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t>{esc(value)}</t></is></c>'

    sheet_xml = []
    for number, sheet in enumerate(sheets, 1):
        name, rows = sheet[0], sheet[1]
        body = []
        for r, row in enumerate(rows, 1):
            if row is None:
                continue
            cells = "".join(cell(f"{col(c)}{r}", v) for c, v in enumerate(row, 1))
            body.append(f'<row r="{r}">{cells}</row>')
        merge = ""
        if merges and name in merges:
            refs = "".join(f'<mergeCell ref="{m}"/>' for m in merges[name])
            merge = f'<mergeCells count="{len(merges[name])}">{refs}</mergeCells>'
        dim = f'<dimension ref="{dimension}"/>' if dimension else ""
        sheet_xml.append(f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}">'
                         f'{dim}<sheetData>{"".join(body)}</sheetData>{merge}</worksheet>')
    sst = (f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{main}" count="{len(strings)}" '
           f'uniqueCount="{len(strings)}">'
           + "".join(f"<si><t>{esc(s)}</t></si>" for s in strings) + "</sst>")
    styles = (f'<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="{main}">'
              '<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/>'
              '</cellXfs></styleSheet>')
    sheets_el = "".join(
        f'<sheet name="{esc(s[0])}" sheetId="{i}" r:id="rId{i}"'
        + (f' state="{s[2]}"' if len(s) > 2 else "") + "/>"
        for i, s in enumerate(sheets, 1))
    workbook = (f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" '
                f'xmlns:r="{rel_ns}"><workbookPr'
                + (' date1904="1"' if date1904 else "") + f"/><sheets>{sheets_el}</sheets>"
                "</workbook>")
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{rel_ns}/worksheet" '
        f'Target="worksheets/sheet{i}.xml"/>' for i in range(1, len(sheets) + 1))
    rels += (f'<Relationship Id="rIdS" Type="{rel_ns}/styles" Target="styles.xml"/>'
             f'<Relationship Id="rIdT" Type="{rel_ns}/sharedStrings" '
             'Target="sharedStrings.xml"/>')
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/content-types"><Default Extension="xml" '
                   'ContentType="application/xml"/></Types>')
        z.writestr("_rels/.rels", f'<?xml version="1.0" encoding="UTF-8"?><Relationships '
                   f'xmlns="{pkg}"><Relationship Id="rId1" Type="{rel_ns}/officeDocument" '
                   'Target="xl/workbook.xml"/></Relationships>')
        z.writestr("xl/workbook.xml", workbook)
        z.writestr("xl/_rels/workbook.xml.rels",
                   f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}">'
                   f"{rels}</Relationships>")
        z.writestr("xl/styles.xml", styles)
        z.writestr("xl/sharedStrings.xml", sst)
        for i, xml in enumerate(sheet_xml, 1):
            z.writestr(f"xl/worksheets/sheet{i}.xml", xml)
    return path


# --- layouts and code sets ---------------------------------------------------------------------
def test_every_kind_has_a_default_layout_and_mif_rtf_otf_have_a_plan_variant():
    for kind in KINDS:
        names = [layout.name for layout in load_layouts(kind)]
        assert names[0] == "default", kind
        if kind in ("mif", "rtf", "otf", "invoice"):
            assert len(names) >= 2, kind


def test_layout_files_name_their_kind_and_use_known_rules():
    for kind in KINDS:
        for path in (MAPPINGS / "layouts" / kind).glob("*.yaml"):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            assert data["kind"] == kind
            assert data.get("description")


def test_canonical_field_names():
    mif = {c.field for c in load_layouts("mif")[0].columns}
    assert mif == {
        "member_cin", "member_last_name", "member_first_name", "member_birth_date",
        "member_gender", "member_phone", "member_address_line1", "member_city", "member_state",
        "member_zip", "pof_codes", "authorization_date", "assignment_date", "ecm_benefit_start",
        "ecm_benefit_end", "ecm_provider_name", "ecm_provider_npi", "ecm_provider_tin",
        "lead_care_manager_name", "lead_care_manager_phone", "lead_care_manager_email",
        "other_program", "other_program_start", "other_program_end", "reporting_period"}
    roster = {c.field for c in load_layouts("roster")[0].columns}
    assert roster == {"provider_npi", "provider_tin", "provider_name", "ecm", "cs",
                      "cs_services", "active_from", "active_to"}
    rtf = {c.field for c in load_layouts("rtf")[0].columns}
    assert {"mcp_identifier", "member_cin", "member_ecm_status", "ecm_enrollment_start",
            "ecm_enrollment_end", "discontinuation_date", "discontinuation_reason_code",
            "referral_status", "referral_status_date", "referral_closure_reason",
            "ecm_provider_npi", "ecm_provider_tin"} <= rtf
    otf = {c.field for c in load_layouts("otf")[0].columns}
    assert {"member_cin", "outreach_date", "outreach_method", "outreach_successful",
            "outreach_minutes", "ecm_provider_npi"} <= otf
    for kind in ("mif", "rtf", "otf"):
        default, *variants = load_layouts(kind)
        for variant in variants:
            assert {c.field for c in default.columns} <= {c.field for c in variant.columns}


def _codeset(name: str) -> list[dict]:
    with open(PROFILES / "codesets" / f"{name}.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_pof_codeset_has_adult_and_children_pofs_with_sources():
    rows = _codeset("pof")
    assert set(rows[0]) == {"code", "label", "population", "effective_from", "effective_to",
                            "source", "confirmed", "age_from", "age_below", "age_source",
                            "age_confirmed"}
    populations = {r["population"] for r in rows}
    assert populations == {"adult", "children_youth"}
    assert sum(r["population"] == "adult" for r in rows) >= 6
    assert sum(r["population"] == "children_youth" for r in rows) >= 6
    assert {"HIGH_UTILIZER", "SMI_SUD"} <= {r["code"] for r in rows}  # used by utilization.yaml
    for r in rows:
        assert r["source"] and r["confirmed"] in ("yes", "no")
        date.fromisoformat(r["effective_from"])
    assert {r["confirmed"] for r in rows if "BIRTH_EQUITY" in r["code"]} == {"no"}


def test_programs_codeset_overlap_approaches():
    rows = {r["code"]: r for r in _codeset("programs") if not r["effective_from"]
            or r["effective_from"] <= "2022-06-01" <= (r["effective_to"] or "9999")}
    approach = {code: r["approach"] for code, r in rows.items()}
    for code in ("HOSPICE", "PACE", "CMC", "FIDE_SNP", "FMP", "MCFFS"):
        assert approach[code] == "excluded"  # in 2022 (Figure 5, 002:1170)
    for code in ("MSSP", "ALW", "HCBA", "HIV_AIDS", "DD_WAIVER", "SDP", "CCT", "BCM", "CCM"):
        assert approach[code] == "either_or"
    for code in ("COUNTY_TCM", "SMHS_TCM", "SMHS_FSP", "DMC_ODS", "GHPP", "CBAS", "CCS", "ICC",
                 "HCPCFC"):
        assert approach[code] == "wrap"
    assert all(r["source"].startswith(("ECM Policy Guide 002:", "Children and Youth spotlight 003:"))
               for r in rows.values())
    assert all(code == code.upper() and len(code) <= 12 for code in rows)


def test_discontinuation_reasons_are_unconfirmed_1_to_15():
    rows = _codeset("discontinuation-reasons")
    assert [r["code"] for r in rows] == [str(i) for i in range(1, 16)]
    assert {r["confirmed"] for r in rows} == {"no"}
    assert {r["code"] for r in _codeset("ecm-status")} >= {"ENROLLED", "DISCONTINUED"}
    assert {r["code"] for r in _codeset("outreach-methods")} >= {"IN_PERSON", "TELEPHONE"}


def test_rule_pack_ids_and_messages():
    pack = yaml.safe_load((PROFILES / "rules" / "tabular.yaml").read_text(encoding="utf-8"))
    ids = [r["id"] for r in pack["rules"]]
    assert all(i.startswith(("FILE-", "ROW-")) for i in ids)
    catalogue = default_catalogue()
    for rule in pack["rules"]:
        assert rule["source"] and rule["message"]
        assert rule["id"] in catalogue


def test_a_broken_layout_is_refused_when_loaded():
    base = {"kind": "mif", "columns": [{"field": "member_cin", "header": "CIN", "type": "cin"}]}
    Layout.from_dict(base, name="ok")
    bad_cases = [
        {**base, "colums": []},
        {"kind": "mif", "columns": [{"field": "x", "header": "X", "type": "currency"}]},
        {"kind": "mif", "columns": [{"field": "x", "header": "X", "type": "code",
                                     "codeset": "no-such-set"}]},
        {"kind": "mif", "columns": [{"field": "x", "header": "X", "type": "date",
                                     "after": "nowhere"}]},
        {**base, "checks": [{"check": "unique", "fields": ["member_cin"], "rule": "ROW-999"}]},
        {"kind": "mif", "columns": [{"field": "a", "header": "Same", "type": "text"},
                                    {"field": "b", "header": "same", "type": "text"}]},
        {"kind": "nonsense", "columns": base["columns"]},
    ]
    for data in bad_cases:
        with pytest.raises(LayoutDefinitionError):
            Layout.from_dict(data, name="bad")


def test_luhn_and_business_days_helpers():
    assert luhn_npi_ok("1234567893")  # the CMS example NPI
    assert not luhn_npi_ok("1234567890")
    monday = date(2025, 3, 3)
    assert business_days_between(monday, monday) == 0
    assert business_days_between(monday, date(2025, 3, 17)) == 10
    assert business_days_between(monday, date(2025, 3, 18)) == 11
    assert business_days_between(monday, date(2025, 3, 18), {date(2025, 3, 10)}) == 10
    assert business_days_between(date(2025, 3, 7), date(2025, 3, 10)) == 1  # Fri -> Mon


# --- fixtures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path,kind,layout", [
    ("mif/mif-clean.csv", "mif", "default"),
    ("mif/mif-clean.xlsx", "mif", "default"),
    ("mif/mif-valley.csv", "mif", "valley-health-plan"),
    ("mif/mif-valley.xlsx", "mif", "valley-health-plan"),
    ("rtf/rtf-clean.csv", "rtf", "default"),
    ("rtf/valley-rtf-otf.xlsx", "rtf", "valley-health-plan"),
    ("otf/otf-clean.csv", "otf", "default"),
    ("rtf/valley-rtf-otf.xlsx", "otf", "valley-health-plan"),
    ("roster/providers.csv", "roster", "default"),
])
def test_clean_fixtures_read_without_findings(path, kind, layout):
    result = read_table(FIX / path, kind)
    assert result.layout == layout
    assert result.findings == []
    assert result.rows_rejected == 0
    assert result.rows_total == len(result.rows) > 0
    explicit = read_table(FIX / path, kind, layout)
    assert explicit.rows == result.rows


def test_clean_mif_content():
    result = read_table(FIX / "mif" / "mif-clean.csv", "mif")
    rows = [r for _, r in result.rows]
    assert 28 <= len({r["member_cin"] for r in rows}) <= 32
    programs = {r["other_program"] for r in rows if r["other_program"]}
    assert {"HOSPICE", "MSSP", "CCS"} <= programs
    cins = [r["member_cin"] for r in rows]
    twice = {c for c in cins if cins.count(c) == 2}
    assert len(twice) == 1  # one member in two other programs: two rows
    assert [n for n, _ in result.rows] == list(range(2, 2 + len(rows)))
    first = rows[0]
    assert isinstance(first["member_birth_date"], date)
    assert isinstance(first["pof_codes"], list)
    assert first["reporting_period"] == "2025-06"


def test_mif_providers_are_in_the_roster_and_the_roster_is_varied():
    roster = read_table(FIX / "roster" / "providers.csv", "roster")
    providers = {r["provider_npi"]: r for _, r in roster.rows}
    assert 7 <= len(providers) <= 10
    kinds = {(r["ecm"], r["cs"]) for r in providers.values()}
    assert kinds == {(True, False), (False, True), (True, True)}
    assert any(r["active_to"] and r["active_to"] < date(2025, 1, 1) for r in providers.values())
    assert all(r["cs_services"] for r in providers.values() if r["cs"])
    mif = read_table(FIX / "mif" / "mif-clean.csv", "mif")
    for _, row in mif.rows:
        provider = providers[row["ecm_provider_npi"]]
        assert provider["ecm"] and provider["provider_tin"] == row["ecm_provider_tin"]
        assert provider["active_to"] is None


def test_fixture_identifiers_are_synthetic_shapes():
    mif = read_table(FIX / "mif" / "mif-clean.csv", "mif")
    for _, row in mif.rows:
        assert len(row["member_cin"]) == 9 and row["member_cin"][-1].isalpha()
        assert luhn_npi_ok(row["ecm_provider_npi"])
        assert len(row["ecm_provider_tin"]) == 9


def _canonical(result: TableResult, fields=None) -> list[dict]:
    return [{k: v for k, v in row.items() if fields is None or k in fields}
            for _, row in result.rows]


def test_golden_mif_same_canonical_rows_from_every_layout_and_format():
    golden = _canonical(read_table(FIX / "mif" / "mif-clean.csv", "mif"))
    for name in ("mif-clean.xlsx", "mif-valley.csv", "mif-valley.xlsx"):
        assert _canonical(read_table(FIX / "mif" / name, "mif")) == golden, name


def test_golden_rtf_and_otf_default_csv_equal_plan_workbook():
    for kind, csv_name in (("rtf", "rtf/rtf-clean.csv"), ("otf", "otf/otf-clean.csv")):
        golden = read_table(FIX / csv_name, kind)
        fields = set(golden.rows[0][1])
        workbook = read_table(FIX / "rtf" / "valley-rtf-otf.xlsx", kind)
        assert workbook.sheet == kind.upper()
        assert _canonical(workbook, fields) == _canonical(golden)
    variant = read_table(FIX / "rtf" / "valley-rtf-otf.xlsx", "rtf")
    assert {"member_mrn", "authorization_number", "member_dual_eligible"} <= set(variant.rows[0][1])


def test_variant_xlsx_title_block_merged_cells_formulas_and_hidden_sheet():
    result = read_table(FIX / "mif" / "mif-valley.xlsx", "mif")
    assert result.sheet == "Members" and result.header_row == 4
    rows = dict(result.rows)
    assert min(rows) == 5
    cins = [r["member_cin"] for r in rows.values()]
    pair = [n for n, r in rows.items() if cins.count(r["member_cin"]) == 2]
    # the second row of the member with two programs has merged (empty) name cells
    assert rows[pair[0]]["member_last_name"] == rows[pair[1]]["member_last_name"]
    assert rows[pair[1]]["ecm_provider_name"]
    assert {r["reporting_period"] for r in rows.values()} == {"2025-06"}  # formula results


@pytest.mark.parametrize("name,kind", [
    ("mif/mif-defects.csv", "mif"), ("rtf/rtf-defects.csv", "rtf"),
    ("otf/otf-defects.csv", "otf")])
def test_defective_fixtures_report_exactly_the_expected_findings(name, kind):
    expected = json.loads((FIX / name).with_suffix(".expected.json").read_text("utf-8"))
    result = read_table(FIX / name, kind)
    found = sorted([int(f.location.split(",")[0].split()[1]), f.rule] for f in result.findings)
    assert found == expected["findings"]
    assert result.rows_total == expected["rows_total"]
    error_rows = {n for n, rule in found if default_catalogue().rule(rule).severity
                  is Severity.ERROR}
    assert result.rows_rejected == len(error_rows)
    assert {n for n, _ in result.rows}.isdisjoint(error_rows)
    assert result.rows_total == len(result.rows) + result.rows_rejected


def test_messages_never_carry_member_data():
    for name, kind in (("mif/mif-defects.csv", "mif"), ("rtf/rtf-defects.csv", "rtf"),
                       ("otf/otf-defects.csv", "otf")):
        with open(FIX / name, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        header = set(rows[0])
        # member data: every cell value except the codes a layout itself names (a condition
        # such as "required when the status is DISCONTINUED" may name a code)
        values = {v for row in rows[1:] for v in row
                  if len(v) > 3 and v not in header and not re.fullmatch(r"[A-Z_]+", v)}
        for finding in read_table(FIX / name, kind).findings:
            for value in values:
                assert value not in finding.message, (finding.rule, value)
                assert value not in finding.location


def test_sniff_table_knows_every_fixture_kind():
    assert sniff_table(FIX / "mif" / "mif-clean.csv") == "mif"
    assert sniff_table(FIX / "mif" / "mif-valley.xlsx") == "mif"
    assert sniff_table(FIX / "rtf" / "rtf-clean.csv") == "rtf"
    assert sniff_table(FIX / "otf" / "otf-clean.csv") == "otf"
    assert sniff_table(FIX / "roster" / "providers.csv") == "roster"
    assert sniff_table(FIX / "rtf" / "valley-rtf-otf.xlsx") in ("rtf", "otf")
    assert sniff_table(FIX / "837p" / "ecm-clean.x12") is None


# --- rules: each fires, and does not fire on the valid neighbour ------------------------------
def _one(tmp_path, **changes) -> TableResult:
    return read_mif_rows(tmp_path, mif_row(**changes))


def test_clean_row_has_no_findings(tmp_path):
    result = _one(tmp_path)
    assert result.findings == [] and len(result.rows) == 1
    row = result.rows[0][1]
    assert row["pof_codes"] == ["HOMELESS", "SMI_SUD"]
    assert row["member_phone"] == "5595550142"
    assert row["ecm_benefit_end"] is None and row["other_program"] is None


def test_row_001_required_value(tmp_path):
    result = _one(tmp_path, **{"Member First Name": " "})
    assert rules_at(result) == [("ROW-001", "row 2, column Member First Name")]
    assert result.rows == [] and result.rows_rejected == 1
    assert rule_ids(_one(tmp_path, **{"Member Gender": ""})) == set()  # optional


@pytest.mark.parametrize("value,ok", [
    ("1971-04-09", True), ("1971-4-9", True), ("1971-04-09 00:00:00", True),
    ("04/09/1971", False), ("1971-02-30", False), ("19710409", False), ("yesterday", False)])
def test_row_002_date_format(tmp_path, value, ok):
    result = _one(tmp_path, **{"Member Date of Birth": value})
    assert rule_ids(result) == (set() if ok else {"ROW-002"})


def test_row_002_date_format_of_the_layout(tmp_path):
    header = ["CIN", "Last Name", "First Name", "DOB", "POF - High Utilizer", "Auth Date",
              "ECM Start", "Assigned ECM Provider", "Provider NPI", "Provider Tax ID",
              "Reporting Month"]
    good = ["91230000A", "Quillfeather", "Odessa", "04/09/1971", "Y", "3/3/2025", "03/03/2025",
            "Harbor", GOOD_NPI, "94-1200000", "06/2025"]
    path = write_table(tmp_path / "v.csv", header, [good, good[:3] + ["1971-04-09"] + good[4:]])
    result = read_table(path, "mif")
    assert result.layout == "valley-health-plan"
    assert rules_at(result)[-1] == ("ROW-002", "row 3, column DOB")
    assert result.rows[0][1]["member_birth_date"] == date(1971, 4, 9)
    assert result.rows[0][1]["ecm_provider_tin"] == "941200000"
    assert result.rows[0][1]["pof_codes"] == ["HIGH_UTILIZER"]


@pytest.mark.parametrize("value,ok", [("91230000A", True), ("91230000a", True),
                                      ("9123000A", False), ("912300001", False),
                                      ("91230000AB", False), ("A91230000", False)])
def test_row_003_cin(tmp_path, value, ok):
    result = _one(tmp_path, **{"Member CIN": value})
    assert rule_ids(result) == (set() if ok else {"ROW-003"})
    if ok:
        assert result.rows[0][1]["member_cin"] == value.upper()


@pytest.mark.parametrize("value,ok", [(GOOD_NPI, True), ("1234567893", True),
                                      ("1234567890", False), ("123456789", False),
                                      ("12345678901", False), ("12345A7893", False)])
def test_row_004_npi(tmp_path, value, ok):
    assert rule_ids(_one(tmp_path, **{"ECM Provider NPI": value})) == (set() if ok else {"ROW-004"})


@pytest.mark.parametrize("value,normal", [("941200000", "941200000"), ("94-1200000", "941200000"),
                                          ("9412000", None), ("94-12000001", None),
                                          ("941-200-000", None)])
def test_row_005_tin(tmp_path, value, normal):
    result = _one(tmp_path, **{"ECM Provider TIN": value})
    if normal:
        assert result.findings == [] and result.rows[0][1]["ecm_provider_tin"] == normal
    else:
        assert rule_ids(result) == {"ROW-005"}


def test_row_006_codes_from_code_set_and_inline_list(tmp_path):
    assert rule_ids(_one(tmp_path, **{"Member POF": "homeless, cy_ccs"})) == set()
    bad = _one(tmp_path, **{"Member POF": "HOMELESS;ZZ"})
    assert rules_at(bad) == [("ROW-006", "row 2, column Member POF")]
    assert "'ZZ'" in bad.findings[0].message and "pof" in bad.findings[0].message
    long_bad = _one(tmp_path, **{"Member POF": "HOMELESSNESS"})
    assert "HOMELESSNESS" not in long_bad.findings[0].message  # codes > 3 chars are not shown
    assert rule_ids(_one(tmp_path, **{"Member Gender": "female"})) == set()  # mapped to F
    assert rule_ids(_one(tmp_path, **{"Member Gender": "W"})) == {"ROW-006"}
    assert rule_ids(_one(tmp_path, **{"Other Program": "mssp",
                                      "Other Program Start Date": "2020-01-01"})) == set()
    assert rule_ids(_one(tmp_path, **{"Other Program": "smhs tcm",
                                      "Other Program Start Date": "2020-01-01"})) == set()
    assert rule_ids(_one(tmp_path, **{"Other Program": "XYZ",
                                      "Other Program Start Date": "2020-01-01"})) == {"ROW-006"}


def test_row_007_end_not_before_start(tmp_path):
    same = _one(tmp_path, **{"ECM Benefit End Date": "2025-03-03"})
    assert same.findings == []  # end == start is fine
    before = _one(tmp_path, **{"ECM Benefit End Date": "2025-03-02"})
    assert rules_at(before) == [("ROW-007", "row 2, column ECM Benefit End Date")]
    assert "ECM Benefit Start Date" in before.findings[0].message
    program = dict(**{"Other Program": "CCS", "Other Program Start Date": "2024-01-01"})
    assert rule_ids(_one(tmp_path, **program, **{"Other Program End Date": "2023-12-31"})) \
        == {"ROW-007"}
    assert rule_ids(_one(tmp_path, **program, **{"Other Program End Date": "2024-01-01"})) \
        == set()


def test_row_008_conditionally_required(tmp_path):
    result = _one(tmp_path, **{"Other Program": "HOSPICE"})
    assert rules_at(result) == [("ROW-008", "row 2, column Other Program Start Date")]
    assert "Other Program" in result.findings[0].message
    assert rule_ids(_one(tmp_path, **{"Other Program": "HOSPICE",
                                      "Other Program Start Date": "2025-04-01"})) == set()
    assert rule_ids(_one(tmp_path, **{"Other Program Start Date": "2025-04-01"})) == set()


RTF_HEADER = [c.headers[0] for c in load_layouts("rtf")[0].columns]


def rtf_row(**changes: str) -> dict:
    row = {h: "" for h in RTF_HEADER}
    row.update({"Member CIN": "91230000A", "Member Last Name": "Quillfeather",
                "Member First Name": "Odessa", "Member ECM Status": "ENROLLED",
                "ECM Enrollment Start Date": "2025-03-03", "RTF Production Date": "2025-07-03",
                "ECM Provider Name": "Harbor Community Health Center",
                "ECM Provider NPI": GOOD_NPI, "ECM Provider TIN": "941200000"})
    for key, value in changes.items():
        assert key in row, key
        row[key] = value
    return row


def read_rtf(tmp_path, *rows) -> TableResult:
    return read_table(write_table(tmp_path / "rtf.csv", RTF_HEADER, list(rows)), "rtf")


def test_row_009_discontinuation_reason_required_with_date(tmp_path):
    assert read_rtf(tmp_path, rtf_row()).findings == []
    missing = read_rtf(tmp_path, rtf_row(**{"Discontinuation Date": "2025-06-01"}))
    assert rules_at(missing) == [("ROW-009", "row 2, column Discontinuation Reason Code")]
    given = read_rtf(tmp_path, rtf_row(**{"Discontinuation Date": "2025-06-01",
                                          "Discontinuation Reason Code": "2",
                                          "Member ECM Status": "DISCONTINUED"}))
    assert given.findings == []
    assert given.rows[0][1]["discontinuation_reason_code"] == "2"
    status_only = read_rtf(tmp_path, rtf_row(**{"Member ECM Status": "DISCONTINUED"}))
    assert rules_at(status_only) == [("ROW-008", "row 2, column Discontinuation Date")]


def test_row_010_referral_status_fields(tmp_path):
    assert read_rtf(tmp_path, rtf_row(**{"Referral Status": "ACCEPTED",
                                         "Date of Referral Status Update": "2025-06-02"})
                    ).findings == []
    no_date = read_rtf(tmp_path, rtf_row(**{"Referral Status": "ACCEPTED"}))
    assert rules_at(no_date) == [("ROW-010", "row 2, column Date of Referral Status Update")]
    closed = read_rtf(tmp_path, rtf_row(**{"Referral Status": "CLOSED",
                                           "Date of Referral Status Update": "2025-06-02"}))
    assert rules_at(closed) == [("ROW-010", "row 2, column Reason for Referral (Loop) Closure")]
    closed_ok = read_rtf(tmp_path, rtf_row(**{
        "Referral Status": "CLOSED", "Date of Referral Status Update": "2025-06-02",
        "Reason for Referral (Loop) Closure": "Service completed"}))
    assert closed_ok.findings == []


def _assigned_after(tmp_path, days: int, holidays=None):
    auth = date(2025, 3, 3)  # a Monday
    told = auth
    left = days
    while left:
        told += timedelta(days=1)
        if told.weekday() < 5 and told not in (holidays or ()):
            left -= 1
    return mif_row(**{"ECM Authorization Date": auth.isoformat(),
                      "ECM Benefit Start Date": auth.isoformat(),
                      "ECM Provider Assignment Date": told.isoformat()}), told


def test_row_011_assignment_within_10_business_days(tmp_path):
    tenth, told10 = _assigned_after(tmp_path, 10)
    assert told10 == date(2025, 3, 17)
    assert read_mif_rows(tmp_path, tenth).findings == []
    eleventh, _ = _assigned_after(tmp_path, 11)
    late = read_mif_rows(tmp_path, eleventh)
    assert rules_at(late) == [("ROW-011", "row 2, column ECM Provider Assignment Date")]
    assert late.findings[0].severity is Severity.WARNING
    assert len(late.rows) == 1  # a warning keeps the row
    same_day = mif_row(**{"ECM Provider Assignment Date": "2025-03-03"})
    assert read_mif_rows(tmp_path, same_day).findings == []


def test_row_011_weekends_and_layout_holidays(tmp_path):
    data = yaml.safe_load((MAPPINGS / "layouts" / "mif" / "default.yaml").read_text("utf-8"))
    holiday = date(2025, 3, 10)
    data["checks"][0]["holidays"] = [holiday.isoformat()]
    layout = Layout.from_dict(data, name="with-holiday", kind="mif")
    row, told = _assigned_after(tmp_path, 10, holidays={holiday})  # the 10th day with a holiday
    assert told == date(2025, 3, 18)
    assert read_mif_rows(tmp_path, row, layout=layout).findings == []
    assert rule_ids(read_mif_rows(tmp_path, row)) == {"ROW-011"}  # the 11th without it
    friday = mif_row(**{"ECM Authorization Date": "2025-03-07",
                        "ECM Benefit Start Date": "2025-03-07",
                        "ECM Provider Assignment Date": "2025-03-21"})  # 10 business days
    assert read_mif_rows(tmp_path, friday).findings == []


def test_row_012_duplicate_rows(tmp_path):
    assert read_rtf(tmp_path, rtf_row(), rtf_row(**{"Member CIN": "91230001B"})).findings == []
    twice = read_rtf(tmp_path, rtf_row(), rtf_row())
    assert rules_at(twice) == [("ROW-012", "row 3")]
    assert twice.findings[0].severity is Severity.WARNING and len(twice.rows) == 2
    # the MIF allows one row per other program for the same member
    ccs = mif_row(**{"Other Program": "CCS", "Other Program Start Date": "2020-01-01"})
    ghpp = mif_row(**{"Other Program": "GHPP", "Other Program Start Date": "2020-01-01"})
    assert read_mif_rows(tmp_path, ccs, ghpp).findings == []
    assert rule_ids(read_mif_rows(tmp_path, ccs, ccs)) == {"ROW-012"}


def test_row_013_whole_numbers_and_minutes(tmp_path):
    assert read_rtf(tmp_path, rtf_row(**{"In Person": "3"})).findings == []
    assert rule_ids(read_rtf(tmp_path, rtf_row(**{"In Person": "2.5"}))) == {"ROW-013"}
    assert rule_ids(read_rtf(tmp_path, rtf_row(**{"In Person": "-1"}))) == {"ROW-013"}
    header = [c.headers[0] for c in load_layouts("otf")[0].columns]
    base = {"ECM Provider Name": "Harbor", "ECM Provider NPI": GOOD_NPI,
            "ECM Provider TIN": "941200000", "Member CIN": "91230000A",
            "Date of Outreach Attempt": "2025-03-04", "Outreach Attempt Method": "phone",
            "Outreach Attempt Successful": "N"}
    cases = {"45": 45, "1:30": 90, "0": 0, "1440": 1440, "45 min": 45}
    for text, minutes in cases.items():
        result = read_table(write_table(tmp_path / "o.csv", header, [
            {**base, "Time Spent Performing Outreach": text}]), "otf")
        assert result.findings == [] and result.rows[0][1]["outreach_minutes"] == minutes
        assert result.rows[0][1]["outreach_method"] == "TELEPHONE"
    for text in ("1441", "-5", "abc", "1.5"):
        result = read_table(write_table(tmp_path / "o.csv", header, [
            {**base, "Time Spent Performing Outreach": text}]), "otf")
        assert rule_ids(result) == {"ROW-013"}, text


def test_row_014_yes_no(tmp_path):
    for value, expected in (("Y", True), ("no", False), ("TRUE", True), ("0", False)):
        result = read_rtf(tmp_path, rtf_row(**{"Member Homelessness Indicator": value}))
        assert result.findings == []
        assert result.rows[0][1]["member_homelessness_indicator"] is expected
    assert rule_ids(read_rtf(tmp_path, rtf_row(**{"Member Homelessness Indicator": "maybe"}))) \
        == {"ROW-014"}


@pytest.mark.parametrize("column,value,ok", [
    ("Member Phone Number", "(559) 555-0142", True),
    ("Member Phone Number", "+1 559 555 0142", True),
    ("Member Phone Number", "555-0142", False), ("ECM Lead Care Manager Email", "a@b.org", True),
    ("ECM Lead Care Manager Email", "a.b.org", False), ("Member Zip", "93721-1234", True),
    ("Member Zip", "9372", False), ("Member State", "ca", True), ("Member State", "Calif", False),
    ("Member Last Name", "x" * 60, True), ("Member Last Name", "x" * 61, False)])
def test_row_015_formats(tmp_path, column, value, ok):
    assert rule_ids(_one(tmp_path, **{column: value})) == (set() if ok else {"ROW-015"})


def test_row_016_extra_values(tmp_path):
    row = list(mif_row().values())
    path = write_table(tmp_path / "m.csv", MIF_HEADER, [row + ["", ""], row + ["oops"]])
    result = read_table(path, "mif")
    assert rules_at(result) == [("ROW-016", "row 3")]  # trailing empty cells are fine


def test_row_017_code_in_effect_on_authorization(tmp_path):
    early = _one(tmp_path, **{"Member POF": "INCARCERATION", "ECM Authorization Date": "2023-06-01",
                              "ECM Benefit Start Date": "2023-06-01",
                              "ECM Provider Assignment Date": "2023-06-02"})
    assert rules_at(early) == [("ROW-017", "row 2, column Member POF")]
    assert early.findings[0].severity is Severity.WARNING
    later = _one(tmp_path, **{"Member POF": "INCARCERATION", "ECM Authorization Date": "2024-01-02",
                              "ECM Benefit Start Date": "2024-01-02",
                              "ECM Provider Assignment Date": "2024-01-03"})
    assert later.findings == []


def test_row_018_flag_columns(tmp_path):
    header = ["CIN", "Last Name", "First Name", "DOB", "POF - High Utilizer", "POF - SMI/SUD",
              "Auth Date", "ECM Start", "Assigned ECM Provider", "Provider NPI",
              "Provider Tax ID", "Reporting Month"]
    row = ["91230000A", "Quillfeather", "Odessa", "04/09/1971", "N", "Y", "03/03/2025",
           "03/03/2025", "Harbor", GOOD_NPI, "941200000", "06/2025"]
    none = list(row)
    none[5] = "n"
    bad = list(row)
    bad[4] = "perhaps"
    result = read_table(write_table(tmp_path / "v.csv", header, [row, none, bad]), "mif")
    assert rules_at(result) == [("FILE-003", "file"), ("ROW-018", "row 3"),
                                ("ROW-014", "row 4, column POF - High Utilizer")]
    assert result.rows[0][1]["pof_codes"] == ["SMI_SUD"]


def test_rows_total_counts_only_non_blank_rows(tmp_path):
    path = write_table(tmp_path / "m.csv", MIF_HEADER,
                       [mif_row(), [], [""] * 5, mif_row(**{"Member CIN": "bad"}), [" "]])
    result = read_table(path, "mif")
    assert result.rows_total == 2 and result.rows_rejected == 1
    assert [n for n, _ in result.rows] == [2]
    assert rules_at(result) == [("ROW-003", "row 5, column Member CIN")]


def test_layout_error_names_columns_and_missing_required(tmp_path):
    path = write_table(tmp_path / "x.csv", ["Member CIN", "Favourite Colour"],
                       [["91230000A", "teal"]])
    with pytest.raises(LayoutError) as info:
        read_table(path, "mif")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "Favourite Colour" in message and "default" in message
    assert "valley-health-plan" in message and "ECM Provider NPI" in message
    assert info.value.tried["default"] and "Member CIN" not in info.value.tried["default"]
    finding = info.value.finding()
    assert finding.rule == "FILE-001" and finding.location == "file"
    with pytest.raises(LayoutError, match="no mif layout named"):
        read_table(FIX / "mif" / "mif-clean.csv", "mif", "no-such-layout")
    with pytest.raises(LayoutError):
        read_table(FIX / "mif" / "mif-clean.csv", "mif", "valley-health-plan")
    with pytest.raises(ValueError):
        read_table(FIX / "mif" / "mif-clean.csv", "invoice")


def test_layout_error_withholds_data_of_a_headerless_file(tmp_path):
    row = list(mif_row().values())
    path = write_table(tmp_path / "x.csv", row, [row])  # data where the header should be
    with pytest.raises(LayoutError) as info:
        read_table(path, "mif")
    assert "91230000A" not in str(info.value) and GOOD_NPI not in str(info.value)


def test_file_003_missing_optional_and_unexpected_columns(tmp_path):
    header = [h for h in MIF_HEADER if h not in ("Member Gender", "Other Program End Date")]
    header.append("Member Shoe Size")
    result = read_table(write_table(tmp_path / "m.csv", header, [mif_row()]), "mif")
    assert [(f.rule, f.location) for f in result.findings] == [("FILE-003", "file")]
    message = result.findings[0].message
    assert "Member Gender" in message and "Other Program End Date" in message
    assert "Member Shoe Size" in message
    assert len(result.rows) == 1 and result.rows[0][1]["member_gender"] is None


def test_file_009_duplicate_header(tmp_path):
    header = MIF_HEADER + ["Member City"]
    row = list(mif_row().values()) + ["Elsewhere"]
    result = read_table(write_table(tmp_path / "m.csv", header, [row]), "mif")
    assert rules_at(result) == [("FILE-009", "file")]
    assert result.rows[0][1]["member_city"] == "Fresno"
    assert read_table(FIX / "mif" / "mif-clean.csv", "mif").findings == []


@pytest.mark.parametrize("name,kind", [("rtf/rtf-clean.csv", "rtf"), ("otf/otf-clean.csv", "otf"),
                                       ("roster/providers.csv", "roster")])
def test_golden_default_layouts_read_the_same_from_xlsx(tmp_path, name, kind):
    with open(FIX / name, encoding="utf-8", newline="") as handle:
        table = [[cell or None for cell in row] for row in csv.reader(handle)]
    path = make_xlsx(tmp_path / "t.xlsx", [("Sheet1", table)])
    from_csv = read_table(FIX / name, kind)
    from_xlsx = read_table(path, kind)
    assert from_xlsx.findings == [] and from_xlsx.layout == "default"
    assert from_xlsx.rows == from_csv.rows


@pytest.mark.parametrize("kind", ["rtf", "otf"])
def test_golden_plan_variant_reads_the_same_from_csv(tmp_path, kind):
    """The plan's workbook sheet saved as CSV (dates become MM/DD/YYYY text)."""
    from openpyxl import load_workbook

    sheet = load_workbook(FIX / "rtf" / "valley-rtf-otf.xlsx")[kind.upper()]
    table = []
    for row in sheet.iter_rows(values_only=True):
        table.append([v.strftime("%m/%d/%Y") if hasattr(v, "strftime") else
                      "" if v is None else str(v) for v in row])
    path = write_table(tmp_path / f"{kind}.csv", table[0], table[1:])
    from_csv = read_table(path, kind)
    from_xlsx = read_table(FIX / "rtf" / "valley-rtf-otf.xlsx", kind)
    assert from_csv.layout == "valley-health-plan" and from_csv.findings == []
    assert [r for _, r in from_csv.rows] == [r for _, r in from_xlsx.rows]
