"""The state's encounter response XML (namespace ``http://www.dhcs.ca.gov/EDS/DHCSResponse``),
read into per-file, per-transaction, per-encounter and per-line statuses with their Response
items. Element names come from ``mappings/state-response/dhcs-response.yaml`` (assumed names are
marked there, to be corrected as data).

Hostile input is refused before or while parsing, never expanded: a DTD or any entity
declaration (the "billion laughs" bomb, external entities) is refused outright, entities are
never resolved, the network is never used, and the size is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from lxml import etree

from gateway.paths import MAPPINGS

LAYOUT = MAPPINGS / "state-response" / "dhcs-response.yaml"
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class StateResponseError(ValueError):
    """The response cannot be read; the message says why (never quoting the file's data)."""


@dataclass(frozen=True)
class ResponseItem:
    severity: str
    id: str
    is_snip: bool
    description: str

    @property
    def reason(self) -> str:
        text = f"{self.id}: {self.description}" if self.id else self.description
        return f"{text} [SNIP]" if self.is_snip else text


@dataclass
class LineResult:
    line_number: int | None
    status: str  # accepted / denied / partial / the state's word when unmapped
    responses: list[ResponseItem] = field(default_factory=list)


@dataclass
class EncounterResult:
    claim_id: str
    status: str
    dhcs_encounter_id: str
    responses: list[ResponseItem] = field(default_factory=list)
    lines: list[LineResult] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        return self.status == "denied"


@dataclass
class TransactionResult:
    isa13: str
    gs06: str
    st02: str
    status: str
    encounters: list[EncounterResult] = field(default_factory=list)


@dataclass
class StateResponse:
    status: str
    file_name: str
    transactions: list[TransactionResult] = field(default_factory=list)

    @property
    def encounters(self) -> list[tuple[TransactionResult, EncounterResult]]:
        return [(t, e) for t in self.transactions for e in t.encounters]


@lru_cache(maxsize=4)
def load_layout(path: Path = LAYOUT) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True,
                           remove_pis=True)


def parse_state_response(data: bytes, layout: dict | None = None) -> StateResponse:
    """Parse a response; raises :class:`StateResponseError` with a clear reason."""
    layout = layout or load_layout()
    limit = int(layout.get("max_bytes", 50 * 1024 * 1024))
    if len(data) > limit:
        raise StateResponseError(f"the file is larger than {limit} bytes")
    if not data.strip():
        raise StateResponseError("the file is empty")
    if _DECLARATION.search(data):
        raise StateResponseError("a DTD or entity declaration is not allowed in a state "
                                 "response (entity expansion is refused)")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        line, column = (exc.position or (None, None))[:2]
        where = f" at line {line}, column {column}" if line else ""
        raise StateResponseError(f"not well-formed XML{where}") from None
    except ValueError:  # e.g. an encoding declaration lxml refuses on bytes
        raise StateResponseError("not well-formed XML") from None
    namespace = layout["namespace"]
    qname = etree.QName(root)
    if qname.namespace != namespace:
        found = qname.namespace or "no namespace"
        raise StateResponseError(f"the root element is in {found}, not the state response "
                                 f"namespace {namespace}")
    if qname.localname != layout["root"]:
        raise StateResponseError(f"the root element is {qname.localname}, expected "
                                 f"{layout['root']}")
    return _read(root, layout)


class _Reader:
    def __init__(self, layout: dict) -> None:
        self.ns = layout["namespace"]
        self.layout = layout
        self.statuses = {str(k).lower(): str(v) for k, v in layout["statuses"].items()}
        self.denying = {str(s).lower() for s in layout.get("denying_severities", [])}

    def children(self, node, name: str) -> list:
        return node.findall(f"{{{self.ns}}}{name}")

    def text(self, node, name: str | None) -> str:
        if not name:
            return ""
        found = node.find("/".join(f"{{{self.ns}}}{part}" for part in name.split("/")))
        return (found.text or "").strip() if found is not None else ""

    def status(self, word: str) -> str:
        return self.statuses.get(word.strip().lower(), word.strip().lower())

    def responses(self, node) -> list[ResponseItem]:
        spec = self.layout["response"]
        items = []
        for item in self.children(node, spec["element"]):
            snip = self.text(item, spec["is_snip"]).lower()
            items.append(ResponseItem(severity=self.text(item, spec["severity"]),
                                      id=self.text(item, spec["id"]),
                                      is_snip=snip in ("true", "1", "y", "yes"),
                                      description=self.text(item, spec["description"])))
        return items

    def denies(self, items: list[ResponseItem]) -> bool:
        return any(i.severity.lower() in self.denying for i in items)


def _read(root, layout: dict) -> StateResponse:
    r = _Reader(layout)
    tspec, espec, lspec = layout["transaction"], layout["encounter"], layout["line"]
    out = StateResponse(status=r.status(r.text(root, layout["file"]["validation_status"])),
                        file_name=r.text(root, layout["file"].get("file_name")))
    for tnode in r.children(root, tspec["element"]):
        transaction = TransactionResult(
            isa13=r.text(tnode, tspec["isa13"]), gs06=r.text(tnode, tspec["gs06"]),
            st02=r.text(tnode, tspec["st02"]),
            status=r.status(r.text(tnode, tspec["validation_status"])))
        for enode in r.children(tnode, espec["element"]):
            responses = r.responses(enode)
            word = r.text(enode, espec["status"])
            status = r.status(word) if word else ("denied" if r.denies(responses)
                                                  else "accepted")
            encounter = EncounterResult(claim_id=r.text(enode, espec["claim_id"]), status=status,
                                        dhcs_encounter_id=r.text(enode,
                                                                 espec["dhcs_encounter_id"]),
                                        responses=responses)
            for lnode in r.children(enode, lspec["element"]):
                items = r.responses(lnode)
                number = r.text(lnode, lspec["line_number"])
                word = r.text(lnode, lspec["status"])
                line_status = r.status(word) if word else (
                    "denied" if r.denies(items) else encounter.status)
                encounter.lines.append(LineResult(
                    line_number=int(number) if number.isdigit() else None,
                    status=line_status, responses=items))
            transaction.encounters.append(encounter)
        out.transactions.append(transaction)
    return out


def summary_rows(encounter: EncounterResult) -> list[dict]:
    """The readable summary's rows for one encounter (columns of the layout's
    ``summary_columns``): one per Response item, or one for the encounter when it has none."""
    base = {"claim_id": encounter.claim_id, "dhcs_encounter_id": encounter.dhcs_encounter_id}
    rows = [{**base, "status": encounter.status, "line": "", "severity": item.severity,
             "reason": item.reason} for item in encounter.responses]
    for line in encounter.lines:
        shown = "" if line.line_number is None else str(line.line_number)
        rows.extend({**base, "status": line.status, "line": shown, "severity": item.severity,
                     "reason": item.reason} for item in line.responses)
    if not rows:
        rows.append({**base, "status": encounter.status, "line": "", "severity": "",
                     "reason": ""})
    return rows
