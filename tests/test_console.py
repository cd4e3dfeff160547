"""The console without a browser: sessions, CSRF, the rate limit, headers, escaping, the 999
view. (tests/test_console_browser.py drives it in Chromium.)"""

import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import FIXTURES, demo_gateway
from console_helpers import sign_in, token_of
from fastapi.testclient import TestClient

from gateway.api import console as console_module
from gateway.x12.ackview import view

XSS = "<img src=x onerror=alert(1)>.csv"
DEFECTS = (FIXTURES / "837p" / "ecm-claim-defects.x12").read_bytes()


@pytest.fixture
def gateway(tmp_path):
    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, auth, app


def test_pages_need_a_session_and_carry_the_security_headers(gateway):
    client, auth, _ = gateway
    for page in ("/console/", "/console/submissions", "/console/mailbox",
                 "/console/submissions/abc"):
        answer = client.get(page, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith(
            "/console/signin")
    session = sign_in(client, token_of(auth, "harbor"))
    for page in ("/console/", "/console/submissions", "/console/mailbox", "/console/signin"):
        answer = client.get(page, headers=session["headers"])
        assert answer.status_code == 200
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "<script>" not in answer.text and " style=" not in answer.text
        assert "http://" not in answer.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_session_cookie_is_httponly_strict_and_expires(gateway):
    client, auth, _ = gateway
    form = client.get("/console/signin")
    pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    answer = client.post("/console/signin", data={"token": token_of(auth, "harbor"),
                                                  "csrf": pre}, follow_redirects=False)
    cookie = [c for c in answer.headers.get_list("set-cookie")
              if c.startswith("ecm_console=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert f"Max-Age={console_module.SESSION_SECONDS}" in cookie


def test_sign_in_needs_the_forms_csrf_token_and_a_valid_token(gateway):
    client, auth, _ = gateway
    client.cookies.clear()
    no_csrf = client.post("/console/signin", data={"token": token_of(auth, "harbor")},
                          follow_redirects=False)
    assert no_csrf.status_code == 403
    form = client.get("/console/signin")
    pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    wrong = client.post("/console/signin", data={"token": "nope", "csrf": pre},
                        follow_redirects=False)
    assert wrong.status_code == 401 and "That token is not valid." in wrong.text
    assert "ecm_console=" not in " ".join(wrong.headers.get_list("set-cookie")).replace(
        "ecm_console_signin=", "")


def test_sign_in_attempts_are_rate_limited(gateway):
    client, _, _ = gateway
    statuses = []
    for _ in range(console_module.SIGNIN_ATTEMPTS + 2):
        form = client.get("/console/signin")
        pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        statuses.append(client.post("/console/signin", data={"token": "guess", "csrf": pre},
                                    follow_redirects=False).status_code)
    assert statuses == [401] * console_module.SIGNIN_ATTEMPTS + [429, 429]


def test_sign_out_ends_the_session_and_needs_csrf(gateway):
    client, auth, _ = gateway
    session = sign_in(client, token_of(auth, "harbor"))
    refused = client.post("/console/signout", data={"csrf": "forged"},
                          headers=session["headers"], follow_redirects=False)
    assert refused.status_code == 403
    done = client.post("/console/signout", data={"csrf": session["csrf"]},
                       headers=session["headers"], follow_redirects=False)
    assert done.status_code == 303
    after = client.get("/console/", headers=session["headers"], follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"] == "/console/signin"


def test_an_expired_session_or_a_rotated_token_signs_out(gateway):
    client, auth, app = gateway
    session = sign_in(client, token_of(auth, "harbor"))
    store = app.state.store
    from sqlalchemy import update

    from gateway.pipeline.store import console_sessions
    with store.engine.begin() as conn:
        conn.execute(update(console_sessions).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get("/console/", headers=session["headers"],
                      follow_redirects=False).status_code == 303
    session = sign_in(client, token_of(auth, "harbor"))
    partners = app.state.partners
    harbor = partners.partners["harbor"]
    from dataclasses import replace
    partners.partners["harbor"] = replace(harbor, token_sha256="0" * 64)
    try:
        assert client.get("/console/", headers=session["headers"],
                          follow_redirects=False).status_code == 303
    finally:
        partners.partners["harbor"] = harbor


def test_replay_needs_csrf_and_confirmation(gateway):
    client, auth, app = gateway
    sid = client.post("/x12", content=DEFECTS, headers=auth["harbor"]).json()["submission_id"]
    session = sign_in(client, token_of(auth, "harbor"))
    confirm = client.get(f"/console/submissions/{sid}/replay", headers=session["headers"])
    assert confirm.status_code == 200 and "Replay this submission?" in confirm.text
    forged = client.post(f"/console/submissions/{sid}/replay", data={"csrf": "x"},
                         headers=session["headers"], follow_redirects=False)
    assert forged.status_code == 403
    assert app.state.store.replays_of(sid) == []
    done = client.post(f"/console/submissions/{sid}/replay", data={"csrf": session["csrf"]},
                       headers=session["headers"], follow_redirects=False)
    new = app.state.store.replays_of(sid)
    assert done.status_code == 303 and done.headers["location"] == \
        f"/console/submissions/{new[0]['id']}"


def test_partner_supplied_text_is_escaped(gateway):
    client, auth, _ = gateway
    sent = client.post("/files", files={"file": (XSS, b"Invoice Number,x\n<b>INV</b>,1\n")},
                       headers=auth["harbor"])
    assert sent.status_code in (200, 202), sent.text
    sid = sent.json()["submission_id"]
    session = sign_in(client, token_of(auth, "harbor"))
    for page in ("/console/submissions", f"/console/submissions/{sid}"):
        html = client.get(page, headers=session["headers"]).text
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.csv" in html
    raw = client.get(f"/console/submissions/{sid}/raw", headers=session["headers"])
    assert raw.headers["content-disposition"] == 'attachment; filename="img_src_x_onerror_' \
        'alert_1_.csv"'


def test_sign_in_goes_back_only_inside_the_console(gateway):
    client, auth, _ = gateway
    for target, expected in (("/console/mailbox", "/console/mailbox"),
                             ("//evil.example/", "/console/"),
                             ("https://evil.example/", "/console/"),
                             ("/console//evil.example", "/console/")):
        form = client.get("/console/signin")
        pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        answer = client.post("/console/signin", data={
            "token": token_of(auth, "harbor"), "csrf": pre, "next": target},
            follow_redirects=False)
        assert answer.headers["location"] == expected


def test_999_view_names_each_error_with_segment_element_and_meaning():
    seen = view((FIXTURES / "acks" / "ecm-claim-defects.999.x12").read_bytes())
    assert (seen["kind"], seen["received"], seen["accepted"], seen["code"]) == \
        ("999", 1, 1, "E")
    errors = seen["sets"][0]["errors"]
    assert [(e["segment"], e["position"], e["loop"], e["meaning"]) for e in errors] == [
        ("SV1", "46", "2400", "Segment has data element errors"),
        ("CLM", "90", "2300", "Segment has data element errors")]
    assert [(el["position"], el["reference"], el["meaning"]) for el in errors[0]["elements"]
            ] == [("3", "355", "Invalid code value")]
    assert errors[0]["context"] == ["CLM01:ECM0300000002"]


def test_277ca_and_ta1_views():
    claims = view((FIXTURES / "acks" / "ecm-claim-defects.277ca.x12").read_bytes())
    assert claims["kind"] == "277CA" and claims["received"] == 12
    assert claims["accepted"] + claims["rejected"] == 12
    first = claims["claims"][0]
    assert (first["claim"], first["accepted"], first["statuses"][0]["category"]) == \
        ("ECM0300000001", True, "A2")
    ta1 = view((FIXTURES / "acks" / "ecm-envelope-defects.ta1.x12").read_bytes())
    assert (ta1["kind"], ta1["code"], ta1["meaning"]) == (
        "TA1", "R", "Interchange rejected because of errors")
    assert view(b"not an ack") == {"kind": "unreadable"}


def test_the_submission_page_shows_the_999_overview(gateway):
    client, auth, _ = gateway
    sid = client.post("/x12", content=DEFECTS, headers=auth["harbor"]).json()["submission_id"]
    session = sign_in(client, token_of(auth, "harbor"))
    html = client.get(f"/console/submissions/{sid}", headers=session["headers"]).text
    assert "transaction sets received 1, accepted" in html
    assert "Segment has data element errors" in html and "Findings (" in html
    assert "Download the 999" in html and "Download the raw input" in html


def test_a_replay_the_rules_refuse_says_why(gateway, monkeypatch):
    client, auth, app = gateway
    sid = client.post("/x12", content=DEFECTS, headers=auth["harbor"]).json()["submission_id"]
    session = sign_in(client, token_of(auth, "harbor"))
    from gateway.pipeline import process

    def refuse(*args, **kwargs):
        raise ValueError("a submission still running cannot be replayed")

    monkeypatch.setattr(process, "replay", refuse)
    answer = client.post(f"/console/submissions/{sid}/replay", data={"csrf": session["csrf"]},
                         headers=session["headers"], follow_redirects=False)
    assert answer.status_code == 409
    assert "a submission still running cannot be replayed" in answer.text
    assert app.state.store.replays_of(sid) == []
