"""Data-sharing authorizations as a registry of their own (ECM Policy Guide 002:1589-1599
"Communicate Member-level record of written authorization to allow data sharing (once obtained)
back to the MCP"): loaded from the data-sharing columns of an RTF (any RTF layout that has them,
the plan variant included) and from FHIR Consent, kept per plan, queryable through the CLI
(``report data-sharing``) and the API (``GET /registries/data-sharing``)."""

import copy
import csv
import io
import json
import subprocess
import sys
import time

import pytest
from conftest import FIXTURES, ROOT, demo_gateway
from fastapi.testclient import TestClient

from gateway.ecm.data_sharing import data_sharing_from_files
from gateway.registry.store import Registry

VALLEY = FIXTURES / "rtf" / "valley-rtf-otf.xlsx"
CONSENT = json.loads((FIXTURES / "fhir" / "mappings" / "consent-data-sharing.json").read_text())
HEADER = "plan,member_cin,authorized,authorization_date,scope,expiry,status,provider_npi," \
         "provider_tin,provider_name,reported_on"
HARBOR = "1234500001,941200000,Harbor Community Health Center,2025-07-03"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, check=False)


# -- the plan variant's layout and the command line -----------------------------------------------
def test_the_plan_variant_rtf_carries_the_authorizations_and_the_cli_lists_them():
    done = cli("report", "data-sharing", "--rtf", str(VALLEY), "--plan", "valley",
               "--as-of", "2026-06-01")  # the expiry day: still active
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        HEADER,
        f"valley,91230000A,Y,2025-06-02,GENERAL;SUD_PART2,2026-06-01,active,{HARBOR}",
        f"valley,91258326G,N,2025-06-03,,,not-authorized,{HARBOR}",
        f"valley,91286652N,Y,2025-06-02,GENERAL;SUD_PART2,2026-06-01,active,{HARBOR}",
        f"valley,91300815R,N,2025-06-03,,,not-authorized,{HARBOR}",
        f"valley,91329141X,Y,2025-06-02,GENERAL;SUD_PART2,2026-06-01,active,{HARBOR}",
        f"valley,91343304A,N,2025-06-03,,,not-authorized,{HARBOR}"]


@pytest.mark.parametrize(("as_of", "status"), [("2025-06-01", "not-yet-effective"),
                                               ("2025-06-02", "active"),
                                               ("2026-06-02", "expired")])
def test_status_boundaries(as_of, status):
    from datetime import date

    rows, files = data_sharing_from_files([VALLEY], "valley", date.fromisoformat(as_of))
    assert all(f.valid for f in files)
    assert rows[0]["member_cin"] == "91230000A" and rows[0]["status"] == status


def test_an_rtf_with_a_bad_scope_is_not_applied_and_says_where(tmp_path):
    rows = list(csv.reader(io.StringIO((FIXTURES / "rtf" / "rtf-clean.csv").read_text())))
    header = rows[0] + ["Data Sharing Authorization On File", "Data Sharing Authorization Date",
                        "Data Sharing Authorization Scope",
                        "Data Sharing Authorization Expiry Date"]
    body = [rows[1] + ["Y", "2025-06-02", "GENERAL", ""],
            rows[2] + ["Y", "2025-06-02", "EVERYTHING", "2025-01-01"]]
    path = tmp_path / "rtf-ds.csv"
    with open(path, "w", newline="") as out:
        csv.writer(out).writerows([header, *body])
    done = cli("report", "data-sharing", "--rtf", str(path))
    assert done.returncode != 0 and done.stdout == ""
    assert "row 3, column Data Sharing Authorization Scope" in done.stderr
    assert "row 3, column Data Sharing Authorization Expiry Date" in done.stderr
    assert "Traceback" not in done.stderr
    rows_out, files = data_sharing_from_files([path], "p", __import__("datetime").date.today())
    assert rows_out is None and not files[0].valid


def test_an_rtf_without_the_columns_records_nothing():
    registry = Registry()
    from gateway.tabular import read_table

    table = read_table(FIXTURES / "rtf" / "rtf-clean.csv", "rtf")
    assert registry.load_data_sharing((r for _, r in table.rows), source="plan:x:ds") == 0
    assert registry.data_sharing() == []


def test_the_report_warns_of_an_rtf_without_the_data_sharing_columns():
    """An RTF of the default layout: a warning naming the file and its layout (exit 0: a
    warning), the report of the other files as it was."""
    plain = FIXTURES / "rtf" / "rtf-clean.csv"
    done = cli("report", "data-sharing", "--rtf", str(plain), "--as-of", "2026-06-01")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [HEADER]
    assert done.stderr.splitlines() == [
        f"{plain}: rtf valid",
        "  warning REG-FILE-002   file: this rtf file has no data-sharing authorization columns "
        "(its columns match the default layout): no data-sharing authorization is read from it"]
    both = cli("report", "data-sharing", "--rtf", str(VALLEY), str(plain), "--plan", "valley",
               "--as-of", "2026-06-01")
    assert both.returncode == 0 and "REG-FILE-002" in both.stderr
    alone = cli("report", "data-sharing", "--rtf", str(VALLEY), "--plan", "valley",
                "--as-of", "2026-06-01")
    assert both.stdout == alone.stdout and alone.stderr == ""


# -- the server: per plan, routed to the member's plan, queryable --------------------------------
@pytest.fixture
def gateway(tmp_path):
    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, auth


def _upload(client, auth, partner):
    return client.post("/files", files={"file": (VALLEY.name, VALLEY.read_bytes(),
                                                 "application/octet-stream")},
                       headers=auth[partner])


def test_a_providers_rtf_becomes_the_plans_registry_queryable_by_the_plan(gateway):
    client, auth = gateway
    sent = _upload(client, auth, "harbor")
    assert sent.status_code == 200, sent.text
    answer = client.get("/registries/data-sharing?as_of=2026-06-02&cin=91230000A",
                        headers=auth["demo-plan"])
    assert answer.status_code == 200
    assert answer.json() == {"authorizations": [{
        "plan": "demo-plan", "member_cin": "91230000A", "authorized": True,
        "authorization_date": "2025-06-02", "scope": ["GENERAL", "SUD_PART2"],
        "expiry": "2026-06-01", "status": "expired", "provider_npi": "1234500001",
        "provider_tin": "941200000", "provider_name": "Harbor Community Health Center",
        "reported_on": "2025-07-03"}]}
    every = client.get("/registries/data-sharing?format=csv", headers=auth["demo-plan"])
    assert every.text.splitlines()[0] == HEADER and len(every.text.splitlines()) == 7
    # the provider that reported them sees them; another provider sees none
    assert len(client.get("/registries/data-sharing", headers=auth["harbor"]).json()[
        "authorizations"]) == 6
    assert client.get("/registries/data-sharing", headers=auth["golden-table"]).json() == {
        "authorizations": []}
    # a plan reads its own only
    assert client.get("/registries/data-sharing?plan=other",
                      headers=auth["demo-plan"]).status_code == 403
    assert client.get("/registries/data-sharing").status_code == 401


def test_a_replayed_rtf_replaces_its_authorizations(gateway):
    client, auth = gateway
    sent = _upload(client, auth, "harbor").json()
    operator = next(p for p in auth if p.startswith("operator") or p == "ops")
    again = client.post(f"/submissions/{sent['submission_id']}/replay?force=true",
                        headers=auth[operator])
    assert again.status_code in (200, 201, 202), again.text
    rows = client.get("/registries/data-sharing", headers=auth["demo-plan"]).json()
    assert len(rows["authorizations"]) == 6


def test_a_consent_is_recorded_as_the_members_plans(gateway):
    client, auth = gateway
    consent = copy.deepcopy(CONSENT["entry"][0]["resource"])
    consent["patient"] = {"identifier": {
        "system": "https://ecm-gateway.example.org/fhir/sid/medi-cal-cin", "value": "91230000A"}}
    del consent["organization"]
    posted = client.post("/fhir/Consent", json=consent,
                         headers={**auth["harbor"], "Content-Type": "application/fhir+json"})
    assert posted.status_code == 201, posted.text
    deadline = time.monotonic() + 20  # routed by the queue after the create answers
    while True:
        found = client.get("/registries/data-sharing?as_of=2025-07-01",
                           headers=auth["demo-plan"]).json()["authorizations"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [found] = found
    assert (found["plan"], found["member_cin"], found["authorized"], found["scope"],
            found["expiry"], found["status"], found["provider_npi"]) == (
        "demo-plan", "91230000A", True, ["GENERAL", "SUD_PART2"], "2026-06-01", "active",
        "1234500001")


# -- one status per member, provider and scope on the day -----------------------------------------
DS_COLUMNS = ["Data Sharing Authorization On File", "Data Sharing Authorization Date",
              "Data Sharing Authorization Scope", "Data Sharing Authorization Expiry Date"]


def _rtf_text(*decisions: tuple[str, str, str, str, str]) -> str:
    """An RTF of the data-sharing layout: the clean fixture's first row (Harbor's member
    91230000A) once per decision, with its data-sharing columns and production date:
    (on file, date, scope, expiry, RTF production date)."""
    template = next(csv.DictReader(io.StringIO(
        (FIXTURES / "rtf" / "rtf-clean.csv").read_text(encoding="utf-8"))))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*template, *DS_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for *values, produced in decisions:
        writer.writerow({**template, **dict(zip(DS_COLUMNS, values)),
                         "RTF Production Date": produced})
    return out.getvalue()


def _rtf_file(tmp_path, name: str, *decisions: tuple[str, str, str, str, str]) -> str:
    path = tmp_path / name
    path.write_text(_rtf_text(*decisions), encoding="utf-8")
    return str(path)


def _statuses(*paths: str, as_of: str) -> list[tuple]:
    from datetime import date

    rows, files = data_sharing_from_files(list(paths), "p", date.fromisoformat(as_of))
    assert rows is not None, [f.findings for f in files]
    return [(r["member_cin"], "Y" if r["authorized"] else "N", r["authorization_date"],
             ";".join(r["scope"]), r["status"]) for r in rows]


GRANTED = ("Y", "2025-06-02", "GENERAL;SUD_PART2", "2026-06-01", "2025-07-03")
WITHDRAWN = ("N", "2025-07-01", "GENERAL;SUD_PART2", "", "2025-07-03")


def test_a_withdrawal_supersedes_the_authorization_from_its_date_on_the_command_line(tmp_path):
    path = _rtf_file(tmp_path, "ds-overlap.csv", GRANTED, WITHDRAWN)
    done = cli("report", "data-sharing", "--rtf", path, "--plan", "p", "--as-of", "2025-08-01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        HEADER, f"p,91230000A,N,2025-07-01,GENERAL;SUD_PART2,,not-authorized,{HARBOR}"]
    assert _statuses(path, as_of="2025-06-30") == [
        ("91230000A", "Y", "2025-06-02", "GENERAL;SUD_PART2", "active")]
    assert _statuses(path, as_of="2025-07-01") == [
        ("91230000A", "N", "2025-07-01", "GENERAL;SUD_PART2", "not-authorized")]


def test_a_later_reauthorization_supersedes_the_withdrawal(tmp_path):
    first = _rtf_file(tmp_path, "first.csv", GRANTED)
    withdrawn = _rtf_file(tmp_path, "withdrawn.csv", WITHDRAWN)
    again = _rtf_file(tmp_path, "again.csv",
                      ("Y", "2025-09-01", "GENERAL;SUD_PART2", "2026-08-31", "2025-09-05"))
    assert _statuses(first, withdrawn, again, as_of="2025-08-15") == [
        ("91230000A", "N", "2025-07-01", "GENERAL;SUD_PART2", "not-authorized")]
    assert _statuses(first, withdrawn, again, as_of="2025-09-01") == [
        ("91230000A", "Y", "2025-09-01", "GENERAL;SUD_PART2", "active")]
    assert _statuses(first, withdrawn, again, as_of="2026-09-01") == [
        ("91230000A", "Y", "2025-09-01", "GENERAL;SUD_PART2", "expired")]


def test_a_withdrawal_of_one_scope_leaves_the_other_authorized(tmp_path):
    path = _rtf_file(tmp_path, "part.csv", GRANTED,
                     ("N", "2025-07-01", "SUD_PART2", "", "2025-07-10"))
    assert _statuses(path, as_of="2025-08-01") == [
        ("91230000A", "N", "2025-07-01", "SUD_PART2", "not-authorized"),
        ("91230000A", "Y", "2025-06-02", "GENERAL", "active")]


def test_a_withdrawal_on_the_registry_supersedes_over_the_api(gateway):
    client, auth = gateway
    for decision in (GRANTED, WITHDRAWN):
        out = _rtf_text(decision)
        sent = client.post("/files", files={"file": (f"ds-{decision[0]}.csv", out.encode(),
                                                     "text/csv")},
                           headers=auth["harbor"])
        assert sent.status_code == 200, sent.text
    answer = client.get("/registries/data-sharing?cin=91230000A&as_of=2025-08-01&format=csv",
                        headers=auth["demo-plan"])
    assert answer.text.splitlines() == [
        HEADER,
        f"demo-plan,91230000A,N,2025-07-01,GENERAL;SUD_PART2,,not-authorized,{HARBOR}"]
    before = client.get("/registries/data-sharing?cin=91230000A&as_of=2025-06-30",
                        headers=auth["demo-plan"]).json()["authorizations"]
    assert [(a["authorized"], a["status"]) for a in before] == [(True, "active")]
