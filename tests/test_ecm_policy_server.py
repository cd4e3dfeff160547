"""Issue 14 through the server's pipeline: a plan's claims extract and CS authorization file
become its registries (whole or not at all), a MIF with an overlapping assignment is not
applied, presumptive authorization per plan setting, and the MIF re-check."""

from conftest import FIXTURES
from server_world import MIXED, make_world
from sqlalchemy import func, select

from gateway.ecm import plans
from gateway.registry.store import cs_authorizations, history

HERE = FIXTURES / "ecm-policy"


def count(world, table, source_like):
    with world.registry.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)
                            .where(table.c.source.like(source_like))).scalar()


def test_a_plans_claims_extract_becomes_its_history(tmp_path):
    world = make_world(tmp_path)
    done = world.upload("demo-plan", HERE / "claims-history.csv")
    assert done.status == "validated"
    summary = world.store.submission(done.submission_id)["summary"]
    assert summary == {"kind": "claims", "rows": 8, "history_lines_loaded": 8, "valid": True}
    assert count(world, history, "plan:demo-plan:claims:claims-history.csv") == 8
    again = world.upload("demo-plan", HERE / "claims-history.csv")  # replaces, not adds
    assert again.status == "validated"
    assert count(world, history, "plan:demo-plan:claims:%") == 8
    bad = (HERE / "claims-history.csv").read_text().replace("2025-01-11", "2025-13-11")
    rejected = world.upload("demo-plan", HERE / "claims-history.csv",
                            payload=bad.encode())
    assert rejected.status == "rejected"
    assert [(f["rule"], f["location"]) for f in world.store.findings(rejected.submission_id)] \
        == [("ROW-002", "row 3, column Service Date"), ("ECM-REG-002", "file")]
    assert count(world, history, "plan:demo-plan:claims:%") == 8  # as it was


def test_a_providers_claims_extract_is_not_history(tmp_path):
    world = make_world(tmp_path)
    done = world.upload("harbor", HERE / "claims-history.csv")
    assert count(world, history, "plan:%:claims:%") == 0  # validated only, never loaded
    assert "history_lines_loaded" not in world.store.submission(done.submission_id)["summary"]


def test_cs_authorization_file_and_a_cs_only_members_invoice(tmp_path):
    world = make_world(tmp_path)
    from datetime import date, timedelta

    day = date.today() - timedelta(days=30)  # inside timely filing (the server's today)
    auth = (HERE / "cs-authorizations.csv").read_text().replace(
        "2025-05-01,2025-10-31", f"{day - timedelta(days=1)},{day + timedelta(days=1)}")
    done = world.upload("demo-plan", HERE / "cs-authorizations.csv", payload=auth.encode())
    assert done.status == "validated"
    assert count(world, cs_authorizations, "plan:demo-plan:cs-auth") == 1
    invoice = (HERE / "invoice.csv").read_text().replace("2025-06-02", day.isoformat())
    sent = world.upload("harbor", HERE / "invoice.csv",  # the CS-only member's row only
                        payload=("\n".join(invoice.splitlines()[:2]) + "\n").encode())
    rules = [f["rule"] for f in world.store.findings(sent.submission_id)]
    assert "ECM-MEM-002" not in rules and "ECM-CS-002" not in rules
    assert sent.status == "routed"


def test_a_mif_with_an_overlapping_assignment_is_not_applied(tmp_path):
    world = make_world(tmp_path)
    before = count(world, __import__("gateway.registry.store", fromlist=["assignments"])
                   .assignments, "plan:demo-plan:%")
    done = world.upload("demo-plan", HERE / "mif-overlapping.csv")
    found = [(f["rule"], f["location"]) for f in world.store.findings(done.submission_id)]
    assert ("ECM-MIF-002", "row 6, column ECM Benefit Start Date") in found
    assert ("ECM-REG-002", "file") in found
    assert world.store.submission(done.submission_id)["summary"]["members_loaded"] == 0
    after = count(world, __import__("gateway.registry.store", fromlist=["assignments"])
                  .assignments, "plan:demo-plan:%")
    assert after == before


def test_presumptive_authorization_per_plan_setting(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    world = make_world(tmp_path / "a")
    base = world.send("harbor", MIXED)
    rules = [f["rule"] for f in world.store.findings(base.submission_id, view="plan")]
    assert "ECM-MEM-002" in rules and "ECM-MEM-004" not in rules
    setting = {"presumptive_authorization": {"providers": ["1234500001"], "days": 60}}
    monkeypatch.setattr(plans, "plan_settings",
                        lambda plan: setting if plan == "demo-plan" else {})
    world = make_world(tmp_path / "b")
    again = world.send("harbor", MIXED)
    found = {f["rule"]: f for f in world.store.findings(again.submission_id, view="plan")}
    assert "ECM-MEM-002" not in found
    assert found["ECM-MEM-004"]["severity"] == "warning"
    summary = world.store.submission(again.submission_id)["summary"]
    assert summary["accepted_claims"] == 2  # the presumptive claim joins MIX-A-GOOD
    # the trusted provider itself is told the provisional acceptance (its own arrangement)
    told = [f["rule"] for f in world.store.findings(again.submission_id)]
    assert "ECM-MEM-004" in told


def test_presumptive_period_continues_across_submissions_and_the_mif_rechecks_it(
        tmp_path, monkeypatch):
    # an audit: each provider submission opened a new period (the server's history holds a
    # provider's lines only once the plan sends them to the state) and the MIF re-check never
    # fired in the server; the periods are now recorded per submission (presumptive_lines)
    from gateway.registry.store import presumptive_lines

    setting = {"presumptive_authorization": {"providers": ["1234500001"], "days": 60}}
    monkeypatch.setattr(plans, "plan_settings",
                        lambda plan: setting if plan == "demo-plan" else {})
    world = make_world(tmp_path)
    first = world.send("harbor", MIXED)  # MIX-E-NOMEMBER: 2025-06-03, an unknown member
    told = {f["rule"]: f["message"] for f in world.store.findings(first.submission_id)}
    assert told["ECM-MEM-004"].endswith("from 2025-06-03 to 2025-08-01, pending the plan's "
                                        "decision; the plan's member file will settle them")
    assert count(world, presumptive_lines, "provider:harbor:submission:%") == 1
    at = MIXED.index(b"CLM*MIX-E-NOMEMBER")
    later = MIXED[:at] + MIXED[at:].replace(b"DTP*472*D8*20250603", b"DTP*472*D8*20250802", 1)
    later = later.replace(b"000000501", b"000000502").replace(b"*501*X*", b"*502*X*") \
        .replace(b"*501~", b"*502~").replace(b"20250630", b"20250815") \
        .replace(b"*250630*", b"*250815*")  # (new control numbers and file date)
    assert later.count(b"20250802") == 1 and later != MIXED
    second = world.send("harbor", later)
    told = {f["rule"]: f["message"] for f in world.store.findings(second.submission_id)}
    assert "ECM-MEM-004" not in told and not [r for r in told if r.startswith("X12-")], told
    assert told["ECM-MEM-005"] == ("the provisional period of provider NPI 1234500001 for this "
                                   "member (2025-06-03 to 2025-08-01) is over and the plan has "
                                   "not decided yet")
    assert count(world, presumptive_lines, "provider:harbor:submission:%") == 2
    # the plan's MIF assigns the member to another provider: the re-check warns on its row
    mif = (HERE / "mif-overlapping.csv").read_text().splitlines()
    row = mif[1].replace("94100002B", "99999999Z").replace("Harbor Community Health Center",
                                                           "Mesa Family Services") \
        .replace("1234500001", "1234658387")
    done = world.upload("demo-plan", HERE / "mif.csv",
                        payload=("\n".join([mif[0], row]) + "\n").encode())
    found = [(f["rule"], f["location"], f["message"])
             for f in world.store.findings(done.submission_id, view="plan")
             if f["rule"] == "ECM-MEM-006"]
    assert found == [("ECM-MEM-006", "row 2, column Member CIN",
                      "ECM lines of provider NPI 1234500001 from 2025-06-03 to 2025-08-02 were "
                      "accepted under presumptive authorization, but this MIF assigns the "
                      "member to provider NPI 1234658387")]
