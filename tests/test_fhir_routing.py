"""FHIR submissions flow to the member's plan, through the real API (create_app, demo partners,
demo registries): a referral ServiceRequest becomes a referral record with its authorization
deadline, a Task an RTF row, a CarePlan an RTF row and an 837P of its completed ECM/CS
activities. Another plan's member goes to that plan; a member no plan can be found for is
kept with a finding; a re-run routes nothing twice; the encounter-history extract comes as a
FHIR Bundle of the provider's members only."""

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from conftest import FIXTURES, ROOT
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from server_world import MIXED
from sqlalchemy import select

from gateway.api.app import create_app
from gateway.fhir import CIN_SYSTEM
from gateway.pipeline.fhir_resources import referral_routing
from gateway.pipeline.steps.fhir import process_fhir
from gateway.pipeline.store import Run
from gateway.fhir.validate import check_payload
from gateway.pipeline.history_extracts import extract_history
from gateway.pipeline.partners import issue_demo_tokens, token_hash
from gateway.pipeline.process import process, submit
from gateway.pipeline.registries import (
    load_demo_registries,
    load_plan_members,
    routed_claims,
    server_registry,
)
from gateway.tabular import read_table
from gateway.x12.validate import validate_x12

RESOURCES = FIXTURES / "fhir" / "resources"
MAPPINGS = FIXTURES / "fhir" / "mappings"
HARBOR_MEMBER = "91230000A"  # assigned to Harbor by the demo plan's MIF
VALLEY_MEMBER = "91272489K"  # moved to the valley plan in the two-plan world
UNKNOWN_MEMBER = "91999990Z"  # in no plan's MIF
VALLEY_TOKEN = "valley-plan-token"


@dataclass
class Gateway:
    client: TestClient
    auth: dict
    app: object

    @property
    def store(self):
        return self.app.state.store

    def post(self, partner: str, resource: dict):
        """Create, then wait for the submission's queued run (the routing) to be done."""
        answer = self.client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                  headers=self.auth[partner])
        assert answer.status_code in (200, 201), answer.text
        self.settled(answer.headers["x-submission-id"])
        return answer

    def refused(self, partner: str, resource: dict) -> tuple[object, list[tuple]]:
        """Create a resource that cannot be routed: 422 with an OperationOutcome carrying the
        mapping's findings (code, severity, expression), the submission kept as rejected."""
        answer = self.client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                  headers=self.auth[partner])
        assert answer.status_code == 422, answer.text
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        sid = answer.headers["x-submission-id"]
        assert self.store.submission(sid)["status"] == "rejected"
        return answer, [(i["details"]["coding"][0]["code"], i["severity"],
                         (i.get("expression") or [""])[0], i["details"]["text"])
                        for i in outcome["issue"]]

    def settled(self, submission_id: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while (found := self.store.submission(submission_id))["run_state"] != "done":
            assert time.monotonic() < deadline, found
            time.sleep(0.01)
        return found

    def submission(self, partner: str, answer) -> dict:
        found = self.client.get(f"/submissions/{answer.headers['x-submission-id']}",
                                headers=self.auth[partner])
        assert found.status_code == 200
        return found.json()

    def box(self, partner: str, role: str | None = None) -> list[dict]:
        documents = self.client.get("/mailbox", headers=self.auth[partner]).json()["documents"]
        return [d for d in documents if role is None or d["role"] == role]

    def fetch(self, partner: str, document: dict) -> bytes:
        answer = self.client.get(document["href"], headers=self.auth[partner])
        assert answer.status_code == 200
        return answer.content

    def routed(self, partner: str) -> list[dict]:
        """What reached ``partner`` from others (not its own stored resources)."""
        return [d for d in self.box(partner) if d["role"] != "fhir-resource"]


def make_gateway(tmp_path, valley: bool = False) -> Gateway:
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               tmp_path / "partners.yaml")
    if valley:
        data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
        data["partners"].append({"id": "valley-plan", "name": "Valley Health Plan",
                                 "role": "plan", "identifiers": {"payer_ids": ["VHP01"]},
                                 "token_sha256": token_hash(VALLEY_TOKEN)})
        (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
        tokens["valley-plan"] = VALLEY_TOKEN
    app = create_app(store=f"sqlite:///{tmp_path / 'gateway.sqlite'}",
                     partners=tmp_path / "partners.yaml")
    load_demo_registries(app.state.store, app.state.partners)
    if valley:
        registry = server_registry(app.state.store)
        rows = [row for _, row in read_table(FIXTURES / "mif" / "mif-clean.csv", "mif").rows]
        load_plan_members(registry, "demo-plan",
                          [r for r in rows if r["member_cin"] != VALLEY_MEMBER])
        valley_rows = [row for _, row in read_table(FIXTURES / "mif" / "mif-valley.csv",
                                                    "mif").rows]
        load_plan_members(registry, "valley-plan",
                          [r for r in valley_rows if r["member_cin"] == VALLEY_MEMBER])
    client = TestClient(app, raise_server_exceptions=False)
    return Gateway(client, {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()},
                   app)


@pytest.fixture
def gateway(tmp_path):
    made = make_gateway(tmp_path)
    yield made
    made.app.state.queue.stop()


@pytest.fixture
def two_plans(tmp_path):
    made = make_gateway(tmp_path, valley=True)
    yield made
    made.app.state.queue.stop()


def fixture(folder, name: str) -> dict:
    return json.loads((folder / name).read_bytes())


def referral(cin: str = HARBOR_MEMBER, priority: str = "urgent",
             authored: str = "2026-10-05T09:30:00-07:00") -> dict:
    data = fixture(RESOURCES, "referral-ecm.json")
    data["subject"]["identifier"]["value"] = cin
    data.update(priority=priority, authoredOn=authored)
    return data


def task(cin: str | None = HARBOR_MEMBER) -> dict:
    data = fixture(RESOURCES, "task-ecm.json")
    if cin is None:
        data.pop("for")
    else:
        data["for"]["identifier"]["value"] = cin
    return data


def csv_rows(content: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def rtf_row(**values: str) -> dict:
    """A full RTF row of the default layout: ``values`` by header, every other column empty."""
    from gateway.tabular import load_layout

    headers = [c.headers[0] for c in load_layout("rtf", "default").columns if c.type != "flags"]
    assert set(values) <= set(headers)
    return {h: values.get(h, "") for h in headers}


def rules(answer_json: dict) -> list[tuple[str, str, str]]:
    return [(f["rule"], f["severity"], f["location"]) for f in answer_json["findings"]]


def today() -> str:
    return datetime.now(UTC).date().isoformat()


# -- referrals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("priority, authored, kind, deadline, rule", [
    ("urgent", "2026-10-05T09:30:00-07:00", "expedited", "2026-10-08T09:30:00-07:00",
     "expedited: 72 hours after authoredOn"),
    # Friday; Veterans Day (Wednesday 11-11) is not a working day
    ("routine", "2026-11-06T10:00:00-08:00", "routine", "2026-11-16T10:00:00-08:00",
     ("routine: 5 working days after authoredOn (Monday-Friday, holidays of "
     "mappings/fhir/holidays.yaml excluded)")),
])
def test_a_referral_goes_to_the_members_plan_with_its_deadline(gateway, priority, authored,
                                                               kind, deadline, rule):
    answer = gateway.post("harbor", referral(priority=priority, authored=authored))
    resource_id = answer.json()["id"]
    found = gateway.submission("harbor", answer)
    assert found["status"] == "routed"
    [entry] = found["summary"]["routing"]
    assert entry == {"resource": f"ServiceRequest/{resource_id}", "priority": kind,
                     "fhir_priority": priority, "authorization_deadline": deadline,
                     "deadline_rule": rule, "plan": "demo-plan",
                     "documents": {"referral": "demo-plan"}}
    assert found["summary"]["routed"] == {"demo-plan": 1}
    assert rules(found) == [("FHIR-PROFILE-006", "info", "ServiceRequest.performer")]
    [document] = gateway.routed("demo-plan")
    assert (document["role"], document["media_type"], document["name"]) == (
        "routed-referral", "application/json",
        f"{found['id']}.ServiceRequest-{resource_id}.referral.json")
    assert json.loads(gateway.fetch("demo-plan", document)) == {
        "referral_id": resource_id, "member_cin": HARBOR_MEMBER, "referral_date": authored,
        "pof_codes": ["HOMELESS"], "priority": kind, "fhir_priority": priority,
        "authorization_deadline": deadline, "deadline_rule": rule, "requester_npi": None,
        "requester_name": "Harbor Community Health Center", "payer_id": None,
        "payer_name": None, "requested_provider_npi": None, "requested_provider_name": None,
        "status": "active", "resource": f"ServiceRequest/{resource_id}", "sender": "harbor",
        "submission_id": found["id"], "plan": "demo-plan"}
    # the sender keeps its resource and gets no copy of the referral record
    assert [d["role"] for d in gateway.box("harbor")] == ["fhir-resource"]
    assert gateway.routed("golden-table") == gateway.routed("dhcs") == []
    # what a GET /fhir/ServiceRequest/{id} caller can be shown (see the report: API hook)
    harbor = gateway.app.state.partners.partners["harbor"]
    # the plan has fetched the referral record: the submission is delivered
    assert referral_routing(gateway.store, harbor, "ServiceRequest", resource_id) == {
        "submission_id": found["id"], "status": "delivered", **entry}
    other = gateway.app.state.partners.partners["golden-table"]
    assert referral_routing(gateway.store, other, "ServiceRequest", resource_id) is None


class HeldQueue:
    """A queue that keeps what it is given, so a test runs the queued step itself."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def enqueue(self, submission_id: str) -> None:
        self.held.append(submission_id)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_create_is_answered_before_its_routing_which_runs_queued(gateway):
    """The request validates and keeps the submission; the referral record, the deadline and
    its headers come from the queued step, run here by hand."""
    gateway.app.state.queue = queue = HeldQueue()
    h = gateway.auth["harbor"]
    answer = gateway.client.post("/fhir/ServiceRequest", json=referral(), headers=h)
    assert answer.status_code == 201
    sid = answer.headers["x-submission-id"]
    resource_id = answer.json()["id"]
    assert resource_id == f"{sid}-0" and queue.held == [sid]
    assert "x-authorization-deadline" not in answer.headers
    found = gateway.store.submission(sid)
    assert (found["status"], found["run_state"]) == ("received", "queued")
    assert gateway.store.documents(sid) == [] and gateway.routed("demo-plan") == []
    # readable at once, from the kept payload; no deadline before the routing ran
    before = gateway.client.get(f"/fhir/ServiceRequest/{resource_id}", headers=h)
    assert before.status_code == 200 and before.json() == answer.json()
    assert before.headers["x-submission-id"] == sid
    assert "x-authorization-deadline" not in before.headers
    assert "x-referral-priority" not in before.headers
    # the queued step: validates the kept payload, stores the resource, routes it
    outcome = process(gateway.store, gateway.app.state.partners, sid)
    assert outcome.status == "routed"
    [stored] = [d for d in gateway.store.documents(sid) if d["role"] == "fhir-resource"]
    assert stored["name"] == f"ServiceRequest/{resource_id}"
    after = gateway.client.get(f"/fhir/ServiceRequest/{resource_id}", headers=h)
    assert after.status_code == 200 and after.json() == answer.json()
    assert (after.headers["x-submission-id"], after.headers["x-authorization-deadline"],
            after.headers["x-referral-priority"]) == (sid, "2026-10-08T09:30:00-07:00",
                                                      "expedited")
    # a resubmission is answered with the original, its routing now known
    again = gateway.client.post("/fhir/ServiceRequest", json=referral(), headers=h)
    assert again.status_code == 200 and again.json() == answer.json()
    assert (again.headers["x-submission-id"], again.headers["x-authorization-deadline"],
            again.headers["x-referral-priority"]) == (sid, "2026-10-08T09:30:00-07:00",
                                                      "expedited")
    assert queue.held == [sid]
    # run again (a redelivered task): nothing changes, nothing is routed twice
    assert process(gateway.store, gateway.app.state.partners, sid).status == "routed"
    assert [d["role"] for d in gateway.routed("demo-plan")] == ["routed-referral"]
    # a routine referral: five working days
    routine = gateway.client.post("/fhir/ServiceRequest", headers=h, json=referral(
        priority="routine", authored="2026-11-06T10:00:00-08:00"))
    assert queue.held[-1] == routine.headers["x-submission-id"]
    process(gateway.store, gateway.app.state.partners, queue.held[-1])
    read = gateway.client.get(routine.headers["location"], headers=h)
    assert (read.headers["x-authorization-deadline"], read.headers["x-referral-priority"]) \
        == ("2026-11-16T10:00:00-08:00", "routine")
    # another partner sees nothing
    assert gateway.client.get(routine.headers["location"],
                              headers=gateway.auth["golden-table"]).status_code == 404


def test_the_members_plan_comes_before_the_payer_the_referral_names(two_plans):
    # the ServiceRequest names the valley plan (insurance -> Coverage.payor VHP01), but the
    # demo plan's MIF assigns the member (91234721B)
    answer = two_plans.post("harbor", fixture(MAPPINGS, "servicerequest-referral.json"))
    assert two_plans.submission("harbor", answer)["summary"]["routing"][0]["plan"] == \
        "demo-plan"
    [document] = two_plans.routed("demo-plan")
    record = json.loads(two_plans.fetch("demo-plan", document))
    assert (record["referral_id"], record["payer_id"], record["authorization_deadline"]) == (
        "REF-2025-06-0042", "VHP01", "2025-07-07T16:00:00-07:00")
    assert two_plans.routed("valley-plan") == []


def test_a_referral_for_a_member_no_plan_assigns_goes_to_the_payer_it_names(two_plans):
    data = fixture(MAPPINGS, "servicerequest-referral.json")
    data["contained"][0]["identifier"][0]["value"] = UNKNOWN_MEMBER
    two_plans.post("harbor", data)
    [document] = two_plans.routed("valley-plan")
    assert json.loads(two_plans.fetch("valley-plan", document))["member_cin"] == UNKNOWN_MEMBER
    assert two_plans.routed("demo-plan") == []


def test_another_plans_member_goes_to_that_plan(two_plans):
    answer = two_plans.post("harbor", referral(VALLEY_MEMBER))
    assert two_plans.submission("harbor", answer)["summary"]["routed"] == {"valley-plan": 1}
    [document] = two_plans.routed("valley-plan")
    assert json.loads(two_plans.fetch("valley-plan", document))["plan"] == "valley-plan"
    assert two_plans.routed("demo-plan") == []


def test_a_member_no_plan_can_be_found_for_is_refused_with_a_422(two_plans):
    """No plan's MIF assigns the member, no payer is named, two plans: nothing can be routed,
    so the create is answered 422 (not 201) with the routing finding; nothing reaches
    anyone, and the member's CIN is not echoed."""
    answer, issues = two_plans.refused("harbor", referral(UNKNOWN_MEMBER))
    sid = answer.headers["x-submission-id"]
    assert [(code, severity, where) for code, severity, where, _ in issues][-1:] == [
        ("FHIR-ROUTE-001", "warning", "ServiceRequest")]
    assert issues[-1][3] == (
        f"ServiceRequest/{sid}-0 is stored but its referral record was not routed: no "
        "plan could be found for the member (no plan's MIF assigns the member, no payer is "
        "named, and there is more than one plan), or no route leads to one")
    assert UNKNOWN_MEMBER not in answer.text
    for partner in ("demo-plan", "valley-plan", "dhcs", "golden-table"):
        assert two_plans.routed(partner) == []
    gone = two_plans.client.get(f"/fhir/ServiceRequest/{sid}-0",
                                headers=two_plans.auth["harbor"])
    assert gone.status_code == 404  # a refused create creates nothing


def _bundle(kind: str, *resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": f"urn:uuid:5f1c6a3e-0000-4000-8000-{i:012d}", "resource": resource,
         "request": {"method": "POST", "url": resource["resourceType"]}}
        for i, resource in enumerate(resources)]}


def test_a_transaction_with_an_entry_that_cannot_be_routed_is_refused_whole(two_plans):
    """POST /fhir gated like a create: a transaction whose second referral names a member no
    plan can be found for is answered 422 -- FHIR-API-006 naming that entry, then its routing
    finding located in it -- kept as rejected; nothing is stored or routed, not even the
    routable first entry (all or nothing)."""
    h = two_plans.auth["harbor"]
    answer = two_plans.client.post("/fhir", json=_bundle(
        "transaction", referral(HARBOR_MEMBER), referral(UNKNOWN_MEMBER)), headers=h)
    assert answer.status_code == 422, answer.text
    sid = answer.headers["x-submission-id"]
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [(i["details"]["coding"][0]["code"], i["severity"], i["expression"][0])
            for i in outcome["issue"]] == [
        ("FHIR-API-006", "error", "Bundle"),
        ("FHIR-PROFILE-006", "information", "Bundle.entry[0].resource.performer"),
        ("FHIR-PROFILE-006", "information", "Bundle.entry[1].resource.performer"),
        ("FHIR-ROUTE-001", "warning", "Bundle.entry[1].resource")]
    assert outcome["issue"][0]["details"]["text"] == \
        "the transaction was not processed: entry 1 has errors"
    assert UNKNOWN_MEMBER not in answer.text
    found = two_plans.store.submission(sid)
    assert found["status"] == "rejected"
    for partner in ("demo-plan", "valley-plan", "dhcs"):
        assert two_plans.routed(partner) == []
    for index in (0, 1):  # a refused transaction creates nothing
        gone = two_plans.client.get(f"/fhir/ServiceRequest/{sid}-{index}", headers=h)
        assert gone.status_code == 404
    # the same Bundle again: the same answer (the original submission, still rejected)
    again = two_plans.client.post("/fhir", json=_bundle(
        "transaction", referral(HARBOR_MEMBER), referral(UNKNOWN_MEMBER)), headers=h)
    assert (again.status_code, again.headers["x-submission-id"]) == (422, sid)
    # both routable: 200, and both referrals reach the members' plans
    routable = two_plans.client.post("/fhir", json=_bundle(
        "transaction", referral(HARBOR_MEMBER), referral(VALLEY_MEMBER)), headers=h)
    assert routable.status_code == 200, routable.text
    assert [e["response"]["status"] for e in routable.json()["entry"]] == ["201 Created"] * 2
    done = two_plans.settled(routable.headers["x-submission-id"])
    assert done["status"] == "routed"
    assert len(two_plans.routed("demo-plan")) == len(two_plans.routed("valley-plan")) == 1


def test_a_batch_entry_that_cannot_be_routed_is_a_422_entry(two_plans):
    """In a batch each entry is a create of its own: the routable one is 201 and routed, the
    one no plan can be found for is ``422`` with its routing finding in the entry's
    OperationOutcome, as a create of it alone would be answered."""
    h = two_plans.auth["harbor"]
    answer = two_plans.client.post("/fhir", json=_bundle(
        "batch", referral(UNKNOWN_MEMBER), referral(HARBOR_MEMBER)), headers=h)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["type"] == "batch-response"
    refused, created = (e["response"] for e in body["entry"])
    assert (refused["status"], created["status"]) == ("422 Unprocessable Entity",
                                                      "201 Created")
    assert [(i["details"]["coding"][0]["code"], i["severity"], i["expression"][0])
            for i in refused["outcome"]["issue"]][-1:] == [
        ("FHIR-ROUTE-001", "warning", "ServiceRequest")]
    assert UNKNOWN_MEMBER not in answer.text
    alone, issues = two_plans.refused("harbor", referral(UNKNOWN_MEMBER))
    assert [i[:3] for i in issues] == [
        (i["details"]["coding"][0]["code"], i["severity"], i["expression"][0])
        for i in refused["outcome"]["issue"]]
    sid = two_plans.client.get(created["location"], headers=h).headers["x-submission-id"]
    assert two_plans.settled(sid)["status"] == "routed"
    assert len(two_plans.routed("demo-plan")) == 1 and two_plans.routed("valley-plan") == []


# -- Task ------------------------------------------------------------------------------------------
HARBOR_FILL = {"Primary Payer (MCP) Identifier": "DEMOPLAN", "MCP Name": "DEMO HEALTH PLAN",
               "Member CIN": HARBOR_MEMBER, "Member Last Name": "Alvarez",
               "Member First Name": "Marisol", "ECM Provider Name":
               "Harbor Community Health Center", "ECM Provider NPI": "1234500001",
               "ECM Provider TIN": "941200000"}


def test_a_task_becomes_an_rtf_row_for_the_members_plan(gateway):
    answer = gateway.post("harbor", task())
    found = gateway.submission("harbor", answer)
    assert found["status"] == "routed"
    assert rules(found) == [("FHIR-PROFILE-006", "info", "Task.owner")]
    [document] = gateway.routed("demo-plan")
    assert (document["role"], document["name"], document["media_type"]) == (
        "routed-rtf", f"{found['id']}.rtf.csv", "text/csv")
    # the Task gives the status; the gateway fills the member's name from the plan's MIF and
    # the provider from the sending partner
    assert csv_rows(gateway.fetch("demo-plan", document)) == [rtf_row(
        **HARBOR_FILL, **{"Member ECM Status": "DECLINED", "RTF Production Date": today(),
                          "Referral Status": "DECLINED",
                          "Date of Referral Status Update": "2026-10-07",
                          "Reason for Referral (Loop) Closure":
                              "Member already enrolled with another ECM provider"})]
    assert gateway.routed("harbor") == []


def test_a_task_finds_its_member_through_the_referral_it_is_about(gateway):
    first = gateway.post("harbor", referral())
    data = task(cin=None)
    data["focus"] = {"reference": f"ServiceRequest/{first.json()['id']}"}
    gateway.post("harbor", data)
    [rtf] = gateway.box("demo-plan", "routed-rtf")
    assert csv_rows(gateway.fetch("demo-plan", rtf))[0]["Member CIN"] == HARBOR_MEMBER


def test_a_task_without_a_member_is_refused_with_the_mapping_findings(gateway):
    _, issues = gateway.refused("harbor", task(cin=None))
    assert [(code, severity, where) for code, severity, where, _ in issues] == [
        ("FHIR-PROFILE-006", "information", "Task.for"),
        ("FHIR-PROFILE-006", "information", "Task.owner"),
        ("FHIR-MAP-001", "error", "Task.for"),
        # Member CIN, Last Name, First Name (no MIF row without a CIN)
        ("FHIR-MAP-007", "error", "Task"), ("FHIR-MAP-007", "error", "Task"),
        ("FHIR-MAP-007", "error", "Task"), ("FHIR-ROUTE-003", "warning", "Task")]
    assert gateway.routed("demo-plan") == []


# -- CarePlan --------------------------------------------------------------------------------------
def claims_part(x12: bytes) -> list[str]:
    """The segments from the billing provider loop to the end of the transaction."""
    segments = x12.decode().replace("\n", "").split("~")
    start = next(i for i, s in enumerate(segments) if s.startswith("HL*1*"))
    end = next(i for i, s in enumerate(segments) if s.startswith("SE*"))
    return segments[start:end]


def test_a_careplan_becomes_an_rtf_row_and_an_837p_for_the_plan(gateway):
    answer = gateway.post("harbor", fixture(MAPPINGS, "careplan-ecm.json"))
    found = gateway.submission("harbor", answer)
    assert found["status"] == "routed"
    assert found["summary"]["routed"] == {"demo-plan": 2}
    assert found["summary"]["routing"][0]["claims"] == [
        "cp-alvarez-2025-20250602", "cp-alvarez-2025-20250610", "cp-alvarez-2025-20250617",
        "cp-alvarez-2025-20250620"]
    # the demo registries have no CS authorizations: said once, as for an 837P or an invoice
    assert rules(found) == [("ECM-REG-001", "info", "file"),
                            ("FHIR-MAP-006", "info", "CarePlan.activity[6].detail.status"),
                            ("ECM-POF-001", "warning", "CarePlan.subject")]
    documents = {d["role"]: d for d in gateway.routed("demo-plan")}
    assert sorted(documents) == ["routed-837p", "routed-rtf"]
    assert csv_rows(gateway.fetch("demo-plan", documents["routed-rtf"])) == [rtf_row(**{
        **HARBOR_FILL, "Member Residential Address": "100 Alder St",
        "Member City": "Riverside", "Member State": "CA", "Member Zip": "92501",
        "Member Phone Number": "5595550100", "Member ECM Status": "ENROLLED",
        "ECM Enrollment Start Date": "2025-06-01",
        "Date of Latest Care Plan Revision": "2025-06-21",
        "Date of Most Recent Care Conference": "2025-06-20",
        "Date Assessment Started": "2025-06-02",
        "Date of Most Recent Completed Assessment": "2025-06-05",
        "Date of Most Recent Encounter with Member": "2025-06-20",
        "ECM Lead Care Manager Name": "Noemi Tranquilino",
        "ECM Lead Care Manager Phone Number": "9165550400",
        "ECM Lead Care Manager Email": "noemi@example.org", "RTF Production Date": today(),
        "ECM Provider Phone Number": "5595550999"})]
    x12 = gateway.fetch("demo-plan", documents["routed-837p"])
    assert documents["routed-837p"]["name"] == f"{found['id']}.837p.x12"
    checked = validate_x12(x12)
    assert [f for f in checked.findings if f.is_error] == []
    # the claims are exactly those of the mapping's golden file (only the envelope differs)
    golden = (MAPPINGS / "expected" / "careplan-ecm.837p.x12").read_bytes()
    assert claims_part(x12) == claims_part(golden)
    assert x12.startswith(b"ISA*00*          *00*          *ZZ*ECMGATEWAY     *ZZ*DEMOPLAN  ")
    # indexed like any routed 837P, so a state response finds its way back to Harbor
    with server_registry(gateway.store).engine.connect() as conn:
        indexed = conn.execute(select(routed_claims.c.claim_id, routed_claims.c.sender,
                                      routed_claims.c.recipient).where(
            routed_claims.c.submission_id == found["id"])).all()
    assert [tuple(r) for r in indexed] == [(c, "harbor", "demo-plan")
                                          for c in found["summary"]["routing"][0]["claims"]]


def test_a_careplan_naming_no_billing_provider_is_billed_as_its_sender(gateway):
    """No author: the billing provider is the sending provider (its partner entry's name, NPI,
    TIN and address), so the billable lines are routed, not silently dropped."""
    data = fixture(MAPPINGS, "careplan-ecm.json")
    data.pop("author")
    answer = gateway.post("harbor", data)
    found = gateway.submission("harbor", answer)
    assert found["status"] == "routed"
    assert not [r for r in rules(found) if r[0].startswith("FHIR-MAP-001")]
    assert sorted(d["role"] for d in gateway.routed("demo-plan")) == ["routed-837p",
                                                                      "routed-rtf"]
    [x12] = [gateway.fetch("demo-plan", d) for d in gateway.routed("demo-plan")
             if d["role"] == "routed-837p"]
    assert b"NM1*85*2*HARBOR COMMUNITY HEALTH CENTER*****XX*1234500001~" in x12
    assert b"REF*EI*941200000~" in x12 and b"N3*100 MAIN ST~" in x12

def test_a_provider_cannot_send_another_providers_care_plan(gateway):
    _, issues = gateway.refused("golden-table", fixture(MAPPINGS, "careplan-ecm.json"))
    auth = [(code, where, text) for code, _, where, text in issues
            if code.startswith("GATEWAY-AUTH")]
    assert auth == [
        ("GATEWAY-AUTH-002", "CarePlan.author", ("the row's ECM provider NPI 1234500001 / TIN "
         "941200000 is not the submitting partner golden-table's: the row was not forwarded"))
    ] + [
        ("GATEWAY-AUTH-001", "CarePlan.author", ("billing provider NPI 1234500001 / TIN "
         "941200000 is not the submitting partner golden-table's"))] * 4
    assert gateway.routed("demo-plan") == []


# -- a transaction Bundle --------------------------------------------------------------------------
def test_a_transaction_sends_each_plan_one_file_of_each_kind(two_plans):
    entries = [referral(), task(), task(VALLEY_MEMBER),
               fixture(MAPPINGS, "careplan-ecm.json")]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}", "resource": r,
         "request": {"method": "POST", "url": r["resourceType"]}}
        for i, r in enumerate(entries)]}
    answer = two_plans.client.post("/fhir", json=bundle, headers=two_plans.auth["harbor"])
    assert answer.status_code == 200, answer.text
    sid = answer.headers["x-submission-id"]
    two_plans.settled(sid)
    found = two_plans.client.get(f"/submissions/{sid}", headers=two_plans.auth["harbor"]).json()
    assert found["summary"]["routed"] == {"demo-plan": 3, "valley-plan": 1}
    demo = sorted((d["role"], d["name"]) for d in two_plans.routed("demo-plan"))
    [referral_doc] = [n for r, n in demo if r == "routed-referral"]
    assert demo == [("routed-837p", f"{sid}.demo-plan.837p.x12"), ("routed-referral",
                                                                   referral_doc),
                    ("routed-rtf", f"{sid}.demo-plan.rtf.csv")]
    rtf = next(d for d in two_plans.routed("demo-plan") if d["role"] == "routed-rtf")
    assert [r["Member CIN"] for r in csv_rows(two_plans.fetch("demo-plan", rtf))] == [
        HARBOR_MEMBER, HARBOR_MEMBER]  # the Task's row and the CarePlan's
    [valley] = two_plans.routed("valley-plan")
    assert valley["name"] == f"{sid}.valley-plan.rtf.csv"
    assert [r["Member CIN"] for r in csv_rows(two_plans.fetch("valley-plan", valley))] == [
        VALLEY_MEMBER]


# -- re-runs ---------------------------------------------------------------------------------------
def test_a_resubmission_is_answered_with_the_original_and_routes_nothing_again(gateway):
    body = fixture(MAPPINGS, "careplan-ecm.json")
    first = gateway.post("harbor", body)
    again = gateway.post("harbor", body)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert sorted(d["role"] for d in gateway.routed("demo-plan")) == ["routed-837p",
                                                                      "routed-rtf"]


def test_a_run_redone_after_a_crash_routes_once(gateway):
    """A worker wrote the routed documents, then died before finishing the run; the next
    worker's claim discards the unfinished run's outputs and runs it again."""
    store, partners = gateway.store, gateway.app.state.partners
    harbor = partners.partners["harbor"]
    payload = json.dumps(fixture(MAPPINGS, "careplan-ecm.json")).encode()
    kept = store.receive(partner="harbor", channel="api", kind="fhir",
                         filename="CarePlan.json", payload=payload, claimed_by="crashed",
                         lease=timedelta(0))
    sid = kept.submission_id
    run = Run(store, sid)  # the crashed worker's run wrote its outputs, never finished
    run.write_result(process_fhir(run, partners, harbor, sid))
    run.flush()
    assert len(store.documents(sid)) == 3  # the resource, the RTF, the 837P
    assert gateway.routed("demo-plan") == []  # nothing of an unfinished run is handed out
    outcome = process(store, partners, sid, worker="second")
    assert outcome.status == "routed"
    assert sorted(d["role"] for d in store.documents(sid)) == [
        "fhir-resource", "routed-837p", "routed-rtf"]
    assert sorted(d["role"] for d in gateway.routed("demo-plan")) == ["routed-837p",
                                                                      "routed-rtf"]
    with server_registry(store).engine.connect() as conn:
        indexed = conn.execute(select(routed_claims.c.claim_id).where(
            routed_claims.c.submission_id == sid)).scalars().all()
    assert sorted(indexed) == ["cp-alvarez-2025-20250602", "cp-alvarez-2025-20250610",
                               "cp-alvarez-2025-20250617", "cp-alvarez-2025-20250620"]
    findings = [f["rule"] for f in store.findings(sid)]
    assert findings == ["ECM-REG-001", "FHIR-MAP-006", "ECM-POF-001"]


def test_a_creates_run_takes_the_mapping_of_its_dry_run_and_routes_as_a_fresh_one(
        gateway, monkeypatch):
    """The create's dry run (routing_problems) keeps the CarePlan's mapping for the queued
    run in this process, which takes it once; what it routes and finds is exactly what a run
    that maps the CarePlan again routes and finds."""
    from gateway.pipeline.steps import fhir as step

    taken = []
    take = step._take_mapping
    monkeypatch.setattr(step, "_take_mapping", lambda key: taken.append(take(key)) or taken[-1])
    step._MAPPED.clear()
    answer = gateway.post("harbor", fixture(MAPPINGS, "careplan-ecm.json"))
    assert len(taken) == 1 and taken[0] is not None  # the dry run's mapping, taken
    assert not step._MAPPED  # once: nothing left behind
    sid = answer.headers["x-submission-id"]
    partners = gateway.app.state.partners
    harbor = partners.partners["harbor"]
    fresh = process_fhir(Run(gateway.store, sid), partners, harbor, sid)
    assert taken[1:] == [None]  # mapped again
    stored = gateway.store.documents(sid)

    def content(role: str, documents: list[dict]) -> bytes:
        return bytes(next(d["content"] for d in documents if d["role"] == role))

    assert content("routed-rtf", fresh.documents) == gateway.fetch(
        "demo-plan", next(d for d in gateway.routed("demo-plan") if d["role"] == "routed-rtf"))
    assert claims_part(content("routed-837p", fresh.documents)) == claims_part(
        gateway.fetch("demo-plan", next(d for d in gateway.routed("demo-plan")
                                        if d["role"] == "routed-837p")))
    assert [f.as_dict() for f in fresh.findings] == [
        {k: f[k] for k in fresh.findings[0].as_dict()} for f in gateway.store.findings(sid)]
    assert fresh.summary == gateway.store.submission(sid)["summary"]
    assert len(stored) == 3
    # a changed spec (a new object) is mapped again, not taken
    step._keep_mapping(("key",), ("rows", "found", "claims"))
    monkeypatch.setattr(step, "_mapping_specs", lambda: ({}, {}))
    assert take(("key",)) is None and not step._MAPPED


# -- the encounter history as FHIR -----------------------------------------------------------------
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def test_the_history_extract_as_a_fhir_bundle_holds_the_providers_members_only(gateway):
    store, partners = gateway.store, gateway.app.state.partners
    submit(store, partners, partners.partners["demo-plan"], channel="api", kind="x12",
           filename=None, payload=MIXED)  # MIX-A..D become history
    document_id = extract_history(store, partners, "harbor", NOW, format="fhir")
    [document] = gateway.box("harbor", "history-extract")
    assert (document["id"], document["name"], document["media_type"]) == (
        document_id, "history-harbor-20261123T020000Z.fhir.json", "application/fhir+json")
    content = gateway.fetch("harbor", document)
    Bundle.model_validate_json(content)  # R4 through fhir.resources
    checked = check_payload(content, "json")
    assert checked.valid
    assert [(f.rule, f.location) for f in checked.findings] == [
        ("FHIR-PROFILE-006", "Bundle.entry[3].resource.period"),
        ("FHIR-PROFILE-006", "Bundle.entry[9].resource.period")]  # Coverage.period
    bundle = json.loads(content)
    assert (bundle["type"], bundle["timestamp"]) == ("collection", "2026-11-23T02:00:00Z")
    # the same lines as the CSV extract: harbor's members 91230000A (HIST-0002, MIX-A-GOOD)
    # and 91258326G (HIST-0001); MIX-B..D are other providers' members
    shown = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        ident = (resource.get("identifier") or [{}])[0].get("value") \
            or resource.get("subscriberId")
        shown.append((resource["resourceType"], ident))
    assert shown == [
        ("Patient", "91230000A"), ("Organization", "1234500001"),
        ("Organization", "DEMOPLAN"), ("Coverage", "91230000A"),
        ("Encounter", "HIST-0002"), ("Claim", "HIST-0002"),
        ("Encounter", "MIX-A-GOOD"), ("Claim", "MIX-A-GOOD"),
        ("Patient", "91258326G"), ("Coverage", "91258326G"),
        ("Encounter", "HIST-0001"), ("Claim", "HIST-0001")]
    patient, billing, plan, coverage, encounter = (bundle["entry"][i]["fullUrl"]
                                                   for i in (0, 1, 2, 3, 6))
    assert bundle["entry"][0]["resource"] == {
        "resourceType": "Patient", "identifier": [{"system": CIN_SYSTEM, "value": "91230000A"}],
        "name": [{"family": "Alvarez", "given": ["Marisol"]}], "birthDate": "1950-01-01"}
    assert bundle["entry"][6]["resource"] == {
        "resourceType": "Encounter",
        "identifier": [{"system": "https://ecm-gateway.example.org/fhir/sid/clm01",
                        "value": "MIX-A-GOOD"}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                  "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": "https://www.cms.gov/Medicare/Coding/"
                                        "HCPCSReleaseCodeSets", "code": "G9008"}]}],
        "subject": {"reference": patient},
        "period": {"start": "2025-06-03", "end": "2025-06-03"},
        "serviceProvider": {"reference": billing}}
    assert bundle["entry"][7]["resource"] == {
        "resourceType": "Claim",
        "identifier": [{"system": "https://ecm-gateway.example.org/fhir/sid/clm01",
                        "value": "MIX-A-GOOD"}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "professional"}]},
        "use": "claim", "patient": {"reference": patient}, "created": "2025-06-03",
        "insurer": {"reference": plan}, "provider": {"reference": billing},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                           "processpriority", "code": "normal"}]},
        "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [{
            "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.00"}]}}],
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage}}],
        "item": [{
            "sequence": 1,
            "productOrService": {"coding": [{
                "system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                "code": "G9008"}]},
            "modifier": [{"coding": [{
                "system": "https://ecm-gateway.example.org/fhir/CodeSystem/hcpcs-modifier",
                "code": "U1"}]}],
            "servicedDate": "2025-06-03",
            "locationCodeableConcept": {"coding": [{
                "system": "https://www.cms.gov/Medicare/Coding/place-of-service-codes/"
                          "Place_of_Service_Code_Set", "code": "11"}]},
            "quantity": {"value": 1}, "encounter": [{"reference": encounter}]}]}
    assert gateway.box("golden-table", "history-extract") == []


def test_the_extract_in_both_formats_and_as_the_route_asks(gateway, tmp_path):
    from gateway.pipeline.history_extracts import extract_all
    from gateway.pipeline.steps.extract import history_formats
    from gateway.pipeline.partners import Partners

    store, partners = gateway.store, gateway.app.state.partners
    assert history_formats(partners) == ("csv",)
    csv_id = extract_history(store, partners, "harbor", NOW, format=["csv", "fhir"])
    names = sorted(d["name"] for d in gateway.box("harbor", "history-extract"))
    assert names == ["history-harbor-20261123T020000Z.csv",
                     "history-harbor-20261123T020000Z.fhir.json"]
    assert store.document(csv_id)["name"].endswith(".csv")
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    for route in data["routes"]:
        if route["kind"] == "history":
            route["formats"] = ["fhir"]
    (tmp_path / "fhir-partners.yaml").write_text(yaml.safe_dump(data))
    fhir_only = Partners.load(tmp_path / "fhir-partners.yaml")
    assert history_formats(fhir_only) == ("fhir",)
    sent = extract_all(store, fhir_only, NOW + timedelta(hours=1))
    assert all(store.document(d)["name"].endswith("T030000Z.fhir.json")
               for d in sent.values())
    golden = json.loads(store.document(sent["golden-table"])["content"])
    assert golden == {"resourceType": "Bundle", "type": "collection",
                      "timestamp": "2026-11-23T03:00:00Z"}  # no members, no entries


def test_a_referral_sent_as_xml_is_routed_the_same(gateway):
    from gateway.fhir.parse import to_xml_bytes

    answer = gateway.client.post(
        "/fhir/ServiceRequest", content=to_xml_bytes(referral()),
        headers={**gateway.auth["harbor"], "Content-Type": "application/fhir+xml"})
    assert answer.status_code == 201, answer.text
    gateway.settled(answer.headers["x-submission-id"])
    [document] = gateway.routed("demo-plan")
    record = json.loads(gateway.fetch("demo-plan", document))
    assert (record["member_cin"], record["priority"], record["authorization_deadline"]) == (
        HARBOR_MEMBER, "expedited", "2026-10-08T09:30:00-07:00")


def test_an_update_that_could_not_be_routed_is_refused_with_a_422(two_plans):
    """What a create must be, an update must stay: a referral updated to name a member no
    plan's MIF assigns (two plans, no payer) is answered 422 with the routing finding, as the
    create would be; no version, no submission, nothing routed; the resource stays at
    version 1."""
    from sqlalchemy import func, select

    from gateway.pipeline.store import fhir_versions, submissions

    def counts():
        with two_plans.store.engine.connect() as conn:
            return (conn.execute(select(func.count()).select_from(submissions)).scalar(),
                    conn.execute(select(func.count()).select_from(fhir_versions)).scalar())

    sent = two_plans.post("harbor", referral()).json()
    before, routed = counts(), len(two_plans.routed("demo-plan"))
    moved = {**sent, "subject": {**sent["subject"], "identifier": {
        **sent["subject"]["identifier"], "value": UNKNOWN_MEMBER}}}
    answer = two_plans.client.put(f"/fhir/ServiceRequest/{sent['id']}", json=moved,
                                  headers={**two_plans.auth["harbor"], "If-Match": 'W/"1"'})
    assert answer.status_code == 422, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["details"]["coding"][0]["code"] for i in outcome["issue"]][-1:] == [
        "FHIR-ROUTE-001"]
    assert UNKNOWN_MEMBER not in answer.text
    assert counts() == before
    assert len(two_plans.routed("demo-plan")) == routed
    for partner in ("valley-plan", "dhcs"):
        assert two_plans.routed(partner) == []
    read = two_plans.client.get(f"/fhir/ServiceRequest/{sent['id']}",
                                headers=two_plans.auth["harbor"])
    assert read.headers["etag"] == 'W/"1"'
