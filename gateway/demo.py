"""`make run` (``ecm-gateway serve --demo``): demo files dated relative to today, sent through the
running gateway as the demo partners would send them, so each role finds a clean success and an
instructive rejection in the console and its mailbox.

The shipped fixtures were made around fixed days (the 837P, invoices, MIF and history around
:data:`ANCHOR`, the FHIR resources around :data:`FHIR_ANCHOR`); run as they are, a later day
rejects them all for timely filing. Here every date in a copy of them moves forward by whole
weeks (:func:`shift_text`: the world moves in time, weekdays and ages kept), the demo plan's
registries are loaded from the moved MIF and history, and the files go in through the HTTP API
with each partner's token, in the order a real week would see them:

* plan ``demo-plan``: a member file with defects (rows rejected with the reason for each), then
  its corrected member file (accepted, rows forwarded to the assigned providers; a member file
  is the plan's whole membership, so the corrected one goes last);
* provider ``harbor``: a clean 837P (every claim accepted and routed to the plan), an 837P with
  one defect per claim (rejected claims with their 999 and 277CA), a clean invoice and one with
  errors, a FHIR CarePlan and a referral (ServiceRequest), and a CarePlan without its member
  (refused with an OperationOutcome);
* the plan forwards its accepted encounters to the state, and state ``dhcs`` answers them with a
  state response naming the plan's interchange (linked, routed to the plan and the provider),
  and sends a malformed response (rejected).

Nothing here decides anything: the files take the same path as any partner's.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from gateway.paths import HOME

FIXTURES = HOME / "fixtures"
ANCHOR = date(2025, 6, 30)  # the day the 837P, invoice, MIF and history fixtures were made
FHIR_ANCHOR = date(2026, 10, 5)  # the day of the FHIR fixtures' referral
_ISO = re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?!\d)")
_MONTH = re.compile(r"(?<=,)(\d{4})-(\d{2})(?=\s*(?:,|$))", re.MULTILINE)
_X12_DAY = re.compile(r"(?<=[*-])(20\d{2})(\d{2})(\d{2})(?=[*~\-\n])")


def weeks_since(anchor: date, today: date) -> int:
    """Days to move a file made on ``anchor``: whole weeks, so it ends within the last week."""
    days = (today - anchor).days
    return days - days % 7


def _moved(y: str, m: str, d: str, days: int) -> date | None:
    try:
        day = date(int(y), int(m), int(d))
    except ValueError:
        return None
    return day + timedelta(days=days) if 1900 <= day.year <= 2100 else None


def shift_text(text: str, days: int) -> str:
    """Every date in ``text`` moved by ``days``: ISO dates (``2025-06-03``, also inside
    date-times), reporting months (``,2025-06`` in a CSV), X12 dates (``*20250603*``, ``RD8``
    ranges) and the ISA's six-digit date."""
    def iso(match):
        moved = _moved(*match.groups(), days)
        return moved.isoformat() if moved else match.group(0)

    def month(match):
        moved = _moved(match.group(1), match.group(2), "15", days)
        return moved.strftime("%Y-%m") if moved else match.group(0)

    def x12(match):
        moved = _moved(*match.groups(), days)
        return moved.strftime("%Y%m%d") if moved else match.group(0)

    text = _ISO.sub(iso, text)
    text = _MONTH.sub(month, text)
    if text.lstrip().startswith("ISA"):
        text = _X12_DAY.sub(x12, text)
        sep = text.lstrip()[3]
        isa = text.lstrip()[:106].split(sep)
        if len(isa) > 9 and re.fullmatch(r"\d{6}", isa[9]):
            moved = _moved("20" + isa[9][:2], isa[9][2:4], isa[9][4:], days)
            if moved:
                text = text.replace(f"{sep}{isa[9]}{sep}", f"{sep}{moved:%y%m%d}{sep}", 1)
    return text


@dataclass(frozen=True)
class DemoFile:
    partner: str
    path: Path
    kind: str  # x12, file, fhir:<type>, state-response-for-plan
    story: str  # what it shows


def write_files(folder: Path, today: date) -> list[DemoFile]:
    """The demo files under ``folder`` (one folder per partner), dated relative to ``today``;
    the moved registries (MIF, history) in ``folder/registries``."""
    days, fhir_days = weeks_since(ANCHOR, today), weeks_since(FHIR_ANCHOR, today)
    stamp = (ANCHOR + timedelta(days=days)).strftime("%Y%m%d")
    files: list[DemoFile] = []

    def put(partner: str, name: str, source: Path, kind: str, story: str, shift: int,
            only: str | None = None) -> None:
        target = folder / partner / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8")
        if only is not None:  # the header and the rows naming ``only`` (a provider's own)
            lines = text.splitlines(keepends=True)
            text = "".join([lines[0], *(line for line in lines[1:] if only in line)])
        target.write_text(shift_text(text, shift), encoding="utf-8", newline="")
        files.append(DemoFile(partner, target, kind, story))

    registries = folder / "registries"
    registries.mkdir(parents=True, exist_ok=True)
    for source, name in ((FIXTURES / "mif" / "mif-clean.csv", "mif.csv"),
                         (FIXTURES / "roster" / "providers.csv", "providers.csv")):
        (registries / name).write_text(shift_text(source.read_text(encoding="utf-8"), days),
                                       encoding="utf-8", newline="")
    (registries / "history").mkdir(exist_ok=True)
    for source in sorted((FIXTURES / "history").glob("*.csv")):
        (registries / "history" / source.name).write_text(
            shift_text(source.read_text(encoding="utf-8"), days), encoding="utf-8", newline="")

    put("demo-plan", f"mif-errors-{stamp}.csv", FIXTURES / "mif" / "mif-defects.csv", "file",
        "plan member file with defects: each bad row rejected with its reason", days)
    put("demo-plan", f"mif-{stamp}.csv", FIXTURES / "mif" / "mif-clean.csv", "file",
        "plan member file: accepted, rows forwarded to each member's ECM provider", days)
    put("harbor", f"claims-{stamp}.x12", FIXTURES / "837p" / "ecm-mixed.x12", "x12",
        "provider 837P: good claims routed to the plan, each defect rejected (999, 277CA)", days)
    put("harbor", f"claims-errors-{stamp}.x12", FIXTURES / "837p" / "ecm-claim-defects.x12",
        "x12", "provider 837P billed under another provider's NPI, with coding defects: "
               "rejected; the 999 and 277CA name each error", days)
    put("harbor", f"invoice-{stamp}.csv", FIXTURES / "invoice" / "invoice-clean.csv", "file",
        "provider invoice: converted to an 837P and routed to the plan", days,
        only=",1234500001,941200000,")  # Harbor's own rows: a provider bills only as itself
    put("harbor", f"invoice-errors-{stamp}.csv", FIXTURES / "invoice" / "invoice-mixed.csv",
        "file", "provider invoice with errors: a row report says what to fix", days)
    put("harbor", "careplan.json", FIXTURES / "fhir" / "resources" / "careplan-ecm.json",
        "fhir:CarePlan", "FHIR CarePlan from the provider's EHR: created and routed", fhir_days)
    put("harbor", "referral.json", FIXTURES / "fhir" / "resources" / "referral-ecm.json",
        "fhir:ServiceRequest", "FHIR referral (ServiceRequest): created", fhir_days)
    broken = json.loads((folder / "harbor" / "careplan.json").read_text(encoding="utf-8"))
    broken.pop("subject", None)
    (folder / "harbor" / "careplan-no-member.json").write_text(json.dumps(broken, indent=2),
                                                               encoding="utf-8")
    files.append(DemoFile("harbor", folder / "harbor" / "careplan-no-member.json",
                          "fhir:CarePlan", "FHIR CarePlan without its member: refused with an "
                                           "OperationOutcome"))
    put("demo-plan", f"encounters-{stamp}.x12", FIXTURES / "837p" / "ecm-mixed.x12", "x12",
        "plan encounters to the state: accepted claims enveloped for DHCS", days)
    put("dhcs", f"response-{stamp}.xml", FIXTURES / "state" / "response-mixed.xml",
        "state-response-for-plan", "state response: linked to the plan's interchange, "
                                   "routed to the plan and the denied lines to the provider",
        days)
    put("dhcs", "response-broken.xml", FIXTURES / "state" / "malformed.xml", "file",
        "malformed state response: rejected with the parser's reason", days)
    return files


def load_registries(store, partners, folder: Path) -> dict[str, int]:
    from gateway.pipeline.registries import load_demo_registries

    registries = folder / "registries"
    return load_demo_registries(store, partners, mif=registries / "mif.csv",
                                roster=registries / "providers.csv",
                                history=sorted((registries / "history").glob("*.csv")))


def send(base: str, tokens: dict[str, str], files: list[DemoFile],
         timeout: float = 60.0) -> list[dict]:
    """Send every demo file through the API as its partner; one row per file: partner, file,
    HTTP status, submission status (or FHIR outcome), story."""
    rows = []
    for demo in files:
        token = tokens.get(demo.partner)
        if not token:
            continue
        payload = demo.path.read_bytes()
        headers = {"Authorization": f"Bearer {token}", "Prefer": "return=minimal"}
        if demo.kind == "x12":
            code, body = _post(f"{base}/x12", payload,
                               {**headers, "Content-Type": "application/edi-x12"}, timeout)
        elif demo.kind.startswith("fhir:"):
            code, body = _post(f"{base}/fhir/{demo.kind[5:]}", payload,
                               {**headers, "Content-Type": "application/fhir+json"}, timeout)
        elif demo.kind == "state-response-for-plan":
            payload = _answering(base, tokens, payload, timeout)
            code, body = _upload(base, headers, demo.path.name, payload, timeout)
        else:
            code, body = _upload(base, headers, demo.path.name, payload, timeout)
        status = body.get("status") if isinstance(body, dict) else None
        if demo.kind.startswith("fhir:"):
            status = "created" if code == 201 else "refused"
        rows.append({"partner": demo.partner, "file": demo.path.name, "http": code,
                     "status": status or "?", "story": demo.story,
                     "submission_id": body.get("submission_id") if isinstance(body, dict)
                     else None})
    return rows


def _answering(base: str, tokens: dict[str, str], response: bytes, timeout: float) -> bytes:
    """The state answers the interchange it received from the plan: its ISA13, GS06 and ST02
    go into the response (as DHCS's would), read from the state's mailbox."""
    headers = {"Authorization": f"Bearer {tokens['dhcs']}"}
    code, box = _get(f"{base}/mailbox", headers, timeout)
    routed = [d for d in (box or {}).get("documents", []) if d.get("role") == "routed-837p"]
    if code != 200 or not routed:
        return response
    code, content = _get(base + routed[0]["href"], headers, timeout, raw=True)
    text = content.decode("latin-1") if code == 200 else ""
    if not text.startswith("ISA"):
        return response
    sep = text[3]
    isa13 = text[:106].split(sep)[13]
    gs06 = next((seg.split(sep)[6] for seg in re.split(rf"\{text[105]}\s*", text)
                 if seg.startswith(f"GS{sep}") and len(seg.split(sep)) > 6), "1")
    st02 = re.search(rf"ST\{sep}837\{sep}(\d+)", text)
    out = response.decode("utf-8")
    out = re.sub(r"<ISA13>\d+</ISA13>", f"<ISA13>{isa13}</ISA13>", out)
    out = re.sub(r"<GS06>\d+</GS06>", f"<GS06>{gs06}</GS06>", out)
    if st02:
        out = re.sub(r"<ST02>\d+</ST02>", f"<ST02>{st02.group(1)}</ST02>", out)
    return out.encode("utf-8")


def _post(url: str, payload: bytes, headers: dict, timeout: float):
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    return _open(request, timeout)


def _get(url: str, headers: dict, timeout: float, raw: bool = False):
    return _open(urllib.request.Request(url, headers=headers), timeout, raw)


def _upload(base: str, headers: dict, name: str, payload: bytes, timeout: float):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    return _post(f"{base}/files", body, {**headers, "Content-Type":
                                        f"multipart/form-data; boundary={boundary}"}, timeout)


def _open(request, timeout: float, raw: bool = False):
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - ours
            data = answer.read()
            code = answer.status
    except urllib.error.HTTPError as exc:
        data, code = exc.read(), exc.code
    except OSError:
        return 0, {}
    if raw:
        return code, data
    try:
        return code, json.loads(data or b"{}")
    except ValueError:
        return code, {}


def wait_until_settled(store, seconds: float = 60.0) -> None:
    """Until the queue is empty (the demo's routing done), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        depth = store.queue_depth()
        if depth.get("queued", 0) == 0 and depth.get("running", 0) == 0:
            return
        time.sleep(0.2)


def banner(base: str, tokens: dict[str, str], rows: list[dict], drop: Path,
           folder: Path) -> str:
    """What `make run` prints last: what the demo sent and how it ended, the console, and
    ready-to-paste ``export`` lines."""
    names = {"demo-plan": "PLAN_TOKEN", "harbor": "HARBOR_TOKEN",
             "golden-table": "GOLDEN_TABLE_TOKEN", "dhcs": "DHCS_TOKEN", "ops": "OPS_TOKEN"}
    lines = ["", "=" * 78, f"ECM Gateway demo — {datetime.now():%Y-%m-%d}", "=" * 78]
    if rows:
        lines.append(f"Sent as the demo partners (files in {folder}):")
        for row in rows:
            lines.append(f"  {row['partner']:<10} {row['file']:<30} {row['status']:<10} "
                         f"{row['story']}")
        lines.append("")
    lines += [f"Console:  {base}/console/   (sign in with a token below; OPS_TOKEN sees every "
              "partner)", f"API docs: {base}/docs", "",
              "Tokens (valid until the next start) — paste into your shell:"]
    for partner, token in tokens.items():
        lines.append(f"  export {names.get(partner, partner.upper().replace('-', '_') + '_TOKEN')}"
                     f"={token}")
    # the 837P with defects the demo sent (dated today), and the fixture it was made from: the
    # same ISA13 with other bytes
    sent = next((folder / "harbor" / row["file"] for row in rows
                 if row["partner"] == "harbor" and row["file"].startswith("claims-errors-")),
                None)
    fixture = HOME / "fixtures" / "837p" / "ecm-claim-defects.x12"
    curl = "  curl -s -H \"Authorization: Bearer $HARBOR_TOKEN\" --data-binary"
    lines += [f"  export GATEWAY={base}", "", "Try:",
              "  # Harbor's rejected files",
              "  curl -s -H \"Authorization: Bearer $HARBOR_TOKEN\" "
              "\"$GATEWAY/submissions?status=rejected\""]
    if sent is not None:
        lines += ["  # Harbor's 837P with defects sent again: the same bytes get the earlier answer",
                  f"{curl} @{sent} $GATEWAY/x12"]
    lines += ["  # another file reusing its ISA13 (the undated fixture): a TA1 with TA105 025",
              f"{curl} @{fixture} $GATEWAY/x12",
              f"or drop a file into {drop}/harbor/inbox/ and read {drop}/harbor/outbox/",
              "=" * 78, ""]
    return "\n".join(lines)
