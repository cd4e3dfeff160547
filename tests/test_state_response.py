"""The state's encounter response XML: parsing (with hostile input refused), linking each
encounter to the 837P the gateway sent to the state, updating statuses and history, and the
readable summaries to the plan and to the provider that first sent a denied encounter."""

import json
from datetime import date

import pytest
from conftest import FIXTURES
from server_world import MIXED, make_world
from sqlalchemy import select

from gateway.pipeline.registries import registry_counts, state_status
from gateway.pipeline.process import run_step
from gateway.registry.store import history
from gateway.state.response import (
    EncounterResult,
    LineResult,
    ResponseItem,
    StateResponseError,
    TransactionResult,
    load_layout,
    parse_state_response,
)

STATE = FIXTURES / "state"
RESPONSE = (STATE / "response-mixed.xml").read_bytes()
HEADER = ["claim_id", "status", "dhcs_encounter_id", "line", "severity", "reason"]
DENIED_ROWS = [
    ["MIX-A-GOOD", "denied", "E2026110000001", "", "Error",
     "EDS-DUP-01: Duplicate of a previously accepted encounter line"],
    ["MIX-A-GOOD", "denied", "E2026110000001", "1", "Error",
     "SNIP7-0412: Service line duplicates line 1 of encounter E2026100000417 [SNIP]"],
]
PLAN_ROWS = DENIED_ROWS + [
    ["MIX-B-CS-GOOD", "accepted", "E2026110000002", "", "", ""],
    ["MIX-C-GOOD", "accepted", "E2026110000003", "", "Warning",
     "EDS-W-0107: Billing provider taxonomy not on the provider master file"],
    ["MIX-D-WARN", "accepted", "E2026110000004", "1", "Informational",
     "EDS-I-0009: Modifier 95 noted on an ECM line [SNIP]"],
    # the encounter the gateway never sent is listed, linked to nothing, changing nothing
    ["NOT-SENT-9", "not linked", "E2026110000005", "", "Warning",
     "STATE-LINK-001: encounter NOT-SENT-9 of ISA13 000000001 / GS06 1 / ST02 0001 matches "
     "no 837P sent to the state through the gateway: nothing was changed for it"],
]


# -- parsing -------------------------------------------------------------------------------------
def test_the_response_is_read_into_file_transaction_encounter_and_line_statuses():
    response = parse_state_response(RESPONSE)
    assert (response.status, response.file_name) == ("partial", "demo-plan-encounters.x12")
    [transaction] = response.transactions
    assert (transaction.isa13, transaction.gs06, transaction.st02, transaction.status) == (
        "000000001", "1", "0001", "accepted")
    first = transaction.encounters[0]
    assert first == EncounterResult(
        claim_id="MIX-A-GOOD", status="denied", dhcs_encounter_id="E2026110000001",
        responses=[ResponseItem("Error", "EDS-DUP-01", False,
                                "Duplicate of a previously accepted encounter line")],
        lines=[LineResult(1, "denied", [ResponseItem(
            "Error", "SNIP7-0412", True,
            "Service line duplicates line 1 of encounter E2026100000417")])])
    assert [(e.claim_id, e.status) for e in transaction.encounters] == [
        ("MIX-A-GOOD", "denied"), ("MIX-B-CS-GOOD", "accepted"), ("MIX-C-GOOD", "accepted"),
        ("MIX-D-WARN", "accepted"), ("NOT-SENT-9", "accepted")]


def test_a_status_left_out_follows_the_severity_of_the_responses():
    ns = load_layout()["namespace"]
    xml = f"""<DHCSResponse xmlns="{ns}"><ValidationStatus>Rejected</ValidationStatus>
      <Transaction><ISA13>7</ISA13><Encounter><PatientControlNumber>C1</PatientControlNumber>
        <ServiceLine><LineNumber>2</LineNumber><Response><Severity>Error</Severity><Id>X</Id>
          <IsSNIP>1</IsSNIP><Description>bad</Description></Response></ServiceLine>
        <Response><Severity>Fatal</Severity><Id>Y</Id><Description>worse</Description>
        </Response></Encounter></Transaction></DHCSResponse>""".encode()
    response = parse_state_response(xml)
    assert response.status == "denied"
    assert response.transactions == [TransactionResult("7", "", "", "", [EncounterResult(
        "C1", "denied", "", [ResponseItem("Fatal", "Y", False, "worse")],
        [LineResult(2, "denied", [ResponseItem("Error", "X", True, "bad")])])])]


NO_DTD = ("a DTD or entity declaration is not allowed in a state response (entity expansion "
          "is refused)")


@pytest.mark.parametrize("name, problem", [
    ("billion-laughs.xml", NO_DTD),
    ("external-entity.xml", NO_DTD),
    ("wrong-namespace.xml", ("the root element is in http://example.org/not-dhcs, not the state "
                             "response namespace http://www.dhcs.ca.gov/EDS/DHCSResponse")),
    ("malformed.xml", "not well-formed XML at line 6, column 16"),
])
def test_hostile_or_broken_xml_is_refused_with_a_clear_reason(name, problem):
    with pytest.raises(StateResponseError) as caught:
        parse_state_response((STATE / name).read_bytes())
    assert str(caught.value) == problem


def test_undeclared_entities_oversize_and_other_roots_are_refused():
    ns = load_layout()["namespace"]
    with pytest.raises(StateResponseError, match="not well-formed XML"):
        parse_state_response(f'<DHCSResponse xmlns="{ns}">&boom;</DHCSResponse>'.encode())
    with pytest.raises(StateResponseError, match="larger than 100 bytes"):
        parse_state_response(RESPONSE, {**load_layout(), "max_bytes": 100})
    with pytest.raises(StateResponseError, match="the root element is Other, expected "
                                                 "DHCSResponse"):
        parse_state_response(f'<Other xmlns="{ns}"/>'.encode())
    with pytest.raises(StateResponseError, match="the file is empty"):
        parse_state_response(b"  ")


# -- the flow --------------------------------------------------------------------------------------
@pytest.fixture
def sent(tmp_path):
    """Harbor sends ecm-mixed to the plan (MIX-A-GOOD passes); the plan sends its encounters
    to the state (ISA13 1, GS06 1, ST02 0001 in a fresh gateway)."""
    world = make_world(tmp_path)
    world.send("harbor", MIXED)
    plan_sid = world.send("demo-plan", MIXED).submission_id
    assert registry_counts(world.registry)["history"] == 6
    return world, plan_sid


def test_a_state_response_updates_history_and_reaches_plan_and_provider(sent):
    world, plan_sid = sent
    done = world.upload("dhcs", STATE / "response-mixed.xml", name="response.xml")
    sid = done.submission_id
    assert done.status == "routed"
    summary = world.store.submission(sid)["summary"]
    assert summary == {"kind": "state-response", "file_status": "partial", "transactions": 1,
                       "encounters": 5, "accepted": 3, "denied": 1, "unmatched": 1,
                       "history_lines_removed": 1, "valid": True}
    [plan_doc] = world.box("demo-plan", sid)
    assert (plan_doc["role"], plan_doc["name"]) == ("state-response-summary",
                                                    f"{sid}.state-response.csv")
    assert world.rows(plan_doc) == [HEADER] + PLAN_ROWS
    [provider_doc] = world.box("harbor", sid)
    assert (provider_doc["role"], provider_doc["name"]) == ("state-response-denied",
                                                            f"{sid}.denied-encounters.csv")
    assert world.rows(provider_doc) == [HEADER] + DENIED_ROWS
    assert world.box("golden-table", sid) == [] and world.box("dhcs", sid) == []
    [finding] = world.store.findings(sid)
    assert finding == {
        "rule": "STATE-LINK-001", "severity": "warning", "location": "Encounter[5]",
        "message": "encounter NOT-SENT-9 of ISA13 000000001 / GS06 1 / ST02 0001 matches no "
                   "837P sent to the state through the gateway: nothing was changed for it",
        "source": "gateway policy: a state response answers an 837P the gateway sent, named "
                  "by ISA13 + GS06 + ST02 + claim id"}
    # the denied encounter left the history; the accepted ones stay
    with world.registry.engine.connect() as conn:
        claims = sorted(conn.execute(select(history.c.claim_id)).scalars())
        statuses = conn.execute(select(state_status.c.claim_id, state_status.c.line_number,
                                       state_status.c.status, state_status.c.routed_submission)
                                .order_by(state_status.c.id)).all()
    assert claims == ["HIST-0001", "HIST-0002", "MIX-B-CS-GOOD", "MIX-C-GOOD", "MIX-D-WARN"]
    assert statuses == [("MIX-A-GOOD", None, "denied", plan_sid),
                        ("MIX-A-GOOD", 1, "denied", plan_sid),
                        ("MIX-B-CS-GOOD", None, "accepted", plan_sid),
                        ("MIX-C-GOOD", None, "accepted", plan_sid),
                        ("MIX-D-WARN", None, "accepted", plan_sid),
                        ("MIX-D-WARN", 1, "accepted", plan_sid)]


def test_rerunning_a_state_response_changes_nothing_more(sent):
    world, _ = sent
    sid = world.upload("dhcs", STATE / "response-mixed.xml").submission_id
    state = world.partners.partners["dhcs"]
    before = registry_counts(world.registry)
    with world.registry.engine.connect() as conn:
        rows_before = conn.execute(select(state_status.c.claim_id)).all()
    again = run_step(world.store, world.partners, sid)
    assert again.status == "routed"
    assert registry_counts(world.registry) == before
    with world.registry.engine.connect() as conn:
        assert conn.execute(select(state_status.c.claim_id)).all() == rows_before


def test_a_denied_line_alone_leaves_the_history(sent):
    world, _ = sent
    xml = RESPONSE.replace(b"<EncounterStatus>Denied</EncounterStatus>",
                           b"<EncounterStatus>Accepted with Errors</EncounterStatus>")
    done = world.upload("dhcs", STATE / "response-mixed.xml", payload=xml)
    summary = world.store.submission(done.submission_id)["summary"]
    assert (summary["denied"], summary["history_lines_removed"]) == (0, 1)
    assert world.box("harbor", done.submission_id) == []  # no denied encounter: no summary


@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml",
                                  "wrong-namespace.xml", "malformed.xml"])
def test_a_hostile_response_is_rejected_as_a_finding(sent, name):
    world, _ = sent
    done = world.upload("dhcs", STATE / name)
    assert done.status == "rejected"
    [finding] = world.store.findings(done.submission_id)
    assert finding["rule"] == "STATE-XML-001" and finding["severity"] == "error"
    assert finding["message"].startswith("the state response cannot be read: ")
    assert registry_counts(world.registry)["history"] == 6
    assert world.box("demo-plan", done.submission_id) == []


def test_only_the_state_or_a_plan_sends_state_responses(sent):
    world, _ = sent
    done = world.upload("harbor", STATE / "response-mixed.xml")
    assert done.status == "rejected"
    assert world.store.findings(done.submission_id)[0]["rule"] == "STATE-XML-001"
    # a plan forwarding the state's file itself is linked to its own encounters only
    forwarded = world.upload("demo-plan", STATE / "response-mixed.xml")
    assert forwarded.status == "routed"
    assert world.store.submission(forwarded.submission_id)["summary"]["denied"] == 1


def test_a_response_dropped_in_the_states_inbox_reaches_the_plans_outbox(sent, tmp_path):
    from gateway.pipeline.filedrop import DropFolders, scan_once

    world, _ = sent
    drop = DropFolders(tmp_path / "drop")
    inbox = drop.folders("dhcs")["inbox"]
    (inbox / "EDS_RESPONSE_20261123.xml").write_bytes(RESPONSE)
    [sid] = scan_once(drop, world.store, world.partners, settle_seconds=0)
    outbox = drop.folders("demo-plan")["outbox"]
    summary = outbox / f"{sid}.state-response.csv"
    assert summary.read_text().splitlines()[0] == ",".join(HEADER)
    assert (drop.folders("harbor")["outbox"] / f"{sid}.denied-encounters.csv").is_file()


def test_the_same_flow_on_postgresql(tmp_path):
    """Registries, routing records, statuses and history in a PostgreSQL store."""
    import servers
    from server_world import World

    from gateway.pipeline.partners import Partners, issue_demo_tokens
    from gateway.pipeline.registries import load_demo_registries
    from gateway.pipeline.store import Store

    try:
        context = servers.postgres()
        url = context.__enter__()
    except servers.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        from conftest import ROOT

        issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "p.yaml")
        world = World(Store(url), Partners.load(tmp_path / "p.yaml"))
        assert load_demo_registries(world.store, world.partners) == {
            "members": 32, "providers": 8, "history": 2}
        world.send("harbor", MIXED)
        world.send("demo-plan", MIXED)
        sid = world.upload("dhcs", STATE / "response-mixed.xml").submission_id
        assert world.rows(world.box("demo-plan", sid)[0]) == [HEADER] + PLAN_ROWS
        assert world.rows(world.box("harbor", sid)[0]) == [HEADER] + DENIED_ROWS
        assert registry_counts(world.registry)["history"] == 5
        world.store.close()
        world.registry.engine.dispose()
    finally:
        context.__exit__(None, None, None)


def test_a_replayed_response_replaces_its_statuses(sent):
    from gateway.pipeline.process import replay

    world, _ = sent
    sid = world.upload("dhcs", STATE / "response-mixed.xml").submission_id
    again = replay(world.store, world.partners, sid, actor="operator", force=True)
    assert again.status == "validated"  # the same summaries: not delivered twice
    assert world.box("demo-plan", again.submission_id) == []
    with world.registry.engine.connect() as conn:
        keys = conn.execute(select(state_status.c.response_submission).distinct()).scalars()
        assert list(keys) == [sid]
        assert len(conn.execute(select(state_status.c.id)).all()) == 6
    assert registry_counts(world.registry)["history"] == 5


# -- large files split across workers (gateway.pipeline.split) ------------------------------------
def test_split_parts_keep_their_own_history_and_a_replay_replaces_them(sent):
    from gateway.pipeline.registries import clear_history, history_source, plan_history_source

    world, plan_sid = sent
    store = world.store

    def part(parent, number):
        return store.receive(partner="demo-plan", channel="split", kind="x12",
                             filename=f"part-{number:05d}.x12", payload=f"{parent}{number}".encode(),
                             parent_id=parent).submission_id

    assert history_source(store, plan_sid) == f"submission:{plan_sid}"
    assert history_source(store, part(plan_sid, 2)) == f"submission:{plan_sid}:part-00002.x12"
    replayed = store.receive(partner="demo-plan", channel="replay", kind="x12", filename=None,
                             payload=MIXED, parent_id=plan_sid).submission_id
    assert history_source(store, part(replayed, 2)) == f"submission:{plan_sid}:part-00002.x12"
    # processed whole again, the file clears what its parts once put into the history
    # history is kept per plan: the plan's 837P lines sit under plan:<plan>:submission:<root>
    assert plan_history_source(store, part(replayed, 3)) == \
        f"plan:demo-plan:submission:{plan_sid}:part-00003.x12"
    world.registry.load_history([{"cin": "91230000A", "service_date": date(2025, 6, 20),
                                  "claim_id": "PART-CLAIM", "line_number": 1}],
                                source=f"plan:demo-plan:submission:{plan_sid}:part-00002.x12")
    assert clear_history(world.registry, f"plan:demo-plan:submission:{plan_sid}") == 4 + 1


def test_a_merged_document_is_reindexed(sent):
    from gateway.pipeline.registries import find_routed, reindex_routed

    world, plan_sid = sent
    store = world.store
    [routed] = [d for d in store.documents(plan_sid) if d["role"] == "routed-837p"]
    content = store.document(routed["id"])["content"]
    merged = content.replace(b"*000000001*", b"*000000077*")  # a merge gets new numbers
    store.add_document(plan_sid, role="routed-837p", name="merged.837p.x12", content=merged,
                       media_type="application/edi-x12", recipient="dhcs")
    assert reindex_routed(store, world.partners, plan_sid) == 8  # two documents, 4 claims each
    found = find_routed(world.registry, isa13="77", claim_id="MIX-C-GOOD", recipients=["dhcs"])
    assert found["submission_id"] == plan_sid
    assert found["history_source"] == f"plan:demo-plan:submission:{plan_sid}"


def test_an_unknown_isa13_links_nothing_and_changes_nothing(sent):
    """A response naming an ISA13 the gateway never sent: every encounter is STATE-LINK-001,
    listed in the plan's summary, and no status, history line or provider file changes — no
    claim-id guess applies a verdict to another interchange's encounters."""
    world, plan_sid = sent
    before = registry_counts(world.registry)
    other = RESPONSE.replace(b"<ISA13>000000001</ISA13>", b"<ISA13>000000999</ISA13>")
    done = world.upload("dhcs", STATE / "response-mixed.xml", payload=other)
    summary = world.store.submission(done.submission_id)["summary"]
    assert (summary["accepted"], summary["denied"], summary["unmatched"]) == (0, 0, 5)
    assert [f["rule"] for f in world.store.findings(done.submission_id)] == \
        ["STATE-LINK-001"] * 5
    assert registry_counts(world.registry) == before  # MIX-A-GOOD stays in the history
    with world.registry.engine.connect() as conn:
        assert conn.execute(select(state_status.c.id)).all() == []
    assert world.box("harbor", done.submission_id) == []  # no "denied" file to the provider
    # the plan's summary lists them (the only plan: the ISA13 names none)
    [plan_doc] = world.box("demo-plan", done.submission_id)
    rows = world.rows(plan_doc)[1:]
    assert [(r[0], r[1]) for r in rows] == [
        ("MIX-A-GOOD", "not linked"), ("MIX-B-CS-GOOD", "not linked"),
        ("MIX-C-GOOD", "not linked"), ("MIX-D-WARN", "not linked"),
        ("NOT-SENT-9", "not linked")]
    assert all(r[5].startswith("STATE-LINK-001: ") for r in rows)


def test_a_plan_may_ask_for_claim_id_links_and_each_is_warned(tmp_path):
    """``state_link: claim-id`` in the plan's entry: an encounter whose control numbers match
    nothing is linked by its claim id alone, each link with STATE-LINK-003."""
    import yaml

    world = make_world(tmp_path)
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    for entry in data["partners"]:
        if entry["id"] == "demo-plan":
            entry["state_link"] = "claim-id"
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    from gateway.pipeline.partners import Partners

    world.partners = Partners.load(tmp_path / "partners.yaml")
    world.send("harbor", MIXED)
    world.send("demo-plan", MIXED)
    other = RESPONSE.replace(b"<ISA13>000000001</ISA13>", b"<ISA13>000000999</ISA13>")
    done = world.upload("dhcs", STATE / "response-mixed.xml", payload=other)
    summary = world.store.submission(done.submission_id)["summary"]
    assert (summary["accepted"], summary["denied"], summary["unmatched"]) == (3, 1, 1)
    rules = [f["rule"] for f in world.store.findings(done.submission_id)]
    assert rules == ["STATE-LINK-003"] * 4 + ["STATE-LINK-001"]
def test_the_command_line_validates_a_state_response():
    from test_cli import run

    done = run("validate", STATE / "response-mixed.xml", "--format", "json")
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)["files"]
    assert (report["kind"], report["valid"], report["findings"]) == ("state-response", True, [])
    assert report["stats"] == {"file_status": "partial", "transactions": 1, "encounters": 5,
                               "denied_encounters": 1}
    for name, problem in (("billion-laughs.xml", "a DTD or entity declaration is not allowed"),
                          ("malformed.xml", "not well-formed XML at line 6")):
        done = run("validate", STATE / name, "--format", "json")
        assert done.returncode == 1 and "Traceback" not in done.stderr
        [finding] = json.loads(done.stdout)["files"][0]["findings"]
        assert finding["rule"] == "STATE-XML-001" and problem in finding["message"]
