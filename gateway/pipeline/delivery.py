"""Delivery: the decisions every channel (X12, invoice, FHIR, RTF/OTF, API, file drop) takes
the same way, in ONE place.

* :func:`authorise_sender` — may this partner send a claim or row billed by / naming this
  provider (NPI, TIN)? The one sender check.
* :func:`resolve_plan` — which plan receives a member's document. The one plan resolution.
* :func:`envelope_numbers` / :func:`take_numbers` — outgoing control numbers (ISA13, GS06),
  from the ONE counter store: the store's ``control_counters`` table, shared by the server, its
  workers and the command line (``--store``, default the same ``./var`` store as ``serve``).
* :class:`PlanDocuments` — the per-recipient 837P documents made from a submission's
  accepted encounters (one envelope per receiving partner, in its envelope profile).

A step asks these; it does not decide them itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime

from gateway.findings import Finding
from gateway.pipeline.partners import Partner, Partners
from gateway.rules import default_catalogue
from gateway.x12.writer import ControlNumbers, envelope_settings

X12_MEDIA = "application/edi-x12"


# -- sender authorisation ------------------------------------------------------------------------
def authorise_sender(partner: Partner, npi: str | None, tin: str | None = None, *,
                     npi_required: bool = True) -> bool:
    """May ``partner`` send a claim (or row) whose billing / ECM provider is NPI ``npi`` and TIN
    ``tin``? Plans and the state may (they forward their providers' data). A provider may
    only send as itself: the NPI must be one of its NPIs AND, when a TIN is given, the TIN
    one of its TINs — another provider's NPI with one's own TIN is refused, and so is one's
    own NPI with another's TIN. ``npi_required=False`` (a row that leaves the NPI empty, for
    the gateway to fill with the sender's): a missing NPI passes, a given one is checked."""
    if partner.role != "provider":
        return True
    npi, tin = (npi or "").strip(), (tin or "").strip()
    if npi:
        if npi not in partner.npis:
            return False
    elif npi_required:
        return False
    return not tin or tin in partner.tins


def sender_finding(partner: Partner, npi: str | None, tin: str | None, location: str,
                   segment=None, rule: str = "GATEWAY-AUTH-001", *,
                   npi_required: bool = True) -> Finding | None:
    """The finding for a claim or row ``partner`` may not send (None when it may)."""
    if authorise_sender(partner, npi, tin, npi_required=npi_required):
        return None
    return default_catalogue().finding(rule, location, segment, npi=npi or "none",
                                       tin=tin or "none", partner=partner.id)


# -- plan resolution -----------------------------------------------------------------------------
def resolve_plan(partners: Partners, sender: Partner, kind: str, cin: str, payer_id: str,
                 member_plans: dict[str, list[str]]) -> Partner | None:
    """Who receives a member's document of ``kind`` from ``sender`` (the ONE lookup for every
    member-level routing: a provider's 837P, invoice claims, FHIR referrals, care plans and
    Tasks, RTF/OTF rows): the plan whose MIF assigns the member (when several do, the one
    ``payer_id`` names — a payer id or plan code), else the plan ``payer_id`` names, else the
    only plan — as the route of ``kind`` resolves it (a plan's 837P goes to the state).
    ``member_plans`` is :func:`gateway.pipeline.registries.plans_of_members` for the members at
    hand. None: no route leads to another partner."""
    plans = member_plans.get(cin, [])
    named = plan_named(partners, payer_id)
    plan_id = named if named in plans else (plans[0] if plans else named)
    target = partners.route(kind, sender, payer_id, plan_id=plan_id)
    return None if target is None or target.id == sender.id else target


def plan_named(partners: Partners, code: str | None) -> str:
    """The plan partner a payer id or plan code names ("" when none)."""
    code = str(code or "")
    if not code:
        return ""
    for p in partners.partners.values():
        if p.role == "plan" and (code in p.payer_ids or (p.plan_code and code == p.plan_code)):
            return p.id
    return ""


def claim_targets(partners: Partners, registry, partner: Partner, encounters: list,
                  kind: str = "837p") -> tuple[dict[str, list], list]:
    """Accepted encounters grouped by receiving partner (in file order), and those no route
    leads anywhere (:func:`resolve_plan` per encounter; a plan's encounters go to the
    state)."""
    from gateway.pipeline.registries import plans_of_members

    member_plans = plans_of_members(registry, {e.member.cin for e in encounters}) \
        if partner.role == "provider" else {}
    groups: dict[str, list] = {}
    nowhere = []
    for encounter in encounters:
        target = resolve_plan(partners, partner, kind, encounter.member.cin,
                              encounter.payer.id, member_plans)
        if target is None:
            nowhere.append(encounter)
        else:
            groups.setdefault(target.id, []).append(encounter)
    return groups, nowhere


# -- envelopes -----------------------------------------------------------------------------------
def envelope_for(sender: Partner, target: Partner):
    """The envelope of an 837P ``sender``'s encounters get on their way to ``target``: the
    target's profile (profiles/envelopes/), and — to the state — the SENDING plan's own ids
    from its partner entry: ISA06/GS02/1000A = plan code + county code, ISA15 ``T`` while the
    plan is in ``test_mode`` (onboarding), else ``P``. Returns ``(settings, problem)``;
    ``problem`` names what the plan's entry lacks (nothing is sent to the state then)."""
    settings = envelope_settings(target.envelope)
    if target.role != "state" or sender.role != "plan":
        return settings, None
    if not sender.plan_code or not sender.county_code:
        return settings, (f"partner {sender.id} has no "
                          + " and no ".join(n for n, v in (("plan_code", sender.plan_code),
                                                          ("county_code", sender.county_code))
                                            if not v)
                          + " in its identifiers: the state's sender id is plan code + "
                            "county code")
    sender_id = f"{sender.plan_code}{sender.county_code}"
    return settings.model_copy(update={
        "sender_id": sender_id, "application_sender": sender_id,
        "usage": "T" if sender.test_mode else "P",
        "submitter": settings.submitter.model_copy(update={"id": sender_id,
                                                           "name": sender.name.upper()})}), None


# -- control numbers (the one counter store) -----------------------------------------------------
def take_numbers(store, wanted: dict[str, int]) -> dict[str, list[int]]:
    """Numbers from the store's counters (``isa13:<profile>``, ``gs06:<profile>``), in one
    transaction; every process on the store (API, workers, the command line) draws from the
    same sequences."""
    return store.take_numbers(wanted)


def envelope_numbers(store, profile: str) -> ControlNumbers:
    """The next ISA13 and GS06 of envelope profile ``profile``, in one transaction."""
    names = (f"isa13:{profile}", f"gs06:{profile}")
    taken = take_numbers(store, {name: 1 for name in names})
    return ControlNumbers(*(taken[name][0] for name in names))


def ack_numbers(store, interchanges: int = 3, groups: int = 8) -> tuple[list[int], list[int]]:
    """ISA13s and GS06s for acknowledgments (TA1/999/277CA), from the one counter store."""
    taken = take_numbers(store, {"isa13:acks": interchanges, "gs06:acks": groups})
    return taken["isa13:acks"], taken["gs06:acks"]


def ack_recipient(partners: Partners, partner: Partner) -> str:
    """Who receives the acknowledgments of ``partner``'s submission (route ``ack``)."""
    found = partners.route("ack", partner)
    return found.id if found is not None else partner.id


# -- per-recipient documents ---------------------------------------------------------------------
class PlanDocuments:
    """837P writers per receiving partner, opened as the first encounter for each arrives, so
    a streamed file (an invoice) is split per member's plan without holding its claims."""

    def __init__(self, store, partners: Partners, registry, partner: Partner, kind: str,
                 now: datetime) -> None:
        from gateway.x12.write837 import Encounter837Writer

        self._writer_class = Encounter837Writer
        self.store = store
        self.partners, self.registry, self.partner = partners, registry, partner
        self.kind, self.now = kind, now.replace(tzinfo=None)
        self.writers: dict[str, tuple] = {}
        self.unrouted: list[str] = []
        self._plans: dict[tuple[str, str], Partner | None] = {}

    def target(self, encounter) -> Partner | None:
        key = (encounter.member.cin, encounter.payer.id)
        if key not in self._plans:
            groups, _ = claim_targets(self.partners, self.registry, self.partner, [encounter],
                                      kind=self.kind)
            self._plans[key] = self.partners.partners[next(iter(groups))] if groups else None
        return self._plans[key]

    def write(self, encounter) -> None:
        target = self.target(encounter)
        if target is None:
            self.unrouted.append(encounter.claim.id)
            return
        if target.id not in self.writers:
            settings = envelope_settings(target.envelope)
            out = io.StringIO()
            self.writers[target.id] = (out, self._writer_class(
                out, settings, envelope_numbers(self.store, settings.name), self.now))
        self.writers[target.id][1].write(encounter)

    def unrouted_findings(self) -> list[Finding]:
        catalogue = default_catalogue()
        found = [catalogue.finding("GATEWAY-ROUTE-001", "file", None, claim=claim)
                 for claim in self.unrouted]
        return [f for f in found if f]

    def close(self, submission_id: str) -> list[tuple[str, str, bytes]]:
        """``(recipient, document name, 837P)`` per receiving partner."""
        out = []
        for recipient, (text, writer) in self.writers.items():
            writer.close()
            name = f"{submission_id}.837p.x12" if len(self.writers) == 1 \
                else f"{submission_id}.{recipient}.837p.x12"
            out.append((recipient, name, text.getvalue().encode()))
        return out


def recipients_of(documents: Iterable[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for doc in documents:
        if doc["recipient"]:
            out[doc["recipient"]] = out.get(doc["recipient"], 0) + 1
    return out


# -- replays: never deliver the same document twice ------------------------------------------------
ONWARD_ROLES = ("routed", "state-response")  # documents for partners other than the sender
ENVELOPE_SEGMENTS = ("ISA", "IEA", "GS", "GE", "ST", "SE", "BHT")


def onward(role: str) -> bool:
    return role.startswith(ONWARD_ROLES)


def fingerprint(content: bytes, media_type: str, submission_ids: Iterable[str]) -> bytes:
    """What a routed document says, without what differs on every run: an X12's envelope
    (ISA/GS/ST/BHT control numbers, dates and times); the submission ids in names and
    records."""
    if media_type == X12_MEDIA:
        text = content.decode("latin-1").replace("\r", "").replace("\n", "")
        element = text[3:4] if text.startswith("ISA") else "*"
        terminator = text[105:106] if text.startswith("ISA") and len(text) > 105 else "~"
        kept = [seg for seg in text.split(terminator)
                if seg and seg.split(element, 1)[0] not in ENVELOPE_SEGMENTS]
        return terminator.join(kept).encode("latin-1")
    for sid in submission_ids:
        content = content.replace(sid.encode(), b"")
    return content


def replay_chain(store, submission: dict) -> list[dict]:
    """The submissions a replay repeats, oldest first (its parent, the parent's parent…)."""
    chain, seen = [], set()
    parent = submission.get("parent_id")
    while parent and parent not in seen:
        seen.add(parent)
        found = store.submission(parent)
        if found is None:
            break
        chain.insert(0, found)
        parent = found.get("parent_id")
    return chain


def settle_redelivery(store, submission: dict, result) -> None:
    """A replay's onward documents against what its chain already delivered: one identical
    to a document already routed to the same partner (same role) is not delivered again
    (``GATEWAY-REPLAY-001``); a changed one is delivered as a replacement linked to the one it
    replaces (``parent_document``, ``GATEWAY-REPLAY-002``, the summary's ``replaces``)."""
    chain = replay_chain(store, submission)
    if not chain:
        return
    ids = [s["id"] for s in chain] + [result.submission_id]
    earlier: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for found in chain:
        for doc in store.documents(found["id"]):
            if onward(doc["role"]) and doc["recipient"] != found["partner"]:
                content = store.document(doc["id"])["content"]
                earlier.setdefault((doc["recipient"], doc["role"]), []).append(
                    (doc["id"], fingerprint(content, doc["media_type"], ids)))
    catalogue = default_catalogue()
    kept, dropped, replaces = [], [], {}
    for row in result.documents:
        prior = earlier.get((row["recipient"], row["role"])) if onward(row["role"]) else None
        if not prior:
            kept.append(row)
            continue
        mine = fingerprint(row["content"], row["media_type"], ids)
        same = next((doc_id for doc_id, fp in prior if fp == mine), None)
        if same is not None:
            dropped.append(row["id"])
            result.add_findings([catalogue.finding("GATEWAY-REPLAY-001", "file", None,
                                                   document=same, recipient=row["recipient"])])
            continue
        row["parent_document"] = prior[-1][0]
        replaces[row["id"]] = prior[-1][0]
        result.add_findings([catalogue.finding("GATEWAY-REPLAY-002", "file", None,
                                               document=prior[-1][0],
                                               recipient=row["recipient"])])
        kept.append(row)
    if dropped:
        from gateway.pipeline.registries import forget_routed_documents, server_registry

        forget_routed_documents(server_registry(store), dropped)
    result.documents = kept
    if result.summary is not None and (dropped or replaces):
        result.summary = {**result.summary, "not_redelivered": len(dropped),
                          **({"replaces": replaces} if replaces else {})}
    if result.routed and not any(onward(d["role"]) for d in kept):
        from gateway.pipeline.status import Status

        result.status, result.converted = Status.VALIDATED, False
