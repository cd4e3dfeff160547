"""A readable view of an acknowledgment (999, 277CA, TA1), like a clearinghouse's overview:
how many transaction sets (claims) were received and accepted, and each error with its segment,
element and the meaning of its code (profiles/acks/codes.yaml). Pure format code: bytes in, a
plain dict out; an acknowledgment that does not parse gives ``{"kind": "unreadable"}``, never an
exception."""

from __future__ import annotations

from functools import lru_cache

import yaml

from gateway.paths import PROFILES
from gateway.x12.reader import iter_segments


@lru_cache(maxsize=1)
def codes() -> dict[str, dict[str, str]]:
    data = yaml.safe_load((PROFILES / "acks" / "codes.yaml").read_text(encoding="utf-8"))
    return {table: {str(k): str(v) for k, v in (values or {}).items()}
            for table, values in data.items()}


def _say(table: str, code: str) -> str:
    return codes().get(table, {}).get(code.strip(), "")


def view(content: bytes) -> dict:
    """``kind`` 999, 277CA, TA1 or unreadable, and what each holds."""
    try:
        segments = list(iter_segments(content))
    except Exception:  # noqa: BLE001 - a view, not a validator
        return {"kind": "unreadable"}
    ids = {s.id for s in segments}
    if "AK9" in ids or "IK5" in ids:
        return _view_999(segments)
    if "STC" in ids:
        return _view_277ca(segments)
    if "TA1" in ids:
        return _view_ta1(segments)
    return {"kind": "unreadable"}


def _view_999(segments) -> dict:
    out: dict = {"kind": "999", "groups": [], "sets": []}
    current = None
    last_segment = None
    for seg in segments:
        tag = seg.id
        if tag == "AK1":
            out["groups"].append({"functional_id": seg.get(1), "group_control": seg.get(2),
                                  "version": seg.get(3)})
        elif tag == "AK2":
            current = {"set_id": seg.get(1), "control": seg.get(2), "errors": [],
                       "code": "", "meaning": "", "set_errors": []}
            out["sets"].append(current)
        elif tag == "IK3" and current is not None:
            last_segment = {"segment": seg.get(1), "position": seg.get(2), "loop": seg.get(3),
                            "code": seg.get(4), "meaning": _say("ik304_segment_errors",
                                                                seg.get(4)),
                            "context": [], "elements": []}
            current["errors"].append(last_segment)
        elif tag == "CTX" and last_segment is not None:
            last_segment["context"].append(seg.get(1))
        elif tag == "IK4" and last_segment is not None:
            last_segment["elements"].append({
                "position": seg.get(1), "reference": seg.get(2), "code": seg.get(3),
                "meaning": _say("ik403_element_errors", seg.get(3)), "bad_value": seg.get(4)})
        elif tag == "IK5" and current is not None:
            current["code"] = seg.get(1)
            current["meaning"] = _say("ack_codes", seg.get(1))
            current["set_errors"] = [{"code": seg.get(i), "meaning": _say("ik502_set_errors",
                                                                          seg.get(i))}
                                     for i in range(2, 7) if seg.get(i)]
            last_segment = None
        elif tag == "AK9":
            out.update(code=seg.get(1), meaning=_say("ack_codes", seg.get(1)),
                       included=_int(seg.get(2)), received=_int(seg.get(3)),
                       accepted=_int(seg.get(4)))
    if "received" not in out:
        out.update(code="", meaning="", included=len(out["sets"]), received=len(out["sets"]),
                   accepted=sum(1 for s in out["sets"] if s["code"] in ("A", "E")))
    out["errors"] = sum(len(s["errors"]) + len(s["set_errors"]) for s in out["sets"])
    return out


def _view_277ca(segments) -> dict:
    claims: list[dict] = []
    totals = {"accepted": 0, "rejected": 0}
    level = ""
    claim = None
    for seg in segments:
        tag = seg.id
        if tag == "HL":
            level = seg.get(3)
            claim = None
            if level == "PT":
                claim = {"claim": "", "payer_claim": "", "statuses": []}
                claims.append(claim)
        elif tag == "TRN" and claim is not None and seg.get(1) == "2":
            claim["claim"] = seg.get(2)
        elif tag == "REF" and claim is not None and seg.get(1) == "1K":
            claim["payer_claim"] = seg.get(2)
        elif tag == "QTY" and level == "19":
            if seg.get(1) == "QA":
                totals["accepted"] += _int(seg.get(2))
            elif seg.get(1) == "QC":
                totals["rejected"] += _int(seg.get(2))
        elif tag == "STC" and claim is not None:
            for position in (1, 10, 11):
                composite = seg.get(position)
                if not composite:
                    continue
                parts = composite.split(":")
                claim["statuses"].append({
                    "category": parts[0], "status": parts[1] if len(parts) > 1 else "",
                    "entity": parts[2] if len(parts) > 2 else "",
                    "meaning": _say("claim_status_categories", parts[0])})
            claim["amount"] = seg.get(4)
            claim["note"] = seg.get(12)
    for claim in claims:
        claim["accepted"] = bool(claim["statuses"]) and claim["statuses"][0]["category"] in (
            "A1", "A2")
    return {"kind": "277CA", "claims": claims, "received": len(claims),
            "accepted": sum(1 for c in claims if c["accepted"]),
            "rejected": sum(1 for c in claims if not c["accepted"]), "totals": totals}


def _view_ta1(segments) -> dict:
    for seg in segments:
        if seg.id == "TA1":
            return {"kind": "TA1", "interchange_control": seg.get(1), "code": seg.get(4),
                    "meaning": _say("ta104_codes", seg.get(4)), "note_code": seg.get(5)}
    return {"kind": "unreadable"}


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0
