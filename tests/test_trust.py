"""Issue 10, "one delivery path that partners can trust": each defect a careless or hostile
partner met becomes a regression test, through the API AND the file drop, on the demo world
(two providers — Harbor, Golden Table — one plan, the state):

* impersonation by NPI, by TIN, by invoice, by RTF row (``GATEWAY-AUTH-001``/``-002``; nothing
  of it reaches the plan);
* a reused ISA13 with different content (TA1, ``TA105 = 025``, naming the earlier submission);
* a state response naming an unknown ISA13 (``STATE-LINK-*``, nothing changed);
* replay of a delivered submission (nothing delivered twice);
* a FHIR resource naming its member and provider only by identifier (routed, or 422).

The end of the file runs every one of them again against real servers in both deployment
modes (``served``: embedded SQLite + worker thread, and scale-out PostgreSQL + Redis + a
Celery worker), through the API and the file drop.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import FIXTURES, demo_gateway
from fastapi.testclient import TestClient

from gateway.pipeline.filedrop import DropFolders, scan_once

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()
HARBOR_BILLING = b"NM1*85*2*HARBOR COMMUNITY HEALTH CENTER*****XX*1234500001"
GOLDEN_NPI, GOLDEN_TIN = b"1234737579", b"941203039"
HARBOR_TIN = b"941200000"


class Channel:
    """One way in for a partner: the API (``/x12``, ``/files``) or the file drop (inbox →
    scan → outbox). ``send`` returns the submission id; ``documents`` what reached a partner
    (name → bytes: the API mailbox, or the outbox folder)."""

    def __init__(self, kind: str, client: TestClient, auth: dict, drop: DropFolders) -> None:
        self.kind, self.client, self.auth, self.drop = kind, client, auth, drop
        self.app = client.app
        self.clock = 1000.0

    @property
    def store(self):
        return self.app.state.store

    def send(self, partner: str, name: str, payload: bytes) -> dict:
        """The answer: ``submission_id``, ``status`` and, through the API, the JSON body."""
        if self.kind == "api":
            if name.endswith((".x12", ".837")):
                answer = self.client.post("/x12", content=payload, headers=self.auth[partner])
            else:
                answer = self.client.post("/files", files={"file": (name, payload)},
                                          headers=self.auth[partner])
            assert answer.status_code in (200, 202), answer.text
            body = answer.json()
            from gateway.pipeline.queue import wait_until_done  # noqa: F401 (waited above)

            return body
        inbox = self.drop.folders(partner)["inbox"]
        (inbox / name).write_bytes(payload)
        self.clock += 10
        taken = scan_once(self.drop, self.store, self.app.state.partners, settle_seconds=0,
                          now=self.clock)
        found = self.store.submission(taken[0]) if taken else None
        return {"submission_id": taken[0] if taken else None,
                "status": found["status"] if found else None}

    def documents(self, partner: str) -> dict[str, bytes]:
        if self.kind == "api":
            box = self.client.get("/mailbox", headers=self.auth[partner]).json()["documents"]
            return {d["name"]: self.client.get(d["href"], headers=self.auth[partner]).content
                    for d in box}
        self.clock += 10
        scan_once(self.drop, self.store, self.app.state.partners, settle_seconds=0,
                  now=self.clock)
        outbox = self.drop.folders(partner)["outbox"]
        return {p.name: p.read_bytes() for p in sorted(outbox.iterdir())}

    def findings(self, submission_id: str) -> list[tuple[str, str]]:
        return [(f["rule"], f["location"]) for f in self.store.findings(submission_id)]


@pytest.fixture(params=["api", "filedrop"])
def channel(request, tmp_path):
    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Channel(request.param, client, auth, DropFolders(tmp_path / "drop"))


def claims_in(x12: bytes) -> list[str]:
    return [seg.split("*")[1] for seg in x12.decode().replace("\n", "").split("~")
            if seg.startswith("CLM*")]


def status_of_claims(ack277: bytes) -> dict[str, str]:
    """Claim id → its 277CA STC01 (``A2:20`` accepted, ``A7:...`` rejected)."""
    out, claim = {}, None
    for seg in ack277.decode().replace("\n", "").split("~"):
        if seg.startswith("TRN*2*"):
            claim = seg.split("*")[2]
        elif seg.startswith("STC*") and claim:
            out.setdefault(claim, seg.split("*")[1])
    return out


# -- sender authorisation ---------------------------------------------------------------------------
def _harbor_claims_of(payload: bytes) -> list[str]:
    """The claims of the transaction sets billed as Harbor in MIXED."""
    text = payload.decode().replace("\n", "")
    out, billing = [], ""
    for seg in text.split("~"):
        if seg.startswith("NM1*85*"):
            billing = seg
        elif seg.startswith("CLM*") and "HARBOR" in billing:
            out.append(seg.split("*")[1])
    return out


@pytest.mark.parametrize("impersonation", ["npi", "tin"])
def test_a_provider_cannot_bill_as_another_provider(channel, impersonation):
    """Another provider's NPI with one's own TIN, or one's own NPI with another's TIN: every
    such claim is rejected in the 277CA with GATEWAY-AUTH-001 and none reaches the plan."""
    if impersonation == "npi":
        payload = MIXED.replace(HARBOR_BILLING, HARBOR_BILLING.replace(b"1234500001",
                                                                        GOLDEN_NPI))
    else:
        payload = MIXED.replace(b"REF*EI*" + HARBOR_TIN, b"REF*EI*" + GOLDEN_TIN)
    faked = _harbor_claims_of(payload)
    assert len(faked) >= 3
    answer = channel.send("harbor", "claims.x12", payload)
    sid = answer["submission_id"]
    acks = channel.documents("harbor")
    [ack277] = [v for k, v in acks.items() if k.endswith(".277ca.x12")]
    verdicts = status_of_claims(ack277)
    for claim in faked:
        assert verdicts[claim].startswith("A7"), claim
    assert b"GATEWAY-AUTH-001" in ack277
    auth = [loc for rule, loc in channel.findings(sid) if rule == "GATEWAY-AUTH-001"]
    assert len(auth) >= len(faked)
    routed = b"".join(channel.documents("demo-plan").values())
    assert not set(faked) & set(claims_in(routed))


def _invoice_as_harbor_with(npi: bytes, tin: bytes) -> bytes:
    """invoice-clean (services moved into timely filing), Harbor's rows billed under ``npi`` and
    ``tin``."""
    import calendar
    from datetime import date, timedelta

    month = date.today().replace(day=1) - timedelta(days=1)
    while calendar.monthrange(month.year, month.month)[1] != 31:
        month = month.replace(day=1) - timedelta(days=1)
    text = (FIXTURES / "invoice" / "invoice-clean.csv").read_text()
    text = text.replace("2025-06-", month.strftime("%Y-%m-")).encode()
    return text.replace(b",1234500001,941200000,", b"," + npi + b"," + tin + b",")


@pytest.mark.parametrize("npi, tin", [(GOLDEN_NPI, HARBOR_TIN), (b"1234500001", GOLDEN_TIN)])
def test_an_invoice_cannot_bill_as_another_provider(channel, npi, tin):
    """Invoices are checked like X12: the rows billed under another provider's NPI or TIN
    are rejected in the row report with GATEWAY-AUTH-001, and no 837P of them is made."""
    answer = channel.send("harbor", "invoice.csv", _invoice_as_harbor_with(npi, tin))
    sid = answer["submission_id"]
    docs = channel.documents("harbor")
    [report] = [v for k, v in docs.items() if k.endswith(".report.csv")]
    rows = {r["Row"]: r for r in csv.DictReader(io.StringIO(report.decode("utf-8-sig")))}
    for number in ("2", "3", "4", "5"):  # Harbor's rows, now under a foreign NPI or TIN
        assert rows[number]["Status"] == "rejected"
    for number in ("2", "4", "5"):  # the first row of each of Harbor's three claims
        assert "GATEWAY-AUTH-001: billing provider NPI " in rows[number]["Reasons"]
    assert ("GATEWAY-AUTH-001", "row 2, column Billing Provider NPI") in channel.findings(sid)
    routed = [v for k, v in channel.documents("demo-plan").items() if k.endswith(".x12")]
    assert routed == []  # nothing of the invoice was Harbor's to send


def test_an_rtf_row_naming_another_providers_tin_is_not_forwarded(channel):
    rtf = (FIXTURES / "rtf" / "rtf-clean.csv").read_bytes()
    first, rest = rtf.split(b"\n", 1)
    # row 2 keeps Harbor's NPI but names Golden Table's TIN
    row2, others = rest.split(b"\n", 1)
    payload = first + b"\n" + row2.replace(b",1234500001,941200000,",
                                           b",1234500001," + GOLDEN_TIN + b",") + b"\n" + others
    answer = channel.send("harbor", "rtf.csv", payload)
    sid = answer["submission_id"]
    assert ("GATEWAY-AUTH-002", "row 2") in channel.findings(sid)
    forwarded = b"".join(channel.documents("demo-plan").values())
    assert b"91230000A" not in forwarded  # row 2's member
    assert b"91258326G" in forwarded  # the other rows went on


# -- control numbers --------------------------------------------------------------------------------
def _with_isa13(payload: bytes, isa13: bytes, gs06: bytes | None = None) -> bytes:
    """MIXED with another ISA13 (and GS06), same length so nothing else moves."""
    out = payload.replace(b"*000000501*", b"*" + isa13 + b"*").replace(
        b"IEA*1*000000501", b"IEA*1*" + isa13)
    if gs06 is not None:
        out = out.replace(b"*1400*501*X*", b"*1400*" + gs06 + b"*X*").replace(
            b"GE*7*501", b"GE*7*" + gs06)
    return out


def test_the_same_bytes_again_get_the_earlier_answer(channel):
    first = channel.send("harbor", "claims.x12", MIXED)
    again = channel.send("harbor", "claims-again.x12", MIXED)
    if channel.kind == "api":
        assert again["duplicate"] is True
        assert again["submission_id"] == first["submission_id"]
    else:  # archived, not processed again: no second set of acknowledgments
        assert again["submission_id"] is None
    acks = [k for k in channel.documents("harbor") if k.endswith(".999.x12")]
    assert len(acks) == 1


def test_a_different_interchange_reusing_an_isa13_gets_a_ta1_025(channel):
    """Never another file's id: the second file (other content, same ISA13 and GS06 of the
    same sender) is a submission of its own, rejected with a TA1 whose TA105 is 025 and a
    message naming the earlier submission and its date; nothing of it is routed."""
    first = channel.send("harbor", "claims.x12", MIXED)
    routed_before = channel.documents("demo-plan")
    other = MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO")  # different content, same numbers
    second = channel.send("harbor", "other.x12", other)
    sid = second["submission_id"]
    assert sid and sid != first["submission_id"]
    found = channel.store.submission(sid)
    assert found["status"] == "rejected"
    day = channel.store.submission(first["submission_id"])["created_at"].date().isoformat()
    expected = (f"ISA13 interchange control number 000000501 of sender ECMGATEWAY was already "
                f"used by submission {first['submission_id']}, received {day}; this is a "
                f"different interchange: send it with a new ISA13")
    assert found["error"] == expected
    assert ("X12-ENV-026", "ISA#1/ISA13") in channel.findings(sid)
    docs = channel.documents("harbor")
    [ta1] = [v for k, v in docs.items() if k.startswith(sid) and k.endswith(".ta1.x12")]
    assert b"TA1*000000501*250630*1400*R*025~" in ta1
    assert not [k for k in docs if k.startswith(sid) and k.endswith((".999.x12", ".277ca.x12"))]
    if channel.kind == "api":
        assert second["status"] == "rejected" and second["error"] == expected
        assert "TA1*000000501*250630*1400*R*025~" in second["ack_ta1"]
    else:
        note = docs[f"{sid}.rejected.txt"].decode()
        assert first["submission_id"] in note and day in note
    assert channel.documents("demo-plan") == routed_before


def test_a_reused_gs06_is_answered_in_the_999(channel):
    channel.send("harbor", "claims.x12", MIXED)
    other = _with_isa13(MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO"), b"000000502")
    sid = channel.send("harbor", "other.x12", other)["submission_id"]
    assert ("X12-ENV-027", "ISA#1/GS#1/GS06") in channel.findings(sid)
    [ack] = [v for k, v in channel.documents("harbor").items()
             if k.startswith(sid) and k.endswith(".999.x12")]
    assert b"AK9*R*7*7*0*19~" in ack.replace(b"\n", b"")
    # new ISA13 and GS06: a new interchange, processed
    fresh = _with_isa13(MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO"), b"000000503", b"503")
    assert channel.send("harbor", "fresh.x12", fresh)["status"] in ("routed", "delivered")


def test_a_partner_may_choose_to_process_reused_control_numbers(tmp_path):
    import yaml

    from gateway.pipeline.partners import Partners
    from server_world import make_world

    world = make_world(tmp_path)
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    for entry in data["partners"]:
        if entry["id"] == "harbor":
            entry["duplicate_control_numbers"] = "process"
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    world.partners = Partners.load(tmp_path / "partners.yaml")
    world.send("harbor", MIXED)
    second = world.send("harbor", MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO"))
    assert second.status == "routed"
    assert [f["rule"] for f in world.store.findings(second.submission_id)
            if f["rule"].startswith("X12-ENV-02")] == ["X12-ENV-028", "X12-ENV-028"]


def test_a_replay_is_not_a_reuse_of_its_own_control_numbers(channel):
    from gateway.pipeline.process import replay

    first = channel.send("harbor", "claims.x12", MIXED)
    store, partners = channel.store, channel.app.state.partners
    again = replay(store, partners, first["submission_id"], actor="operator", force=True)
    assert again.status == "validated"  # processed (not a TA1), nothing new to deliver
    assert not [r for r, _ in channel.findings(again.submission_id) if r.startswith("X12-ENV")]


# -- replay -----------------------------------------------------------------------------------------
def _replay(channel, submission_id: str, force: bool):
    if channel.kind == "api":
        partner = channel.store.submission(submission_id)["partner"]
        answer = channel.client.post(f"/submissions/{submission_id}/replay"
                                     + ("?force=true" if force else ""),
                                     headers=channel.auth[partner])
        return answer.status_code, answer.json()
    from gateway.cli import main

    url = str(channel.store.url)
    partners_file = Path(channel.store.url.split("///", 1)[1]).parent / "partners.yaml"
    code = main(["replay", submission_id, "--store", url, "--partners", str(partners_file)]
                + (["--force"] if force else []))
    return code, None


def test_replaying_a_delivered_submission_never_delivers_twice(channel):
    """Replay needs force once something went onward; the same 837P is not delivered again;
    after the plan's registry changed, the changed 837P is delivered as a replacement linked
    to the one it replaces."""
    first = channel.send("harbor", "claims.x12", MIXED)
    sid = first["submission_id"]
    delivered = channel.documents("demo-plan")
    assert len(delivered) == 1
    code, body = _replay(channel, sid, force=False)
    assert code in (409, 2)  # API: conflict; CLI: usage error naming --force
    code, body = _replay(channel, sid, force=True)
    assert code in (200, 0)
    assert channel.documents("demo-plan") == delivered  # identical: not delivered again
    replays = [s for s in channel.store.submissions_for("harbor") if s["parent_id"] == sid]
    assert [s["status"] for s in replays] == ["validated"]
    assert "GATEWAY-REPLAY-001" in [r for r, _ in channel.findings(replays[0]["id"])]
    # the plan's envelope profile is corrected (another 1000B receiver): the 837P differs
    import dataclasses

    partners = channel.app.state.partners
    partners.partners["demo-plan"] = dataclasses.replace(partners.partners["demo-plan"],
                                                         envelope="dhcs-encounters")
    if channel.kind == "filedrop":  # the CLI reads the partner file
        import yaml

        path = Path(channel.store.url.split("///", 1)[1]).parent / "partners.yaml"
        data = yaml.safe_load(path.read_text())
        for entry in data["partners"]:
            if entry["id"] == "demo-plan":
                entry["envelope"] = "dhcs-encounters"
        path.write_text(yaml.safe_dump(data))
    code, body = _replay(channel, sid, force=True)
    now = channel.documents("demo-plan")
    [new_name] = set(now) - set(delivered)
    replays = [s for s in channel.store.submissions_for("harbor") if s["parent_id"] == sid]
    latest = max(replays, key=lambda s: s["created_at"])
    [doc] = [d for d in channel.store.documents(latest["id"]) if d["role"] == "routed-837p"]
    [original] = [d for d in channel.store.documents(sid) if d["role"] == "routed-837p"]
    assert doc["parent_document"] == original["id"]  # the replacement names what it replaces
    assert channel.store.submission(latest["id"])["summary"]["replaces"] == {
        doc["id"]: original["id"]}
    assert claims_in(now[new_name]) == claims_in(delivered[next(iter(delivered))])
    assert b"CALIFORNIA-DHCS" in now[new_name]


# -- the state envelope per sending plan ------------------------------------------------------------
def _second_plan_world(tmp_path, test_mode: bool):
    """The demo partners plus a second plan (its own plan code, county code and test mode)."""
    import yaml

    from conftest import ROOT

    from gateway.pipeline.partners import Partners, issue_demo_tokens
    from server_world import World
    from gateway.pipeline.store import Store

    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               tmp_path / "partners.yaml")
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    data["partners"].append({"id": "valley-plan", "name": "Valley Health Plan", "role": "plan",
                             "identifiers": {"plan_code": "VALLEYHP1", "county_code": "019",
                                             "payer_ids": ["VHP01"]},
                             "test_mode": test_mode})
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    del tokens
    return World(Store(f"sqlite:///{tmp_path / 'g.sqlite'}"),
                 Partners.load(tmp_path / "partners.yaml"))


@pytest.mark.parametrize("test_mode", [False, True])
def test_each_plan_sends_to_the_state_under_its_own_ids(tmp_path, test_mode):
    world = _second_plan_world(tmp_path, test_mode)
    demo = world.send("demo-plan", MIXED)
    valley = world.send("valley-plan", (FIXTURES / "837p" / "ecm-clean.x12").read_bytes())
    texts = {}
    for name, sent in (("demo", demo), ("valley", valley)):
        [doc] = [d for d in world.box("dhcs", sent.submission_id) if d["role"] == "routed-837p"]
        texts[name] = world.content(doc).decode()
    demo_isa, valley_isa = (t.split("~")[0].split("*") for t in (texts["demo"],
                                                                   texts["valley"]))
    assert (demo_isa[6].strip(), demo_isa[15]) == ("DEMOPLAN001", "P")
    assert (valley_isa[6].strip(), valley_isa[15]) == ("VALLEYHP1019", "T" if test_mode else "P")
    assert "GS*HC*VALLEYHP1019*CALIFORNIA-DHCS*" in texts["valley"]
    assert "NM1*41*2*VALLEY HEALTH PLAN*****46*VALLEYHP1019~" in texts["valley"]
    assert "PLANCODE1001" not in texts["demo"] + texts["valley"]


def test_a_plan_without_a_county_code_sends_nothing_to_the_state(tmp_path):
    import yaml

    world = _second_plan_world(tmp_path, False)
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    del data["partners"][-1]["identifiers"]["county_code"]
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    from gateway.pipeline.partners import Partners

    world.partners = Partners.load(tmp_path / "partners.yaml")
    sent = world.send("valley-plan", (FIXTURES / "837p" / "ecm-clean.x12").read_bytes())
    assert world.box("dhcs", sent.submission_id) == []
    [finding] = [f for f in world.store.findings(sent.submission_id)
                 if f["rule"] == "GATEWAY-ENV-001"]
    assert "partner valley-plan has no county_code" in finding["message"]


# -- FHIR create tells the truth --------------------------------------------------------------------
@pytest.fixture
def api(tmp_path):
    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Channel("api", client, auth, DropFolders(tmp_path / "drop"))


def _settled(channel, sid, timeout=20.0):
    import time

    deadline = time.monotonic() + timeout
    while channel.store.submission(sid)["run_state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return channel.store.submission(sid)


@pytest.mark.parametrize("name", ["careplan-ecm.json", "task-ecm.json"])
def test_the_sample_resources_named_by_identifier_route_end_to_end(api, name):
    """careplan-ecm.json and task-ecm.json name their member by CIN only (and the CarePlan
    names no billing provider): the gateway fills in the member's name from the plan's MIF
    and the billing provider from Harbor's partner entry, so they are routed — 201 is true."""
    import json as json_module

    resource = json_module.loads((FIXTURES / "fhir" / "resources" / name).read_text())
    answer = api.client.post(f"/fhir/{resource['resourceType']}", json=resource,
                             headers=api.auth["harbor"])
    assert answer.status_code == 201, answer.text
    found = _settled(api, answer.headers["x-submission-id"])
    assert found["status"] == "routed"
    docs = api.documents("demo-plan")
    [rtf] = [v for k, v in docs.items() if k.endswith(".rtf.csv")]
    row = next(csv.DictReader(io.StringIO(rtf.decode("utf-8-sig"))))
    assert (row["Member Last Name"], row["ECM Provider NPI"]) == (
        {"careplan-ecm.json": "Okafor", "task-ecm.json": "Lindqvist"}[name], "1234500001")
    if name == "careplan-ecm.json":  # its completed ECM activity became a billable line
        [x12] = [v for k, v in docs.items() if k.endswith(".837p.x12")]
        assert b"NM1*IL*1*OKAFOR*ADAEZE****MI*91000001A~" in x12
        assert b"NM1*85*2*HARBOR COMMUNITY HEALTH CENTER*****XX*1234500001~" in x12
        assert b"SV1*HC:G9008:U1*" in x12


def test_a_resource_that_cannot_be_routed_is_a_422_not_a_201(api):
    """A member no MIF knows: the gateway cannot know the member's name, so the CarePlan
    cannot be routed — 422 with the mapping's findings, nothing stored as created."""
    import json as json_module

    resource = json_module.loads(
        (FIXTURES / "fhir" / "resources" / "careplan-ecm.json").read_text())
    resource["subject"]["identifier"]["value"] = "99999999Z"
    answer = api.client.post("/fhir/CarePlan", json=resource, headers=api.auth["harbor"])
    assert answer.status_code == 422
    codes = [i["details"]["coding"][0]["code"] for i in answer.json()["issue"]]
    assert "FHIR-MAP-001" in codes  # member last name: no value, nothing to fill it from
    assert api.store.submission(answer.headers["x-submission-id"])["status"] == "rejected"
    assert api.documents("demo-plan") == {}


# -- the same in both modes: embedded (SQLite, threads) and scale-out (PostgreSQL + Celery) -------
def _post_and_wait(served, partner: str, payload: bytes) -> dict:
    answer = served.client.post("/x12", content=payload,
                                headers=served.auth(partner, Prefer="respond-async"))
    assert answer.status_code in (200, 202), answer.text
    return served.wait_done(answer.json()["submission_id"])


def _mailbox(served, partner: str, submission_id: str) -> dict[str, str]:
    box = served.client.get("/mailbox", headers=served.auth(partner)).json()["documents"]
    return {d["role"]: served.client.get(d["href"], headers=served.auth(partner)).text
            for d in box if d["submission_id"] == submission_id}


def test_both_modes_answer_a_reused_isa13_with_a_ta1_025(served):
    from conftest import renumber

    first = _post_and_wait(served, "harbor", renumber(MIXED, 6001))
    other = _post_and_wait(served, "harbor",
                           renumber(MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO"), 6001))
    assert other["id"] != first["id"] and other["status"] == "rejected"
    assert f"already used by submission {first['id']}" in other["error"]
    docs = _mailbox(served, "harbor", other["id"])
    assert "TA1*000006001*250630*1400*R*025~" in docs["ack-ta1"]
    assert "ack-999" not in docs
    assert _mailbox(served, "demo-plan", other["id"]) == {}


def test_both_modes_refuse_a_claim_billed_as_another_provider(served):
    from conftest import renumber

    faked = MIXED.replace(HARBOR_BILLING, HARBOR_BILLING.replace(b"1234500001", GOLDEN_NPI))
    found = _post_and_wait(served, "harbor", renumber(faked, 6002))
    docs = _mailbox(served, "harbor", found["id"])
    verdicts = status_of_claims(docs["ack-277ca"].encode())
    for claim in _harbor_claims_of(faked):
        assert verdicts[claim].startswith("A7"), claim
    routed = "".join(_mailbox(served, "demo-plan", found["id"]).values()).encode()
    assert not set(_harbor_claims_of(faked)) & set(claims_in(routed))


# -- every "Bad input" scenario of issue 10 in both modes (API and file drop) ----------------------
def _upload_and_wait(served, partner: str, name: str, payload: bytes) -> dict:
    answer = served.client.post("/files", files={"file": (name, payload)},
                                headers=served.auth(partner, Prefer="respond-async"))
    assert answer.status_code in (200, 202), answer.text
    return served.wait_done(answer.json()["submission_id"])


def _documents(served, partner: str, submission_id: str) -> dict[str, bytes]:
    """name → content of what reached ``partner`` from ``submission_id`` (its mailbox)."""
    box = served.client.get("/mailbox", headers=served.auth(partner)).json()["documents"]
    return {d["name"]: served.client.get(d["href"], headers=served.auth(partner)).content
            for d in box if d["submission_id"] == submission_id}


def test_both_modes_refuse_a_claim_billed_under_another_providers_tin(served):
    from conftest import renumber

    faked = MIXED.replace(b"REF*EI*" + HARBOR_TIN, b"REF*EI*" + GOLDEN_TIN)
    found = _post_and_wait(served, "harbor", renumber(faked, 6003))
    docs = _mailbox(served, "harbor", found["id"])
    verdicts = status_of_claims(docs["ack-277ca"].encode())
    assert _harbor_claims_of(faked)
    for claim in _harbor_claims_of(faked):
        assert verdicts[claim].startswith("A7"), claim
    assert "GATEWAY-AUTH-001" in docs["ack-277ca"]
    routed = "".join(_mailbox(served, "demo-plan", found["id"]).values()).encode()
    assert not set(_harbor_claims_of(faked)) & set(claims_in(routed))


@pytest.mark.parametrize("npi, tin", [(GOLDEN_NPI, HARBOR_TIN), (b"1234500001", GOLDEN_TIN)])
def test_both_modes_refuse_an_invoice_billed_as_another_provider(served, npi, tin):
    found = _upload_and_wait(served, "harbor", "invoice.csv", _invoice_as_harbor_with(npi, tin))
    [report] = [v for k, v in _documents(served, "harbor", found["id"]).items()
                if k.endswith(".report.csv")]
    rows = {r["Row"]: r for r in csv.DictReader(io.StringIO(report.decode("utf-8-sig")))}
    for number in ("2", "3", "4", "5"):
        assert rows[number]["Status"] == "rejected"
    for number in ("2", "4", "5"):
        assert "GATEWAY-AUTH-001: billing provider NPI " in rows[number]["Reasons"]
    assert not [k for k in _documents(served, "demo-plan", found["id"]) if k.endswith(".x12")]


def test_both_modes_do_not_forward_an_rtf_row_naming_another_providers_tin(served):
    rtf = (FIXTURES / "rtf" / "rtf-clean.csv").read_bytes()
    first, rest = rtf.split(b"\n", 1)
    row2, others = rest.split(b"\n", 1)
    payload = first + b"\n" + row2.replace(b",1234500001,941200000,",
                                           b",1234500001," + GOLDEN_TIN + b",") + b"\n" + others
    found = _upload_and_wait(served, "harbor", "rtf.csv", payload)
    assert ("GATEWAY-AUTH-002", "row 2") in [(f["rule"], f["location"])
                                             for f in served.store.findings(found["id"])]
    forwarded = b"".join(_documents(served, "demo-plan", found["id"]).values())
    assert b"91230000A" not in forwarded  # row 2's member
    assert b"91258326G" in forwarded  # the other rows went on


def test_both_modes_link_nothing_of_a_state_response_naming_an_unknown_isa13(served):
    response = (FIXTURES / "state" / "response-mixed.xml").read_bytes().replace(
        b"<ISA13>000000001</ISA13>", b"<ISA13>987654321</ISA13>")
    found = _upload_and_wait(served, "dhcs", "response.xml", response)
    summary = found["summary"]
    assert (summary["accepted"], summary["denied"], summary["unmatched"]) == (0, 0, 5)
    assert [f["rule"] for f in served.store.findings(found["id"])] == ["STATE-LINK-001"] * 5
    assert _documents(served, "harbor", found["id"]) == {}  # no "denied" file to a provider
    [summary_csv] = _documents(served, "demo-plan", found["id"]).values()
    rows = list(csv.reader(io.StringIO(summary_csv.decode("utf-8"))))[1:]
    assert {r[1] for r in rows} == {"not linked"} and len(rows) == 5


def test_both_modes_never_deliver_a_replayed_delivered_submission_twice(served):
    from conftest import renumber

    first = _post_and_wait(served, "harbor", renumber(MIXED, 6005))
    delivered = _documents(served, "demo-plan", first["id"])
    assert [k for k in delivered if k.endswith(".x12")]
    refused = served.client.post(f"/submissions/{first['id']}/replay",
                                 headers=served.auth("harbor"))
    assert refused.status_code == 409 and "force" in refused.json()["detail"]
    forced = served.client.post(f"/submissions/{first['id']}/replay?force=true",
                                headers=served.auth("harbor", Prefer="respond-async"))
    assert forced.status_code in (200, 202), forced.text
    again = served.wait_done(forced.json()["submission_id"])
    assert again["status"] == "validated"  # processed, nothing new to deliver
    assert _documents(served, "demo-plan", again["id"]) == {}
    assert "GATEWAY-REPLAY-001" in [f["rule"] for f in served.store.findings(again["id"])]


def test_both_modes_route_a_careplan_naming_member_and_provider_by_identifier_only(served):
    import json as json_module

    resource = json_module.loads(
        (FIXTURES / "fhir" / "resources" / "careplan-ecm.json").read_text())
    resource["id"] = f"trust-{served.mode}"  # its own claim ids in the shared session
    answer = served.client.post("/fhir/CarePlan", json=resource, headers=served.auth("harbor"))
    assert answer.status_code == 201, answer.text
    found = served.wait_done(answer.headers["x-submission-id"])
    assert found["status"] in ("routed", "delivered")
    docs = _documents(served, "demo-plan", found["id"])
    [rtf] = [v for k, v in docs.items() if k.endswith(".rtf.csv")]
    row = next(csv.DictReader(io.StringIO(rtf.decode("utf-8-sig"))))
    assert (row["Member Last Name"], row["ECM Provider NPI"]) == ("Okafor", "1234500001")
    [x12] = [v for k, v in docs.items() if k.endswith(".837p.x12")]
    assert b"NM1*IL*1*OKAFOR*ADAEZE****MI*91000001A~" in x12
    assert b"NM1*85*2*HARBOR COMMUNITY HEALTH CENTER*****XX*1234500001~" in x12
    # a member no MIF knows: not routable, so 422 (not 201), nothing to the plan
    resource["id"] = f"trust-unknown-{served.mode}"
    resource["subject"]["identifier"]["value"] = "99999999Z"
    refused = served.client.post("/fhir/CarePlan", json=resource, headers=served.auth("harbor"))
    assert refused.status_code == 422, refused.text
    assert "FHIR-MAP-001" in [i["details"]["coding"][0]["code"]
                              for i in refused.json()["issue"]]
    sid = refused.headers["x-submission-id"]
    assert served.store.submission(sid)["status"] == "rejected"
    assert _documents(served, "demo-plan", sid) == {}


def _outbox_file(served, partner: str, ending: str, needle: bytes) -> bytes | None:
    outbox = served.drop / partner / "outbox"
    for path in sorted(outbox.iterdir()) if outbox.is_dir() else ():
        if path.name.endswith(ending) and needle in path.read_bytes():
            return path.read_bytes()
    return None


def _outbox_277(served) -> bytes | None:
    """The 277CA in the outbox answering trust-faked.x12 (its 999 names GS06 6007)."""
    outbox = served.drop / "harbor" / "outbox"
    for path in sorted(outbox.iterdir()):
        if path.name.endswith(".999.x12") and b"AK1*HC*6007*" in path.read_bytes():
            answer = outbox / path.name.replace(".999.x12", ".277ca.x12")
            return answer.read_bytes() if answer.exists() else None
    return None


def test_both_modes_through_the_file_drop_reused_isa13_and_impersonation(served):
    """The file drop in both modes: a different file reusing an ISA13 gets its TA1 025 in the
    outbox, and a file billing under another provider's NPI gets its claims rejected in the
    277CA in the outbox, none of them routed."""
    import servers
    from conftest import renumber

    inbox = served.drop / "harbor" / "inbox"
    (inbox / "trust-first.x12").write_bytes(renumber(MIXED, 6006))
    assert servers.wait_for(lambda: _outbox_file(served, "harbor", ".999.x12",
                                                 b"AK1*HC*6006*"), 60)
    (inbox / "trust-other.x12").write_bytes(
        renumber(MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO"), 6006))
    ta1 = servers.wait_for(lambda: _outbox_file(served, "harbor", ".ta1.x12",
                                                b"TA1*000006006*"), 60)
    assert ta1 and b"TA1*000006006*250630*1400*R*025~" in ta1
    faked = MIXED.replace(HARBOR_BILLING, HARBOR_BILLING.replace(b"1234500001", GOLDEN_NPI))
    (inbox / "trust-faked.x12").write_bytes(renumber(faked, 6007))
    ack = servers.wait_for(lambda: _outbox_277(served), 60)
    assert ack, "no 277CA in the outbox"
    verdicts = status_of_claims(ack)
    for claim in _harbor_claims_of(faked):
        assert verdicts[claim].startswith("A7"), claim
