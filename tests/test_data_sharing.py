"""Data-sharing authorizations (ECM Policy Guide 002:1589-1599): the RTF data-sharing layout and
the FHIR Consent mapping, carried back to the member's plan through the API."""

import copy
import csv
import io
import json
from datetime import date

from conftest import FIXTURES
from test_fhir_routing import HARBOR_MEMBER, make_gateway

from gateway.fhir.mapping.rtf import consents_to_rtf, write_rtf_csv
from gateway.reports import validate_file

CONSENT = json.loads((FIXTURES / "fhir" / "mappings" / "consent-data-sharing.json").read_text())
DS = {"Data Sharing Authorization On File", "Data Sharing Authorization Date",
      "Data Sharing Authorization Scope", "Data Sharing Authorization Expiry Date"}


def row_of(data):
    rows, findings = consents_to_rtf(data, today=date(2025, 7, 3))
    return rows[0], findings


def test_consent_becomes_a_data_sharing_rtf_row():
    row, findings = row_of(CONSENT)
    assert findings == []
    assert {k: v for k, v in row.items() if v} == {
        "Member CIN": "91230000A", "Member Last Name": "Alvarez",
        "Member First Name": "Marisol", "RTF Production Date": "2025-07-03",
        "ECM Provider Name": "Harbor Community Health Center",
        "ECM Provider NPI": "1234500001", "ECM Provider TIN": "941200000",
        "Data Sharing Authorization On File": "Y",
        "Data Sharing Authorization Date": "2025-06-02",
        "Data Sharing Authorization Scope": "GENERAL;SUD_PART2",
        "Data Sharing Authorization Expiry Date": "2026-06-01"}


def test_the_row_is_a_valid_rtf_of_the_data_sharing_layout(tmp_path):
    rows, _ = consents_to_rtf(CONSENT, today=date(2025, 7, 3))
    path = tmp_path / "ds.rtf.csv"
    with open(path, "w", newline="") as out:
        write_rtf_csv(rows, out, layout="data-sharing")
    report = validate_file(path)
    assert report.kind == "rtf" and report.valid and report.stats["layout"] == "data-sharing"


def test_withdrawn_consent_says_no_and_unknown_scope_is_a_finding():
    data = copy.deepcopy(CONSENT)
    consent = data["entry"][0]["resource"]
    consent["status"] = "inactive"
    consent["provision"]["purpose"][0]["code"] = "EVERYTHING"
    row, findings = row_of(data)
    assert row["Data Sharing Authorization On File"] == "N"
    assert row["Data Sharing Authorization Scope"] == "SUD_PART2"
    assert [(f.rule, f.location) for f in findings] == [
        ("FHIR-MAP-003", "Bundle.entry[0].resource.provision.purpose")]


def test_rtf_without_a_date_for_an_authorization_on_file_is_a_row_finding(tmp_path):
    rows, _ = consents_to_rtf(CONSENT, today=date(2025, 7, 3))
    rows[0]["Data Sharing Authorization Date"] = ""
    path = tmp_path / "ds.rtf.csv"
    with open(path, "w", newline="") as out:
        write_rtf_csv(rows, out, layout="data-sharing")
    report = validate_file(path)
    assert [(f.rule, f.location) for f in report.findings if f.is_error] == [
        ("ROW-008", "row 2, column Data Sharing Authorization Date")]


def test_a_consent_posted_by_the_provider_reaches_the_members_plan(tmp_path):
    gateway = make_gateway(tmp_path)
    try:
        consent = copy.deepcopy(CONSENT["entry"][0]["resource"])
        consent["patient"] = {"identifier": {
            "system": "https://ecm-gateway.example.org/fhir/sid/medi-cal-cin",
            "value": HARBOR_MEMBER}}
        del consent["organization"]
        gateway.post("harbor", consent)
        [document] = [d for d in gateway.routed("demo-plan")
                      if d["name"].endswith(".data-sharing.rtf.csv")]
        rows = list(csv.DictReader(io.StringIO(gateway.fetch("demo-plan", document).decode())))
        assert len(rows) == 1
        assert {k: v for k, v in rows[0].items() if k in DS} == {
            "Data Sharing Authorization On File": "Y",
            "Data Sharing Authorization Date": "2025-06-02",
            "Data Sharing Authorization Scope": "GENERAL;SUD_PART2",
            "Data Sharing Authorization Expiry Date": "2026-06-01"}
        assert rows[0]["ECM Provider NPI"] == "1234500001"  # the sender, filled in
        assert rows[0]["Member Last Name"] == "Alvarez"  # from the plan's MIF
        assert gateway.routed("golden-table") == []
    finally:
        gateway.app.state.queue.stop()
