"""The server's ECM registries: member assignments (from the plans' MIFs), provider directories
(the plans' rosters) and encounter history (the plans' encounters sent to the state), kept in
the SAME database as the gateway store (their tables are distinct), so every process that knows
the store URL — the API, a file-drop watcher, a queue worker — sees the same registries.

Whose data is which, by the ``source`` column of each registry row:

* ``plan:<plan id>:mif:<reporting period>`` — the assignments (and other programs) of one MIF
  reporting period of one plan; a new MIF of the same plan and period replaces them;
* ``plan:<plan id>:roster`` — a plan's provider directory (a new roster replaces it);
* ``plan:<plan id>:cs-auth`` — a plan's Community Supports authorizations;
* ``plan:<plan id>:claims:<file name>`` — a plan's claims / encounter extract (encounter history
  of every kind; the same file name sent again replaces its lines);
* ``plan:<plan id>:submission:<id>`` — the accepted lines of a plan's 837P sent to the state
  (:func:`plan_history_source`), keyed by the first submission of a replay chain, so a re-run or
  a replay replaces instead of duplicating;
* ``plan:<plan id>:data-sharing:<sender>:<id>`` — members' data-sharing authorizations a
  provider sent the plan (RTF rows, FHIR Consent), keyed by the first submission of the chain;
* ``plan:<plan id>:demo-history:<file>`` — history loaded by ``serve --demo``.

Encounter history is kept per plan: a provider's history extract gives its assigned members'
lines of the assigning plan only (a member can move between plans).

Two gateway tables live here too: ``routed_claims`` (which claim went to whom in which routed
837P, with its ISA13/GS06/ST02, so a state response finds its way back to the plan and to the
provider that first sent the claim) and ``state_encounter_status`` (the state's verdict per
encounter and line).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    delete,
    insert,
    or_,
    select,
)
from sqlalchemy.engine import Engine, make_url

from gateway.registry.store import Registry, assignments, history, providers

PLAN_PREFIX = "plan:"
gateway_metadata = MetaData()

routed_claims = Table(
    "routed_claims", gateway_metadata,
    Column("id", Integer, primary_key=True),
    Column("submission_id", String(32), nullable=False),  # the submission that was routed
    Column("sender", String(120), nullable=False),  # partner that sent it
    Column("recipient", String(120), nullable=False),  # partner it was routed to
    Column("document_id", String(32), nullable=False),  # the routed 837P
    Column("isa13", String(9)), Column("gs06", String(9)), Column("st02", String(9)),
    Column("claim_id", String(38), nullable=False),
    Column("billing_npi", String(10)),
    Column("history_source", String(200)),  # where its lines sit in the history (plan → state)
    Index("ix_routed_claims_submission", "submission_id"),
    Index("ix_routed_claims_control", "isa13", "claim_id"),
    Index("ix_routed_claims_claim", "claim_id", "billing_npi"),
)
# who holds each sender's control number: ONE row per (partner, kind, sender, number), so two
# different files claiming the same ISA13 at the same instant (two API processes, the API and
# the file drop, two Celery workers) cannot both pass -- the database's unique key decides
# (gateway.pipeline.controls.claim)
inbound_claims = Table(
    "inbound_control_claims", gateway_metadata,
    Column("id", Integer, primary_key=True),
    Column("partner", String(120), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("sender_id", String(35), nullable=False),
    Column("number", String(9), nullable=False),
    Column("root", String(32), nullable=False),  # the holder's replay chain
    Column("submission_id", String(32), nullable=False),  # the holder
    Column("received_at", String(32), nullable=False),  # ISO-8601 UTC
    UniqueConstraint("partner", "kind", "sender_id", "number",
                     name="uq_inbound_control_claims"),
)
state_status = Table(
    "state_encounter_status", gateway_metadata,
    Column("id", Integer, primary_key=True),
    Column("response_submission", String(32), nullable=False),  # the state response
    Column("routed_submission", String(32)),  # the plan's 837P it answers
    Column("claim_id", String(38), nullable=False),
    Column("line_number", Integer),  # None: the encounter as a whole
    Column("status", String(20), nullable=False),
    Column("dhcs_encounter_id", String(40)),
    Column("severity", String(20)), Column("code", String(40)), Column("description", Text),
    Index("ix_state_status_response", "response_submission"),
    Index("ix_state_status_claim", "routed_submission", "claim_id"),
)

_cache: dict[str, Registry] = {}
_cache_lock = threading.Lock()


def server_registry(store) -> Registry:
    """The registries in the store's database, one :class:`Registry` per store URL and process
    (a worker builds it from the URL alone). An in-memory SQLite store shares its engine (its
    database exists only on that connection)."""
    url = store.url
    parsed = make_url(url)
    memory = parsed.get_backend_name() == "sqlite" and (
        parsed.database in (None, "", ":memory:") or "mode=memory" in url)
    key = f"{url}#{id(store.engine)}" if memory else url
    with _cache_lock:
        registry = _cache.get(key)
        if registry is None:
            engine = store.engine if memory else _engine(url)
            _create_tables(engine)
            registry = Registry(engine=engine)  # its create_all finds the tables made
            _cache[key] = registry
        return registry


def forget_registry(store) -> None:
    """Dispose of the store's registries (their engine's pooled connections) once the store
    is closed; a later :func:`server_registry` of its URL builds them again."""
    with _cache_lock:
        for key in [k for k in _cache if k == store.url or k.startswith(f"{store.url}#")]:
            engine = _cache.pop(key).engine
            if engine is not store.engine:  # (an in-memory store's own engine is the store's)
                engine.dispose()


def _create_tables(engine: Engine) -> None:
    """Create the registry tables once, even when several processes (workers) start together:
    on PostgreSQL under an advisory lock; elsewhere a lost race is retried (then the tables
    exist and are skipped)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from gateway.registry.store import metadata as registry_metadata

    for attempt in range(5):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": _SCHEMA_LOCK})
                registry_metadata.create_all(conn)
                gateway_metadata.create_all(conn)
                _carry_legacy_controls(conn)
            return
        except DBAPIError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


# Stores made before control numbers were claimed atomically kept every use of a number in
# ``inbound_controls`` (several rows per number). On first start the latest use of each number
# becomes its holder in ``inbound_control_claims`` -- so a number received before the upgrade is
# still recognised when reused within the window -- and the old table is dropped (same
# transaction as the schema: all or nothing, and done once).
_CARRY_LEGACY_CONTROLS = """
INSERT INTO inbound_control_claims
    (partner, kind, sender_id, number, root, submission_id, received_at)
SELECT o.partner, o.kind, o.sender_id, o.number, o.root, o.submission_id, o.received_at
FROM inbound_controls o
WHERE NOT EXISTS (
    SELECT 1 FROM inbound_controls n
    WHERE n.partner = o.partner AND n.kind = o.kind AND n.sender_id = o.sender_id
      AND n.number = o.number
      AND (n.received_at > o.received_at OR (n.received_at = o.received_at AND n.id > o.id)))
  AND NOT EXISTS (
    SELECT 1 FROM inbound_control_claims c
    WHERE c.partner = o.partner AND c.kind = o.kind AND c.sender_id = o.sender_id
      AND c.number = o.number)
"""


def _carry_legacy_controls(conn) -> None:
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("inbound_controls"):
        return
    conn.execute(text(_CARRY_LEGACY_CONTROLS))
    conn.execute(text("DROP TABLE inbound_controls"))


_SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"ecm-gateway:registry-schema").digest()[:8], "big",
                              signed=True)


def _engine(url: str) -> Engine:
    from gateway.pipeline.store import close_cursors_on_return

    engine = _new_engine(url)
    close_cursors_on_return(engine)
    return engine


def _new_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        # the store writes to the same file: wait for its write lock instead of failing
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _durability(dbapi_connection, _record) -> None:
            # as the store's own connections (gateway/pipeline/store.py): in WAL mode a
            # commit is durable at the next checkpoint, not fsynced one by one. SQLite's
            # default (FULL) fsynced every registry commit -- 3 ms each here, two per routed
            # FHIR create, every other writer of the file waiting meanwhile
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def server_rules(registry: Registry, catalogue=None, submitter=None, partners=None):
    """The ECM rule engine when any registry is loaded (the code-set rules, and the rules of
    each loaded registry; the others are skipped with an ``ECM-REG-001`` note), else None —
    as the command line does with ``--members/--providers/--history``. Its findings go back to
    submitters: for a provider (``submitter``, a Partner; None: anyone), a finding about a
    member not assigned to one of its NPIs/TINs is told in the rule's ``to_submitter`` form
    (minimum necessary; the plan's full reason is kept). A plan or the state gets full
    reasons. ``partners``: the plans' presumptive-authorization settings
    (``profiles/plans/<plan>.yaml``) apply to the claims whose payer id names that plan."""
    from gateway.ecm.plans import presumptive_by_payer
    from gateway.ecm.rules import EncounterRules

    presumptive = (presumptive_by_payer(partners) if partners is not None else None) or None
    if submitter is not None and submitter.role != "provider":
        rules = EncounterRules(registry, catalogue=catalogue, audience="plan",
                               presumptive=presumptive)
    else:
        rules = EncounterRules(registry, catalogue=catalogue, audience="submitter",
                               submitter=(submitter.npis, submitter.tins) if submitter
                               else ((), ()), presumptive=presumptive)
    # which registries are loaded is looked at once (the rules know: rules.loaded)
    return rules if any(rules.loaded.values()) else None


# -- sources -------------------------------------------------------------------------------------
def mif_source(plan_id: str, period: object) -> str:
    shown = period.strftime("%Y-%m") if isinstance(period, date) else str(period or "none")
    return f"{PLAN_PREFIX}{plan_id}:mif:{shown}"


def roster_source(plan_id: str) -> str:
    return f"{PLAN_PREFIX}{plan_id}:roster"


def plan_of_source(source: str | None) -> str | None:
    if not source or not source.startswith(PLAN_PREFIX):
        return None
    return source[len(PLAN_PREFIX):].split(":", 1)[0]


def history_source(store, submission_id: str) -> str:
    """``submission:<first submission of the replay chain>``; a part of a large file split
    across workers (channel ``split``) adds its part name, so parts do not replace each
    other's lines: ``submission:<root>:part-00002.x12``."""
    found = store.submission(submission_id) or {}
    if found.get("channel") == "split" and found.get("parent_id"):
        return f"{history_source(store, found['parent_id'])}:{found.get('filename') or ''}"
    root = submission_id
    seen = set()
    while True:
        parent = found.get("parent_id") if found else None
        if not parent or parent in seen:
            return f"submission:{root}"
        seen.add(root)
        root = parent
        found = store.submission(root)


def plan_history_source(store, submission_id: str) -> str:
    """Where a plan's 837P to the state keeps its lines in the encounter history:
    ``plan:<the submitting plan>:`` + :func:`history_source` (history is kept per plan)."""
    found = store.submission(submission_id) or {}
    return f"{PLAN_PREFIX}{found.get('partner') or ''}:{history_source(store, submission_id)}"


def clear_history(registry: Registry, source: str) -> int:
    """Remove what an earlier run put into the history under ``source`` — including, for a
    whole file, the lines its parts put there when it was once processed split, and lines an
    earlier version kept under the source without its ``plan:<id>:`` prefix."""
    c = history.c
    sources = [source]
    if source.startswith(PLAN_PREFIX) and ":submission:" in source:
        sources.append(source.split(":", 2)[2])  # ``submission:<id>`` (before per-plan)
    with registry.engine.begin() as conn:
        return sum(conn.execute(delete(history).where(
            (c.source == one) | c.source.like(f"{one}:part-%"))).rowcount for one in sources)


# -- loading -------------------------------------------------------------------------------------
def load_plan_members(registry: Registry, plan_id: str, rows: list[dict]) -> dict[str, int]:
    """A plan's MIF rows (typed, canonical names), grouped by reporting period; each period
    replaces the plan's earlier rows of that period. Returns assignments per source."""
    by_period: dict[str, list[dict]] = {}
    for row in rows:
        by_period.setdefault(mif_source(plan_id, row.get("reporting_period")), []).append(row)
    return {source: registry.load_members(group, source=source)
            for source, group in sorted(by_period.items())}


def load_plan_providers(registry: Registry, plan_id: str, rows: list[dict]) -> int:
    return registry.load_providers(rows, source=roster_source(plan_id))


def replace_history(registry: Registry, source: str, rows: Iterable[dict]) -> int:
    return registry.load_history(rows, source=source)


def presumptive_source(store, sender_id: str, submission_id: str) -> str:
    """``provider:<sender>:submission:<first submission of the replay chain>``: where the
    presumptive periods a provider's submission was judged under are kept (a re-run or replay
    replaces them)."""
    return f"provider:{sender_id}:{history_source(store, submission_id)}"


def record_presumptive(registry: Registry, source: str, rules) -> int:
    """The presumptive periods the rule engine ``rules`` judged a provider's lines under
    (ECM-MEM-004/005), replacing what an earlier run of the submission recorded: the next
    submission continues the period (instead of opening a new one) and a MIF re-checks them
    (ECM-MEM-006). Call with ``rules`` None before the run to clear them."""
    rows = rules.presumptive_lines() if rules is not None else []
    return registry.replace_presumptive(rows, source)


def data_sharing_source(store, plan_id: str, sender_id: str, submission_id: str) -> str:
    """``plan:<plan>:data-sharing:<sender>:<first submission of the replay chain>``: a re-run
    or replay of what a provider sent replaces its authorizations instead of doubling them."""
    root = history_source(store, submission_id).split(":")[1]
    return f"{PLAN_PREFIX}{plan_id}:data-sharing:{sender_id}:{root}"


def record_data_sharing(store, registry: Registry, plan_id: str, sender_id: str,
                        submission_id: str, rows: Iterable[dict]) -> int:
    """The data-sharing authorizations among typed RTF rows (the RTF's data-sharing columns, a
    FHIR Consent's row) a provider sent, as the plan's (ECM Policy Guide 002:1598-1599)."""
    return registry.load_data_sharing(
        rows, source=data_sharing_source(store, plan_id, sender_id, submission_id))


def record_consents(store, registry: Registry, plan_id: str, sender_id: str,
                    submission_id: str, rows: list[dict[str, str]]) -> int:
    """:func:`record_data_sharing` for FHIR Consents, given as the rows of the data-sharing
    RTF layout they were routed as (``mappings/fhir/consent-to-rtf.yaml``)."""
    from gateway.fhir.mapping.rtf import typed_row
    from gateway.tabular import load_layout

    layout = load_layout("rtf", "data-sharing")
    return record_data_sharing(store, registry, plan_id, sender_id, submission_id,
                               [typed_row(row, layout) for row in rows])


def plan_data_sharing(registry: Registry, plan_id: str | None, cins: Iterable[str] | None = None
                      ) -> list:
    """The data-sharing authorizations reported to ``plan_id`` (every plan's when None),
    newest first per member (:meth:`Registry.data_sharing`)."""
    prefix = f"{PLAN_PREFIX}{plan_id}:data-sharing:" if plan_id else PLAN_PREFIX
    return registry.data_sharing(cins, source_prefix=prefix)


def plans_of_members(registry: Registry, cins: Iterable[str],
                     provider=None) -> dict[str, list[str]]:
    """The plans whose MIF assigns each member (newest reporting period first); with
    ``provider`` (a Partner), only those assigning the member to it (an assignment, current or
    past, naming one of its NPIs or TINs)."""
    out: dict[str, list[str]] = {}
    wanted = sorted(set(cins))
    c = assignments.c
    query = select(c.cin, c.source).where(c.source.like(f"{PLAN_PREFIX}%"))
    if provider is not None:
        theirs = [c.provider_npi.in_(list(provider.npis))] if provider.npis else []
        if provider.tins:
            theirs.append(c.provider_tin.in_(list(provider.tins)))
        if not theirs:
            return out
        query = query.where(or_(*theirs))
    with registry.engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = conn.execute(query.where(c.cin.in_(chunk)).order_by(c.source.desc()))
            for cin, source in rows:
                plan = plan_of_source(source)
                if plan and plan not in out.setdefault(cin, []):
                    out[cin].append(plan)
    return out


def member_assignment(registry: Registry, cin: str, plan_id: str | None = None) -> dict | None:
    """The member's newest MIF assignment (of ``plan_id``'s MIFs when given): name, birth
    date, benefit period, assigned provider."""
    c = assignments.c
    query = select(assignments).where(c.cin == cin)
    query = query.where(c.source.like(f"{PLAN_PREFIX}{plan_id}:%") if plan_id
                        else c.source.like(f"{PLAN_PREFIX}%"))
    with registry.engine.connect() as conn:
        row = conn.execute(query.order_by(c.source.desc(), c.id.desc()).limit(1)
                           ).mappings().first()
    return dict(row) if row else None


def member_plan_rows(registry: Registry, cin: str) -> list[dict]:
    """Every plan MIF assignment of one member, newest first (reporting period, then row): in
    one query what :func:`plans_of_members` (the plans, in this order) and
    :func:`member_assignment` (the first row, of a plan's MIFs: the first whose
    :func:`plan_of_source` is that plan) answer for it -- the FHIR routing asks both of every
    member."""
    global _MEMBER_PLAN_ROWS
    if _MEMBER_PLAN_ROWS is None:  # built once: building it cost more than running it
        c = assignments.c
        _MEMBER_PLAN_ROWS = select(assignments).where(c.cin == bindparam("cin")).where(
            c.source.like(f"{PLAN_PREFIX}%")).order_by(c.source.desc(), c.id.desc())
    with registry.engine.connect() as conn:
        rows = conn.execute(_MEMBER_PLAN_ROWS, {"cin": cin}).mappings().all()
    return [dict(row) for row in rows]


_MEMBER_PLAN_ROWS = None


# -- routed claims -------------------------------------------------------------------------------
def forget_routed(registry: Registry, submission_id: str) -> None:
    """Drop the routing records of an earlier run of the submission (a re-run writes its own)."""
    with registry.engine.begin() as conn:
        conn.execute(delete(routed_claims).where(routed_claims.c.submission_id == submission_id))


def forget_routed_documents(registry: Registry, document_ids: list[str]) -> None:
    """Drop the routing records of documents that are not delivered (a replay's documents
    identical to ones already delivered)."""
    with registry.engine.begin() as conn:
        conn.execute(delete(routed_claims).where(routed_claims.c.document_id.in_(document_ids)))


def routed_rows(*, submission_id: str, sender: str, recipient: str, document_id: str,
                x12: bytes, history_source: str | None = None) -> list[dict]:
    """The routing records of a routed 837P's claims (:func:`record_routed` writes them)."""
    return [{"submission_id": submission_id, "sender": sender, "recipient": recipient,
             "document_id": document_id, "history_source": history_source, **claim}
            for claim in claims_in(x12)]


def record_routed(registry: Registry, *, submission_id: str, sender: str, recipient: str,
                  document_id: str, x12: bytes, history_source: str | None = None) -> int:
    """Index the claims of a routed 837P by ISA13/GS06/ST02 and claim id."""
    rows = routed_rows(submission_id=submission_id, sender=sender, recipient=recipient,
                       document_id=document_id, x12=x12, history_source=history_source)
    if rows:
        with registry.engine.begin() as conn:
            conn.execute(insert(routed_claims), rows)
    return len(rows)


def replace_routed(registry: Registry, submission_id: str, rows: list[dict]) -> None:
    """:func:`forget_routed` then the records ``rows`` (:func:`routed_rows`), in one
    transaction: a run's routing records replace those of any earlier run of it."""
    with registry.engine.begin() as conn:
        conn.execute(delete(routed_claims).where(routed_claims.c.submission_id == submission_id))
        if rows:
            conn.execute(insert(routed_claims), rows)


def claims_in(x12: bytes) -> list[dict]:
    """ISA13, GS06, ST02, claim id and billing NPI of every claim of an interchange we wrote."""
    from gateway.x12.reader import X12Reader

    found = []
    isa13 = gs06 = st02 = npi = ""
    with X12Reader(x12) as reader:
        for seg in reader:
            f = seg.fields
            tag = f[0]
            if tag == "ISA" and len(f) > 13:
                isa13 = f[13]
            elif tag == "GS" and len(f) > 6:
                gs06 = f[6]
            elif tag == "ST" and len(f) > 2:
                st02 = f[2]
            elif tag == "NM1" and len(f) > 9 and f[1] == "85":
                npi = f[9]
            elif tag == "CLM" and len(f) > 1:
                found.append({"isa13": _control(isa13), "gs06": _control(gs06),
                              "st02": _control(st02), "claim_id": f[1],
                              "billing_npi": npi})
    return found


def find_routed(registry: Registry, *, isa13: str, claim_id: str, gs06: str = "",
                st02: str = "", recipients: Iterable[str] | None = None,
                sender: str | None = None) -> dict | None:
    """The routed claim a state response names: ISA13 + GS06 + ST02 + claim id (the caller
    links only when the response gives all four), among documents sent to ``recipients`` (the
    state) and, when given, by ``sender`` (the plan)."""
    c = routed_claims.c
    query = select(routed_claims).where(c.claim_id == claim_id, c.isa13 == _control(isa13))
    if recipients is not None:
        query = query.where(c.recipient.in_(list(recipients)))
    if sender:
        query = query.where(c.sender == sender)
    if gs06:
        query = query.where(c.gs06 == _control(gs06))
    if st02:
        query = query.where(c.st02 == _control(st02))
    with registry.engine.connect() as conn:
        row = conn.execute(query.order_by(c.id.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def find_routed_by_claim(registry: Registry, *, claim_id: str, recipients: Iterable[str],
                         sender: str | None = None) -> dict | None:
    """The claim, if exactly one routed 837P sent it to the state — used to link a state
    response's encounter ONLY for a plan whose partner entry asks for it
    (``state_link: claim-id``), each such link warned (``STATE-LINK-003``)."""
    c = routed_claims.c
    query = select(routed_claims).where(c.claim_id == claim_id,
                                        c.recipient.in_(list(recipients)))
    if sender:
        query = query.where(c.sender == sender)
    with registry.engine.connect() as conn:
        rows = conn.execute(query.order_by(c.id.desc()).limit(2)).mappings().all()
    return dict(rows[0]) if len(rows) == 1 else None


def plan_of_interchange(registry: Registry, isa13: str, recipients: Iterable[str]
                        ) -> str | None:
    """The plan whose 837P to the state carried ISA13 ``isa13`` (None: none, or several)."""
    c = routed_claims.c
    query = select(c.sender).where(c.isa13 == _control(isa13),
                                   c.recipient.in_(list(recipients))).distinct().limit(2)
    with registry.engine.connect() as conn:
        found = conn.execute(query).scalars().all()
    return found[0] if len(found) == 1 else None


def reindex_routed(store, partners, submission_id: str) -> int:
    """Index the routed 837P documents of ``submission_id`` afresh — for the original of a
    large file after its parts' results were merged into new documents (the parts' documents
    are never delivered, so the state answers the merged one's ISA13). Returns the claims
    indexed."""
    registry = server_registry(store)
    found = store.submission(submission_id)
    forget_routed(registry, submission_id)
    count = 0
    for document in store.documents(submission_id):
        if document["role"] != "routed-837p":
            continue
        recipient = partners.partners.get(document["recipient"])
        to_state = recipient is not None and recipient.role == "state"
        count += record_routed(
            registry, submission_id=submission_id, sender=found["partner"],
            recipient=document["recipient"], document_id=document["id"],
            x12=store.document(document["id"])["content"],
            history_source=plan_history_source(store, submission_id) if to_state else None)
    return count


def _control(value: str) -> str:
    """Control numbers compared by value: ``000000501`` (ISA13 as written) and ``501`` (as a
    response may give it) are the same."""
    value = (value or "").strip()
    return (value.lstrip("0") or "0") if value.isdigit() else value


def origin_of(registry: Registry, *, claim_id: str, billing_npi: str,
              plan_id: str) -> dict | None:
    """The provider submission that first sent this claim to the plan (lineage)."""
    c = routed_claims.c
    query = select(routed_claims).where(c.claim_id == claim_id, c.recipient == plan_id)
    if billing_npi:
        query = query.where(c.billing_npi == billing_npi)
    with registry.engine.connect() as conn:
        row = conn.execute(query.order_by(c.id.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


# -- state statuses and history updates ----------------------------------------------------------
def replace_state_statuses(registry: Registry, response_submission: str,
                           rows: list[dict]) -> None:
    with registry.engine.begin() as conn:
        conn.execute(delete(state_status).where(
            state_status.c.response_submission == response_submission))
        if rows:
            conn.execute(insert(state_status),
                         [{**r, "response_submission": response_submission} for r in rows])


def remove_denied_history(registry: Registry, source: str, claim_id: str,
                          line_number: int | None = None) -> int:
    """Take a denied encounter (``line_number`` None) or line out of the history."""
    c = history.c
    query = delete(history).where((c.source == source) | c.source.like(f"{source}:part-%"),
                                  c.claim_id == claim_id)
    if line_number is not None:
        query = query.where(c.line_number == line_number)
    with registry.engine.begin() as conn:
        return conn.execute(query).rowcount


# -- demo ----------------------------------------------------------------------------------------
def load_demo_registries(store, partners, *, mif: Path | None = None,
                         roster: Path | None = None,
                         history: list[Path] | None = None) -> dict[str, int]:
    """``serve --demo``: a MIF and roster as the demo plan's, and an encounter history — the
    fixtures' unless given (``serve --demo`` gives them moved to today, see gateway.demo).
    Idempotent (each source is replaced). Returns rows loaded per registry."""
    from gateway.paths import HOME
    from gateway.registry.history import _csv_rows
    from gateway.tabular import read_table

    plans = [p for p in partners.partners.values() if p.role == "plan"]
    if not plans:
        return {}
    plan = plans[0]
    registry = server_registry(store)
    fixtures = Path(HOME) / "fixtures"
    counts = {"members": 0, "providers": 0, "history": 0}
    mif = mif or fixtures / "mif" / "mif-clean.csv"
    roster = roster or fixtures / "roster" / "providers.csv"
    # mif-fhir-members: the members of the FHIR sample resources (fixtures/fhir/resources/),
    # another reporting period of the same plan, so the samples route in the demo
    for path in (mif, fixtures / "mif" / "mif-fhir-members.csv"):
        if path.is_file():  # an installed image may ship without the fixtures
            rows = [row for _, row in read_table(path, "mif").rows]
            counts["members"] += sum(load_plan_members(registry, plan.id, rows).values())
    if roster.is_file():
        rows = [row for _, row in read_table(roster, "roster").rows]
        counts["providers"] = load_plan_providers(registry, plan.id, rows)
    for path in history if history is not None else sorted((fixtures / "history").glob("*.csv")):
        counts["history"] += registry.load_history(
            _csv_rows(path), source=f"{PLAN_PREFIX}{plan.id}:demo-history:{path.name}")
    return counts


def registry_counts(registry: Registry) -> dict[str, int]:
    from sqlalchemy import func

    with registry.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table)).scalar()
                for name, table in (("members", assignments), ("providers", providers),
                                    ("history", history))}
