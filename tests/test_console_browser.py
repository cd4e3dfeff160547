"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against a
live gateway on loopback. A provider signs in, filters and searches, opens its rejected
submission, reads the 999 overview, downloads the 999, replays the file, is refused another
partner's submission, and sees a hostile file name as text; an operator sees every partner.
Screenshots of each step are kept in test-artifacts/console/ (ECM_GATEWAY_ARTIFACTS elsewhere).
"""

import os
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES, ROOT, demo_gateway

import browser

pytestmark = pytest.mark.browser

DEFECTS = (FIXTURES / "837p" / "ecm-claim-defects.x12").read_bytes()
MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()
XSS = "<img src=x onerror=alert(1)>.csv"
ARTIFACTS = Path(os.environ.get("ECM_GATEWAY_ARTIFACTS", ROOT / "test-artifacts")) / "console"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    try:
        browser.chromium_path()
    except browser.Unavailable as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("console-browser")
    app, auth = demo_gateway(folder, registries=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser.live_server(app) as base, browser.chromium() as chromium:
        with httpx.Client(base_url=base, timeout=60) as api:
            sent = {
                "rejected": api.post("/x12", content=DEFECTS, headers=auth["harbor"]).json(),
                "routed": api.post("/x12", content=MIXED, headers=auth["harbor"]).json(),
                "xss": api.post("/files", files={"file": (XSS, b"Invoice Number\nINV-1\n")},
                                headers=auth["harbor"]).json(),
                "other": api.post("/x12", content=MIXED,
                                  headers=auth["golden-table"]).json(),
            }
        yield base, auth, sent, chromium, app


def new_page(chromium, base):
    context = chromium.new_context(viewport={"width": 1366, "height": 900},
                                   accept_downloads=True, base_url=base)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    return page


def sign_in(page, token: str) -> None:
    page.goto("/console/")
    assert page.url.endswith("/console/signin")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")


def token(auth, partner):
    return auth[partner]["Authorization"].split(" ", 1)[1]


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_provider_finds_reads_downloads_and_replays_its_rejected_file(live):
    base, auth, sent, chromium, app = live
    page = new_page(chromium, base)
    sign_in(page, token(auth, "harbor"))
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    shot(page, "01-dashboard")

    page.get_by_role("link", name="Submissions").first.click()
    page.get_by_label("Status").select_option("rejected")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/console/submissions?status=rejected")
    rows = page.locator("table.list tbody tr")
    rejected = sent["rejected"]["submission_id"]
    assert set(rows.locator("td .status").all_inner_texts()) == {"rejected"}
    assert page.locator(f'a[href="/console/submissions/{rejected}"]').count() >= 1
    assert page.locator(f'a[href="/console/submissions/{sent["routed"]["submission_id"]}"]'
                        ).count() == 0
    shot(page, "02-filtered")

    page.get_by_label("Status").select_option("")
    page.get_by_label("Search").fill("ECM0300000002")  # a claim id inside the file
    page.get_by_role("button", name="Apply").click()
    assert page.locator("table.list tbody tr").count() == 1
    page.locator("table.list tbody tr a").first.click()
    page.wait_for_url(f"**/console/submissions/{rejected}")
    assert page.locator("#status").inner_text() == "rejected"

    overview = page.locator("section.ack").first
    assert "transaction sets received 1" in overview.inner_text()
    assert "Segment has data element errors" in overview.inner_text()
    assert page.get_by_role("heading", name="Findings").count() == 1
    shot(page, "03-rejected-999")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download the 999").click()
    ack = Path(download.value.path()).read_text(encoding="latin-1")
    assert ack.startswith("ISA") and "ST*999*" in ack and "IK3*" in ack

    page.get_by_role("link", name="Replay…").click()
    page.wait_for_url(f"**/console/submissions/{rejected}/replay")
    shot(page, "04-replay-confirm")
    page.get_by_role("button", name="Replay now").click()
    page.wait_for_url("**/console/submissions/*")
    assert rejected not in page.url
    page.wait_for_timeout(200)
    page.reload()
    assert "Replay of" in page.locator("section", has_text="Lineage").inner_text()
    shot(page, "05-replayed")
    assert [r["id"] for r in app.state.store.replays_of(rejected)] == [page.url.rsplit("/", 1)[1]]
    assert page.problems == []


def test_another_partners_submission_by_url_is_not_found(live):
    base, auth, sent, chromium, _ = live
    page = new_page(chromium, base)
    sign_in(page, token(auth, "harbor"))
    other = sent["other"]["submission_id"]
    answer = page.goto(f"/console/submissions/{other}")
    assert answer.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    assert other not in page.content().replace(f"/console/submissions/{other}", "")
    shot(page, "06-not-found")
    page.goto("/console/submissions")
    assert page.locator(f'a[href="/console/submissions/{other}"]').count() == 0


def test_a_hostile_file_name_renders_as_text(live):
    base, auth, sent, chromium, _ = live
    page = new_page(chromium, base)
    sign_in(page, token(auth, "harbor"))
    page.goto("/console/submissions")
    assert page.get_by_text(XSS).count() >= 1
    assert page.locator("img").count() == 0
    page.goto(f"/console/submissions/{sent['xss']['submission_id']}")
    assert page.get_by_role("heading", name=XSS).is_visible()
    assert page.locator("img").count() == 0
    shot(page, "07-hostile-name")
    assert not [p for p in page.problems if p.startswith("dialog")]


def test_an_operator_sees_every_partner_and_the_keyboard_reaches_the_content(live):
    base, auth, sent, chromium, _ = live
    page = new_page(chromium, base)
    sign_in(page, token(auth, "ops"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.locator("svg[role=img] title").first.text_content().startswith(
        "Submissions per day")
    assert page.get_by_role("heading", name="Queue").is_visible()
    shot(page, "08-operator-dashboard")
    page.goto("/console/submissions")
    partners = set(page.locator("table.list tbody tr td:nth-child(2)").all_inner_texts())
    assert {"harbor", "golden-table"} <= partners
    page.get_by_label("Partner").select_option("golden-table")
    page.get_by_role("button", name="Apply").click()
    assert set(page.locator("table.list tbody tr td:nth-child(2)").all_inner_texts()) == {
        "golden-table"}
    shot(page, "09-operator-list")
    page.goto(f"/console/submissions/{sent['other']['submission_id']}")
    assert page.locator("#status").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/signin")
    assert page.goto("/console/submissions").url.endswith("/console/signin?next=%2Fconsole%2F"
                                                          "submissions")
    assert page.problems == []


def test_the_api_docs_render_from_the_gateways_own_assets(live):
    base, _, _, chromium, _ = live
    page = new_page(chromium, base)
    requested = []  # what was fetched (the pages' CSP blocks anything from elsewhere)
    page.on("response", lambda r: requested.append(r.url))
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "ECM Gateway" in page.locator(".swagger-ui .info .title").inner_text()
    page.goto("/redoc")
    page.wait_for_selector("redoc h1, [role=main] h1, h1", timeout=30_000)
    shot(page, "10-redoc")
    outside = [u for u in requested if not u.startswith((base, "data:", f"blob:{base}"))]
    assert outside == [], outside  # nothing fetched from anywhere but the gateway
