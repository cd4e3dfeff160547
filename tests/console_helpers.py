"""Signing in to the console from a test client: the session cookie and CSRF token as headers
and form fields, so one client can act as several partners."""

from __future__ import annotations

import re


def sign_in(client, token: str) -> dict:
    """Sign in with ``token``; returns ``{"headers": {...Cookie}, "csrf": ...}``."""
    form = client.get("/console/signin")
    pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    answer = client.post("/console/signin", data={"token": token, "csrf": pre},
                         headers={"Cookie": f"ecm_console_signin={pre}"},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies.get("ecm_console")
    client.cookies.clear()
    headers = {"Cookie": f"ecm_console={cookie}"}
    page = client.get("/console/", headers=headers)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return {"headers": headers, "csrf": csrf, "cookie": cookie}


def token_of(auth: dict, partner: str) -> str:
    return auth[partner]["Authorization"].split(" ", 1)[1]
