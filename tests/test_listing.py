"""GET /submissions (filters, search, keyset paging), paged findings in GET /submissions/{id},
the paged mailbox, and the OpenAPI document and its locally served pages."""

from datetime import UTC, datetime, timedelta

import pytest
from conftest import FIXTURES, demo_gateway
from fastapi.testclient import TestClient

from gateway.findings import Finding
from gateway.pipeline.search import keys_of

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()
DEFECTS = (FIXTURES / "837p" / "ecm-claim-defects.x12").read_bytes()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """57 stored submissions over 3 days (harbor and golden-table), and one real X12 run."""
    app, auth = demo_gateway(tmp_path_factory.mktemp("listing"), registries=True)
    store = app.state.store
    made = []
    for i in range(57):
        partner = "harbor" if i % 3 else "golden-table"
        kind = "x12" if i % 2 else "file"
        name = f"batch-{i:03d}.x12" if kind == "x12" else f"invoice-{i:03d}.csv"
        payload = f"payload {i}".encode()
        sid = store.receive(partner=partner, channel="api", kind=kind, filename=name,
                            payload=payload, now=T0 + timedelta(hours=i),
                            keys=[("claim", f"CLAIM-{i:03d}")], claimed_by="fixture",
                            lease=timedelta(days=3650)).submission_id
        if i % 5 == 0:
            store.set_status(sid, "rejected", now=T0 + timedelta(hours=i, minutes=1))
        store.finish(sid, "fixture")  # not for the workers to run
        made.append((sid, partner, kind, name))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, auth, made, app


def pages(client, headers, query=""):
    seen, cursor = [], None
    while True:
        url = f"/submissions?limit=10{query}" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=headers).json()
        seen.extend(body["submissions"])
        cursor = body.get("next_cursor")
        if cursor is None:
            return seen


def test_pages_walk_every_own_submission_once_newest_first(world):
    client, auth, made, _ = world
    rows = pages(client, auth["harbor"])
    expected = [sid for sid, partner, *_ in reversed(made) if partner == "harbor"]
    assert [r["id"] for r in rows] == expected
    assert all(r["href"] == f"/submissions/{r['id']}" for r in rows)
    # an operator walks everyone's; a filter narrows it to one partner
    assert [r["id"] for r in pages(client, auth["ops"])] == [m[0] for m in reversed(made)]
    golden = pages(client, auth["ops"], "&partner=golden-table")
    assert {r["partner"] for r in golden} == {"golden-table"} and len(golden) == 19


def test_filters_kind_status_and_dates(world):
    client, auth, made, _ = world
    rejected_files = pages(client, auth["harbor"], "&kind=file&status=rejected")
    assert [r["id"] for r in rejected_files] == [
        sid for i, (sid, partner, kind, _) in reversed(list(enumerate(made)))
        if partner == "harbor" and kind == "file" and i % 5 == 0]
    # T0 + 24 h .. T0 + 47 h is 2026-03-02 12:00 to 2026-03-03 11:00; the day 2026-03-02
    # holds hours 12..35 after T0
    day = pages(client, auth["ops"], "&since=2026-03-02&until=2026-03-02")
    assert sorted(r["created_at"][:10] for r in day) == ["2026-03-02"] * 24
    moment = pages(client, auth["ops"], "&since=2026-03-03T10:00:00Z")
    assert len(moment) == 57 - 46


@pytest.mark.parametrize("query, index", [("invoice-004.csv", 4), ("batch-007", 7),
                                          ("CLAIM-013", 13)])
def test_search_by_file_name_its_start_or_a_claim_id(world, query, index):
    client, auth, made, _ = world
    found = client.get(f"/submissions?q={query}", headers=auth["ops"]).json()["submissions"]
    assert [r["id"] for r in found] == [made[index][0]]
    by_id = client.get(f"/submissions?q={made[index][0]}", headers=auth["ops"]).json()
    assert [r["id"] for r in by_id["submissions"]] == [made[index][0]]


def test_search_by_isa13_gs06_and_clm01_of_a_real_interchange(world):
    client, auth, _, _ = world
    sid = client.post("/x12", content=MIXED, headers=auth["harbor"]).json()["submission_id"]
    for query in ("000000501", "501", "MIX-C-GOOD"):
        found = client.get(f"/submissions?q={query}", headers=auth["harbor"]).json()
        assert [r["id"] for r in found["submissions"]] == [sid], query
    assert client.get("/submissions?q=MIX-C-GOOD",
                      headers=auth["golden-table"]).json() == {"submissions": []}


@pytest.mark.parametrize("query", ["cursor=not-a-cursor", "cursor=Zm9v", "since=yesterday",
                                   "limit=0", "limit=100000"])
def test_bad_paging_or_filters_are_a_400_not_a_traceback(world, query):
    client, auth, _, _ = world
    answer = client.get(f"/submissions?{query}", headers=auth["harbor"])
    assert answer.status_code in (400, 422) and "detail" in answer.json()


def test_findings_are_paged_and_counted_by_rule(world):
    client, auth, _, app = world
    store = app.state.store
    sid = store.receive(partner="harbor", channel="api", kind="file", filename="many.csv",
                        payload=b"many findings", claimed_by="test").submission_id
    store.add_findings(sid, [Finding(rule=f"RULE-{i % 3}", severity="error",
                                     location=f"row {i}", message=f"problem {i}", source="test")
                             for i in range(25)])
    seen, cursor = [], None
    while True:
        url = f"/submissions/{sid}?limit=10" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=auth["harbor"]).json()
        seen += [f["location"] for f in body["findings"]]
        cursor = body.get("findings_next_cursor")
        if cursor is None:
            break
    assert seen == [f"row {i}" for i in range(25)]
    assert body["finding_counts"] == [{"rule": "RULE-0", "severity": "error", "count": 9},
                                      {"rule": "RULE-1", "severity": "error", "count": 8},
                                      {"rule": "RULE-2", "severity": "error", "count": 8}]
    only = client.get(f"/submissions/{sid}?rule=RULE-2", headers=auth["harbor"]).json()
    assert [f["location"] for f in only["findings"]] == [f"row {i}" for i in range(2, 25, 3)]


def test_mailbox_is_paged(world):
    client, auth, _, app = world
    store = app.state.store
    sid = store.receive(partner="harbor", channel="api", kind="file", filename="m.csv",
                        payload=b"mail", claimed_by="w", lease=timedelta(hours=1)).submission_id
    for i in range(7):
        store.add_document(sid, role="report", name=f"r{i}.csv", content=b"x",
                           media_type="text/csv", recipient="demo-plan",
                           now=T0 + timedelta(minutes=i))
    store.finish(sid, "w")
    names, cursor = [], None
    while True:
        body = client.get("/mailbox?limit=3" + (f"&cursor={cursor}" if cursor else ""),
                          headers=auth["demo-plan"]).json()
        names += [d["name"] for d in body["documents"]]
        cursor = body.get("next_cursor")
        if cursor is None:
            break
    assert [n for n in names if n.startswith("r")] == [f"r{i}.csv" for i in reversed(range(7))]


def test_openapi_declares_bodies_headers_and_models(world):
    client, _, _, _ = world
    spec = client.get("/openapi.json").json()
    x12 = spec["paths"]["/x12"]["post"]
    assert set(x12["requestBody"]["content"]) == {"application/edi-x12", "text/plain"}
    headers = {p["name"] for p in x12["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "prefer"} <= {h if h == "Idempotency-Key" else h.lower()
                                            for h in headers}
    assert x12["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "SubmitAnswer")
    listing = spec["paths"]["/submissions"]["get"]
    assert {"kind", "status", "since", "until", "q", "cursor", "limit", "partner"} <= {
        p["name"] for p in listing["parameters"]}
    for path in ("/submissions/{submission_id}", "/mailbox"):
        schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"]["$ref"].startswith("#/components/schemas/")


def test_docs_pages_load_their_assets_from_the_gateway(world):
    client, _, _, _ = world
    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
                         ("/redoc", ("redoc.standalone.js",))):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        for asset in assets:
            assert f"/static/docs/{asset}" in html
            served = client.get(f"/static/docs/{asset}")
            assert served.status_code == 200 and len(served.content) > 100_000


def test_an_operator_reads_and_replays_but_does_not_submit(world):
    client, auth, made, _ = world
    assert client.post("/x12", content=MIXED, headers=auth["ops"]).status_code == 403
    assert client.post("/files", files={"file": ("a.csv", b"a,b\n1,2\n")},
                       headers=auth["ops"]).status_code == 403
    sid = made[3][0]  # golden-table's
    assert made[3][1] == "golden-table"
    assert client.get(f"/submissions/{sid}", headers=auth["ops"]).status_code == 200
    assert client.get(f"/submissions/{sid}", headers=auth["harbor"]).status_code == 404
    replayed = client.post(f"/submissions/{sid}/replay", headers=auth["ops"])
    assert replayed.status_code in (200, 202) and replayed.json()["replay_of"] == sid
    assert ("ops", "replay", sid) in {(e["actor"], e["action"], e["target"])
                                      for e in world[3].state.store.audit_log()}


def test_search_keys_of_files():
    assert keys_of("x12", None, DEFECTS)[:3] == [("isa13", "000000004"), ("gs06", "4"),
                                                  ("claim", "ECM0300000001")]
    invoice = (FIXTURES / "invoice" / "invoice-clean.csv").read_bytes()
    assert keys_of("file", "invoice-clean.csv", invoice) == [("claim", "INV-2001"),
                                                            ("claim", "INV-2002")]
    assert keys_of("file", "x.csv", b"\xff\xfe garbage") == []
    assert keys_of("x12", None, b"ISA*broken") == []
