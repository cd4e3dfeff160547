"""`make run`'s demo: files dated relative to today, and each role (plan, provider, state)
finding a clean success and an instructive rejection once they went through the gateway."""

from datetime import date

import pytest
from conftest import ROOT

import browser
from gateway import demo
from gateway.api.app import create_app
from gateway.pipeline.partners import issue_demo_tokens


def test_dates_move_by_whole_weeks_everywhere():
    days = 7 * 75  # 2025-06-03 + 525 days = 2026-11-10
    moved = demo.shift_text("a,2025-06-03,2025-06,1950-01-01T10:00:00Z\n", days)
    assert moved == "a,2026-11-10,2026-11,1951-06-10T10:00:00Z\n"
    x12 = ("ISA*00*          *00*          *ZZ*A              *ZZ*B              *250630*1400*^"
           "*00501*000000501*0*P*:~GS*HC*A*B*20250630*1400*501*X*005010X222A1~"
           "DTP*472*D8*20250603~DTP*472*RD8*20250601-20250602~CLM*20250603*25~")
    moved = demo.shift_text(x12, days)
    assert "*261207*1400*" in moved and "GS*HC*A*B*20261207*" in moved
    assert "DTP*472*D8*20261110~" in moved and "RD8*20261108-20261109~" in moved
    assert demo.weeks_since(date(2025, 6, 30), date(2026, 12, 4)) == 518
    assert demo.weeks_since(date(2025, 6, 30), date(2025, 7, 6)) == 0


@pytest.fixture(scope="module")
def told(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               folder / "partners.yaml")
    app = create_app(store=f"sqlite:///{folder / 'gateway.sqlite'}",
                     partners=folder / "partners.yaml")
    files = demo.write_files(folder / "demo", date.today())
    demo.load_registries(app.state.store, app.state.partners, folder / "demo")
    with browser.live_server(app) as base:
        rows = demo.send(base, tokens, files)
        demo.wait_until_settled(app.state.store)
        yield app, rows, base, tokens, folder


def outcome(store, row) -> str:
    if row["status"] in ("created", "refused"):  # FHIR answers
        return "success" if row["status"] == "created" else "rejection"
    found = store.submission(row["submission_id"])
    clean = found["status"] in ("routed", "delivered", "validated") and \
        found["summary"].get("valid") is True
    return "success" if clean else "rejection"


@pytest.mark.parametrize("partner", ["demo-plan", "harbor", "dhcs"])
def test_each_role_sees_a_success_and_a_rejection(told, partner):
    app, rows, _, _, _ = told
    mine = [outcome(app.state.store, r) for r in rows if r["partner"] == partner]
    assert "success" in mine and "rejection" in mine, mine


def test_the_demo_tells_the_whole_story(told):
    app, rows, _, _, _ = told
    by_file = {r["file"].split("-2")[0].removesuffix(".json").removesuffix(".xml"): r
               for r in rows}
    store = app.state.store
    assert by_file["careplan"]["status"] == "created" and by_file["referral"]["status"] == \
        "created"
    assert by_file["careplan-no-member"]["status"] == "refused"
    invoice = store.submission(by_file["invoice"]["submission_id"])
    assert invoice["status"] == "routed" and invoice["summary"]["rejected_rows"] == 0
    claims = store.submission(by_file["claims"]["submission_id"])
    assert claims["summary"]["accepted_claims"] >= 1 and claims["summary"]["rejected_claims"] >= 1
    assert store.submission(by_file["claims-errors"]["submission_id"])["status"] == "rejected"
    response = store.submission(by_file["response"]["submission_id"])
    assert response["status"] == "routed" and response["summary"]["accepted"] >= 1
    assert response["summary"]["denied"] >= 1  # the provider hears of its denied line
    assert store.submission(by_file["response-broken"]["submission_id"])["status"] == \
        "rejected"
    # nothing was refused for timely filing: the files are dated relative to today
    for row in rows:
        if row["submission_id"]:
            assert all(c["rule"] != "INV-002" for c in store.finding_counts(
                row["submission_id"]))


def test_the_banner_ends_with_ready_exports_and_the_console(told):
    _, rows, base, tokens, folder = told
    text = demo.banner(base, tokens, rows, folder / "drop", folder / "demo")
    assert f"export HARBOR_TOKEN={tokens['harbor']}" in text
    assert f"export OPS_TOKEN={tokens['ops']}" in text
    assert f"{base}/console/" in text
    assert text.rstrip().endswith("=" * 78)


def test_the_banners_x12_commands_answer_as_it_says(told):
    """What the banner tells a newcomer to try: the demo's 837P with defects sent again gets
    the earlier answer (same submission, 999 included); the undated fixture it was made from,
    another interchange reusing its ISA13, gets a TA1 with TA105 025."""
    import json
    import re
    import urllib.request

    _, rows, base, tokens, folder = told
    text = demo.banner(base, tokens, rows, folder / "drop", folder / "demo")
    files = re.findall(r"--data-binary @(\S+) \$GATEWAY/x12", text)
    assert len(files) == 2, text
    earlier = next(r for r in rows if r["file"].startswith("claims-errors-"))

    def post(path: str) -> dict:
        request = urllib.request.Request(
            base + "/x12", data=open(path, "rb").read(), method="POST",
            headers={"Authorization": f"Bearer {tokens['harbor']}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:  # a rejection is a 4xx with the same body
            return json.loads(error.read())

    again = post(files[0])
    assert again["duplicate"] is True and again["submission_id"] == earlier["submission_id"]
    reused = post(files[1])
    assert reused["duplicate"] is False and reused["submission_id"] != earlier["submission_id"]
    assert "TA1*000000004*" in reused["ack_ta1"] and "*R*025~" in reused["ack_ta1"]
