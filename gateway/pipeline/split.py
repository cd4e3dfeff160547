"""Large X12 files split by transaction set, the parts processed in parallel by the Celery
workers, the results merged back into the original submission.

When a worker takes an X12 submission of at least the setting ``split_bytes`` whose single
functional group holds more than ``split_transactions`` (a setting) transaction sets, it cuts the file into parts
of that many sets each: the original ISA and GS, the part's ST…SE segments unchanged, a
GE/IEA with the part's counts. Each part becomes a child submission (channel ``split``, linked
by ``parent_id``, never shown in a mailbox) queued like any other; the original waits
(``run_state = waiting``). The worker that finishes the last part merges:

* findings: copied to the original with their locations and segment positions mapped back
  (``ISA#1/GS#1/ST#k`` of a part is ``ISA#i/GS#g/ST#(first + k - 1)`` of the file);
* 999: one transaction set for the group, the parts' AK2…IK5 loops in order, AK9 recounted;
* 277CA: the parts' transaction sets in order, renumbered (ST02/SE02, BHT03, and the claim
  references ``REF*1K`` recomputed with the claims' positions in the whole file) — byte for
  byte what the file processed whole would get, but for control numbers and times;
* routed 837P: one interchange per recipient holding each part's transaction set (ST02/SE02
  renumbered), where the file processed whole gets one transaction set with all claims.

Limits: only a single interchange with a single functional group and a clean envelope is split
(anything else is processed whole, where its envelope findings belong); checks that look across
transaction sets of one file (duplicate service lines inside the file) see only their part.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from gateway.findings import Finding
from gateway.pipeline.partners import Partners
from gateway.pipeline.registries import (
    forget_routed,
    plan_history_source,
    record_routed,
    server_registry,
)
from gateway.pipeline.delivery import X12_MEDIA
from gateway.pipeline.status import Status
from gateway.pipeline.steps.result import StepResult
from gateway.pipeline.store import SPLIT_CHANNEL, Store
from gateway.settings import current as settings

log = logging.getLogger("gateway.split")
_PART_LOCATION = re.compile(r"^ISA#1/GS#1(?:/ST#(\d+))?")


@dataclass
class Interchange:
    """A parsed single-group interchange: its segments and where each transaction set is."""

    segments: list[str]
    terminator: str
    separator: str
    transactions: list[tuple[int, int]]  # (index of ST, index of SE) in ``segments``

    def text(self, segments: list[str]) -> bytes:
        return "".join(f"{s}{self.terminator}\n" for s in segments).encode("latin-1")


def parse_single_group(payload: bytes) -> Interchange | None:
    """The interchange when it is one ISA…IEA with one GS…GE whose counts and control numbers
    agree; None otherwise (then the file is not split)."""
    text = payload.decode("latin-1")
    start = text.find("ISA")
    if start < 0 or len(text) < start + 106:
        return None
    text = text[start:]
    separator, terminator = text[3], text[105]
    segments = [s.strip("\r\n") for s in text.split(terminator)]
    segments = [s for s in segments if s.strip()]
    heads = [s.split(separator, 1)[0] for s in segments]
    if heads.count("ISA") != 1 or heads.count("GS") != 1 or heads[:2] != ["ISA", "GS"] or \
            heads[-2:] != ["GE", "IEA"]:
        return None
    transactions, open_st = [], None
    for n, head in enumerate(heads[2:-2], start=2):
        if head == "ST":
            if open_st is not None:
                return None
            open_st = n
        elif head == "SE":
            if open_st is None:
                return None
            st, se = segments[open_st].split(separator), segments[n].split(separator)
            if len(st) < 3 or len(se) < 3 or st[2] != se[2] or se[1] != str(n - open_st + 1):
                return None
            transactions.append((open_st, n))
            open_st = None
        elif open_st is None:
            return None
    isa, gs = segments[0].split(separator), segments[1].split(separator)
    ge, iea = segments[-2].split(separator), segments[-1].split(separator)
    if open_st is not None or len(isa) < 14 or len(gs) < 7 or len(ge) < 3 or len(iea) < 3 or \
            ge[1] != str(len(transactions)) or ge[2] != gs[6] or iea[1] != "1" or \
            iea[2] != isa[13]:
        return None
    return Interchange(segments, terminator, separator, transactions)


@dataclass
class Part:
    number: int
    first_transaction: int  # 1-based, in the file
    first_ordinal: int  # segment position (1-based) of the part's first ST in the file
    payload: bytes


def plan_parts(payload: bytes, per_part: int | None = None) -> list[Part] | None:
    """The parts of a splittable file (None: process it whole)."""
    per_part = per_part or settings().split_transactions
    found = parse_single_group(payload)
    if found is None or len(found.transactions) <= per_part:
        return None
    sep, segments = found.separator, found.segments
    gs06 = segments[1].split(sep)[6]
    isa13 = segments[0].split(sep)[13]
    parts = []
    for n, first in enumerate(range(0, len(found.transactions), per_part), start=1):
        chunk = found.transactions[first:first + per_part]
        body = [seg for st, se in chunk for seg in segments[st:se + 1]]
        part = [segments[0], segments[1], *body, f"GE{sep}{len(chunk)}{sep}{gs06}",
                f"IEA{sep}1{sep}{isa13}"]
        parts.append(Part(n, first + 1, chunk[0][0] + 1, found.text(part)))
    return parts


def split_submission(store: Store, submission_id: str, worker: str,
                     per_part: int | None = None) -> list[str] | None:
    """Cut a large claimed X12 submission into parts (child submissions, queued) and leave it
    waiting for them; returns the part ids, or None when it is to be processed whole. Safe to
    run again after a crash: parts made before are reused, not made twice."""
    found = store.submission(submission_id)
    if found["kind"] != "x12" or found["channel"] == SPLIT_CHANNEL or \
            found["size"] < settings().split_bytes:
        return None
    parts = plan_parts(store.raw_payload(submission_id), per_part)
    if parts is None:
        return None
    made = {p["filename"]: p["id"] for p in store.parts_of(submission_id)}
    ids = []
    for part in parts:
        name = f"part-{part.number:05d}.x12"
        if name not in made:
            made[name] = store.receive(partner=found["partner"], channel=SPLIT_CHANNEL,
                                       kind="x12", filename=name, payload=part.payload,
                                       parent_id=submission_id).submission_id
        ids.append(made[name])
    store.set_summary(submission_id, {"parts": [
        {"id": sid, "first_transaction": p.first_transaction, "first_ordinal": p.first_ordinal}
        for sid, p in zip(ids, parts)]})
    store.await_parts(submission_id, worker)
    log.info("split into %d parts", len(ids), extra={"submission_id": submission_id})
    return ids


# -- the merge -------------------------------------------------------------------------------------
def merge_parts(store: Store, partners: Partners, submission_id: str) -> StepResult:
    """Merge the finished parts' results into the (claimed) original submission."""
    result = StepResult(submission_id)
    found = store.submission(submission_id)
    plan = found["summary"].get("parts", [])
    parts = [store.submission(p["id"]) for p in plan]
    failed = [n for n, p in enumerate(parts, start=1) if p["status"] == Status.DEAD_LETTER]
    if failed:
        result.status, result.valid = Status.DEAD_LETTER, False
        result.error = f"part {failed[0]} of {len(parts)} dead-lettered; replay it"
        return result
    findings = []
    documents: dict[str, list[tuple[dict, bytes, int]]] = {}
    claims_before = 0
    for place, part in zip(plan, parts):
        findings += [_map_finding(f, place) for f in store.findings(part["id"], view="both")]
        for doc in store.documents(part["id"]):
            content = store.document(doc["id"])["content"]
            documents.setdefault(doc["role"], []).append((doc, content, claims_before))
        claims_before += int(part["summary"].get("claims", 0))
    result.add_findings(findings)
    summary = _merge_summaries([p["summary"] for p in parts])
    result.summary = {**summary, "parts": plan}
    result.valid = bool(summary.get("valid"))
    partner = found["partner"]
    for role, kind in (("ack-ta1", "ta1"), ("ack-999", "999"), ("ack-277ca", "277ca")):
        texts = [c.decode("latin-1") for _, c, _ in documents.get(role, [])]
        if not texts:
            continue
        if kind == "277ca":
            merged = merge_277ca(texts, [before for _, _, before in documents[role]])
        else:
            merged = texts[0] if kind == "ta1" else merge_999(texts)
        result.ack999 = merged if kind == "999" else result.ack999
        result.add_document(role=role, name=f"{submission_id}.{kind}.x12",
                            content=merged.encode("latin-1"), media_type=X12_MEDIA,
                            recipient=partner)
    routed: dict[str, list[str]] = {}
    for doc, content, _ in documents.get("routed-837p", []):
        routed.setdefault(doc["recipient"], []).append(content.decode("latin-1"))
    if routed:
        # the state answers the merged documents' control numbers: index them afresh
        registry = server_registry(store)
        forget_routed(registry, submission_id)
        for recipient, texts in routed.items():
            content = merge_transactions(texts).encode("latin-1")
            document = result.route(role="routed-837p", name=f"{submission_id}.837p.x12",
                                    content=content, media_type=X12_MEDIA,
                                    recipient=recipient, converted=True)
            target = partners.partners.get(recipient)
            to_state = target is not None and target.role == "state"
            record_routed(registry, submission_id=submission_id, sender=partner,
                          recipient=recipient, document_id=document, x12=content,
                          history_source=plan_history_source(store, submission_id)
                          if to_state else None)
    elif all(p["status"] == Status.REJECTED for p in parts):
        result.status, result.read = Status.REJECTED, True
    return result


def _map_finding(data: dict, place: dict) -> Finding:
    first = place["first_transaction"]

    def relocate(match: re.Match) -> str:
        number = match.group(1)
        return "ISA#1/GS#1" + (f"/ST#{first + int(number) - 1}" if number else "")

    data = dict(data)
    data["location"] = _PART_LOCATION.sub(relocate, data["location"])
    if data.get("segment") and data["segment"] >= 3:  # past the part's own ISA and GS
        data["segment"] += place["first_ordinal"] - 3
    return Finding(**data)


def _merge_summaries(summaries: list[dict]) -> dict:
    merged: dict = {}
    for summary in summaries:
        for key, value in summary.items():
            if isinstance(value, bool):
                merged[key] = merged.get(key, True) and value
            elif isinstance(value, (int, float)):
                merged[key] = merged.get(key, 0) + value
            elif isinstance(value, dict):
                merged[key] = _merge_summaries([merged.get(key, {}), value])
            else:
                merged.setdefault(key, value)
    return merged


def _segments(text: str) -> tuple[list[str], str, str]:
    separator, terminator = text[3], text[105]
    segments = [s.strip("\r\n") for s in text.split(terminator)]
    return [s for s in segments if s.strip()], separator, terminator


def _join(segments: list[str], terminator: str) -> str:
    return "".join(f"{s}{terminator}\n" for s in segments)


def _envelope(first: list[str], sep: str, transactions: list[list[str]]) -> list[str]:
    """The first part's ISA and GS around ``transactions``, with a GE/IEA that count them."""
    isa13 = first[0].split(sep)[13]
    gs06 = first[1].split(sep)[6]
    body = [s for ts in transactions for s in ts]
    return [first[0], first[1], *body, f"GE{sep}{len(transactions)}{sep}{gs06}",
            f"IEA{sep}1{sep}{isa13}"]


def _transactions(segments: list[str], sep: str) -> list[list[str]]:
    found, current = [], None
    for segment in segments:
        head = segment.split(sep, 1)[0]
        if head == "ST":
            current = [segment]
        elif current is not None:
            current.append(segment)
            if head == "SE":
                found.append(current)
                current = None
    return found


def _renumber(ts: list[str], sep: str, control: str) -> list[str]:
    st = ts[0].split(sep)
    st[2] = control
    se = ts[-1].split(sep)
    se[1], se[2] = str(len(ts)), control
    return [sep.join(st), *ts[1:-1], sep.join(se)]


def merge_999(texts: list[str]) -> str:
    """One 999 transaction set for the group: every part's AK2 loops, AK9 recounted."""
    first, sep, term = _segments(texts[0])
    loops, codes = [], []
    for text in texts:
        for ts in _transactions(_segments(text)[0], sep):
            body = [s for s in ts if s.split(sep, 1)[0] not in ("ST", "AK1", "AK9", "SE")]
            loops += body
            codes += [s.split(sep)[1] for s in body if s.split(sep, 1)[0] == "IK5"]
    head = _transactions(first, sep)[0]
    received = len(codes)
    accepted = sum(code != "R" for code in codes)
    if accepted == received and all(code == "A" for code in codes):
        status = "A"
    elif accepted == received:
        status = "E"
    else:
        status = "P" if accepted else "R"
    ak9 = sep.join(["AK9", status, str(received), str(received), str(accepted)])
    ts = _renumber([head[0], head[1], *loops, ak9, head[-1]], sep, head[0].split(sep)[2])
    return _join(_envelope(first, sep, [ts]), term)


def merge_277ca(texts: list[str], claims_before: list[int]) -> str:
    """The parts' 277CA transaction sets in order, numbered as in the whole file: ST02/SE02
    and BHT03 by position, and each claim reference (REF*1K: transaction set number + the
    claim's position in the file, ``claims_before`` the part's first claim) recomputed."""
    first, sep, term = _segments(texts[0])
    merged = []
    for text, before in zip(texts, claims_before):
        for ts in _transactions(_segments(text)[0], sep):
            control = f"{len(merged) + 1:04d}"
            out = []
            for segment in ts:
                fields = segment.split(sep)
                if fields[0] == "BHT" and len(fields) > 3:
                    fields[3] = f"{control}{fields[3][4:]}"
                elif fields[0] == "REF" and len(fields) > 2 and fields[1] == "1K":
                    fields[2] = f"{control}{int(fields[2][4:]) + before:06d}"
                out.append(sep.join(fields))
            merged.append(_renumber(out, sep, control))
    return _join(_envelope(first, sep, merged), term)


def merge_transactions(texts: list[str]) -> str:
    """Every part's transaction sets in one interchange (ST02/SE02 renumbered)."""
    first, sep, term = _segments(texts[0])
    sets = [ts for text in texts for ts in _transactions(_segments(text)[0], sep)]
    return _join(_envelope(first, sep, [_renumber(ts, sep, f"{n:04d}")
                                        for n, ts in enumerate(sets, start=1)]), term)
