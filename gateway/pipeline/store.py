"""The gateway's durable store: submissions, their raw payloads, status history, findings,
documents (acks, converted files, reports, routed copies) and the audit log.

SQLAlchemy Core, so the same code runs on SQLite and PostgreSQL. The embedded default is the
SQLite file ``<var_dir>/gateway.sqlite`` in WAL mode (``synchronous=NORMAL``, a busy timeout,
foreign keys on); several :class:`Store` objects (threads, processes) may share it. Pass a
``postgresql+psycopg://...`` URL for a server.

Guarantees:

* every inbound payload is written raw, with its SHA-256, in the same transaction as its
  submission row and first status, before :meth:`Store.receive` returns (so before it is
  acknowledged);
* every write runs in one transaction (``engine.begin()``). On SQLite a write transaction
  starts with ``BEGIN IMMEDIATE`` (it takes the write lock up front and waits for it up to the
  busy timeout), on PostgreSQL :meth:`Store.receive` takes a per-partner advisory lock, so the
  duplicate check and the insert are atomic across threads and processes;
* datetimes are timezone-aware UTC going in and coming out (naive ones are taken as UTC);
* the audit log is append-only by API: there is no method that updates or deletes it;
* the store is also the work queue (:meth:`Store.claim`, :meth:`Store.claim_next`): one worker
  at a time runs a submission, under a lease; a rerun after a crash starts from a clean slate,
  and mailboxes show only documents of finished runs, so every output is delivered once;
* a run's outputs (statuses, findings, documents, summary, attempts) are held by a :class:`Run`
  and written in ONE transaction with the end of the run (:meth:`Store.finish`), only if the
  worker still holds the lease;
* the server's control numbers (ISA13, GS06) are counters in the same database
  (:meth:`Store.next_numbers`), so every process and machine on the store draws from one
  sequence;
* on SQLite the writers of one process queue on a lock per file before ``BEGIN IMMEDIATE``
  (SQLite's busy handler sleeps between tries, which made writes wait far longer than the
  transactions ahead of them lasted); other processes meet at SQLite's own lock.

Payloads and documents are kept in the database (``LargeBinary``): simple, and transactional
with the rows that describe them. Very large payloads could move to object storage later
(keep the hash and a key here, the bytes there).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    and_,
    or_,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from gateway.findings import Finding
from gateway.paths import var_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: threads alone queue
    fcntl = None
from gateway.pipeline.status import STATUSES, Status  # the one status enum

BUSY_TIMEOUT_MS = 30_000
MAX_CONTROL = 999_999_999  # ISA13 is 9 digits; numbers wrap within 1..MAX_CONTROL
DEFAULT_WINDOW = timedelta(days=30)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = _utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

submissions = Table(
    "submissions", metadata,
    Column("id", String(32), primary_key=True),
    Column("partner", String(120), nullable=False),
    Column("channel", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("filename", Text),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("idempotency_key", String(255)),
    Column("x12_key", String(255)),
    Column("parent_id", String(32), ForeignKey("submissions.id")),
    Column("status", String(20), nullable=False),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("summary", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # the work queue (see "Queue" below): queued -> running (leased by one worker) -> done;
    # a large file split into parts is ``waiting`` for them between its split and its merge
    Column("run_state", String(12), nullable=False, default="queued"),
    Column("lease_owner", String(200)),
    Column("lease_until", UTCDateTime),
    Column("enqueued_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("run_ms", BigInteger),
    Column("latency_ms", BigInteger),
    # retention (gateway.pipeline.retention): when the raw payload / the findings were purged;
    # the row itself (id, hash, size, dates, status, summary counts) is the audit trail
    Column("payload_purged_at", UTCDateTime),
    Column("findings_purged_at", UTCDateTime),
    Index("ix_submissions_partner_sha256", "partner", "sha256", "created_at"),
    Index("ix_submissions_partner_idempotency", "partner", "idempotency_key"),
    Index("ix_submissions_partner_x12", "partner", "x12_key", "created_at"),
    Index("ix_submissions_partner_created", "partner", "created_at"),
    Index("ix_submissions_status", "status", "created_at"),
    Index("ix_submissions_parent", "parent_id"),
    Index("ix_submissions_run_state", "run_state", "created_at"),
    # the console's listing (keyset paging newest first) and its file-name search
    Index("ix_submissions_created", "created_at", "id"),
    Index("ix_submissions_kind", "kind", "created_at", "id"),
    Index("ix_submissions_partner_status", "partner", "status", "created_at", "id"),
    Index("ix_submissions_filename", "filename"),
)
# what a submission can be found by besides its id and file name (see gateway.pipeline.search):
# ``field`` isa13, gs06 or claim, ``value`` as sent
search_keys = Table(
    "submission_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("submission_id", String(32), ForeignKey("submissions.id"), nullable=False),
    Column("field", String(20), nullable=False),
    Column("value", String(80), nullable=False),
    Index("ix_submission_keys_value", "value", "submission_id"),
    Index("ix_submission_keys_submission", "submission_id"),
)
# console sign-ins: the SHA-256 of the session cookie, never the cookie itself
console_sessions = Table(
    "console_sessions", metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("partner", String(120), nullable=False),
    Column("token_sha256", String(64), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_console_sessions_expires", "expires_at"),
)
payloads = Table(
    "submission_payloads", metadata,
    Column("submission_id", String(32), ForeignKey("submissions.id"), primary_key=True),
    Column("content", LargeBinary, nullable=False),
)
status_history = Table(
    "submission_status_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("submission_id", String(32), ForeignKey("submissions.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("error", Text),
    Index("ix_status_history_submission", "submission_id", "id"),
)
findings_table = Table(
    "submission_findings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("submission_id", String(32), ForeignKey("submissions.id"), nullable=False),
    Column("rule", String(80), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("location", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("segment", Integer),
    # minimum necessary: the plan's full reason when the submitter was told less (see
    # gateway.rules RuleCatalogue.finding); never shown to the submitter
    Column("plan_rule", String(160)),
    Column("plan_message", Text),
    Index("ix_findings_submission", "submission_id", "id"),
)
documents_table = Table(
    "documents", metadata,
    Column("id", String(32), primary_key=True),
    Column("submission_id", String(32), ForeignKey("submissions.id"), nullable=False),
    Column("role", String(40), nullable=False),
    Column("name", Text, nullable=False),
    Column("media_type", String(120), nullable=False),
    Column("recipient", String(120)),
    Column("parent_document", String(32), ForeignKey("documents.id")),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    # retention: the content is emptied, its SHA-256 kept here, and when
    Column("sha256", String(64)),
    Column("purged_at", UTCDateTime),
    Index("ix_documents_submission", "submission_id", "created_at"),
    Index("ix_documents_recipient", "recipient", "created_at"),
    Index("ix_documents_parent", "parent_document"),
)
# control numbers (ISA13, GS06) the server writes into outbound X12 and acknowledgments: one row
# per counter, its ``value`` the last number handed out (1..MAX_CONTROL, then it wraps)
control_counters = Table(
    "control_counters", metadata,
    Column("name", String(120), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
audit_table = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("action", String(80), nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

# FHIR resource versions made by updates (PUT): version 1 of a resource is its create (the
# submission its id names); each update is a submission of its own and a row here, written in
# the same transaction as that submission (see Store.receive ``version``)
fhir_versions = Table(
    "fhir_versions", metadata,
    Column("resource_type", String(40), primary_key=True),
    Column("resource_id", String(80), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("partner", String(120), nullable=False),
    Column("submission_id", String(32), ForeignKey("submissions.id"), nullable=False),
    Column("status", String(40)),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Index("ix_fhir_versions_submission", "submission_id"),
    Index("ix_fhir_versions_partner", "partner", "resource_type"),
)
# SMART Backend Services: short-lived access tokens (kept as their SHA-256) and the ``jti`` of
# every client assertion seen until it expires (replay protection across processes)
access_tokens = Table(
    "access_tokens", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("partner", String(120), nullable=False),
    Column("scope", Text, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_access_tokens_expires", "expires_at"),
)
assertion_ids = Table(
    "client_assertion_ids", metadata,
    Column("client_id", String(120), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_client_assertion_ids_expires", "expires_at"),
)


class VersionConflict(Exception):
    """An update named a version that is no longer the resource's latest."""

    def __init__(self, latest: int) -> None:
        super().__init__(latest)
        self.latest = latest


_SUBMISSION_FIELDS = ("id", "partner", "channel", "kind", "filename", "status", "error", "sha256",
                      "size", "idempotency_key", "x12_key", "created_at", "updated_at",
                      "parent_id", "attempts", "summary", "run_state", "started_at",
                      "finished_at", "payload_purged_at", "findings_purged_at")
RUN_STATES = ("queued", "running", "waiting", "done")
SPLIT_CHANNEL = "split"  # the parts of a large file (see gateway.pipeline.split)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_DOCUMENT_FIELDS = ("id", "submission_id", "role", "name", "media_type", "recipient", "size",
                    "created_at", "delivered_at", "parent_document", "purged_at")


class IdempotencyConflict(ValueError):
    """An ``Idempotency-Key`` the partner used before, now with a different body (answered
    422 naming the key: the original is not silently returned for another payload)."""

    def __init__(self, key: str) -> None:
        self.key = "".join(c for c in key if c.isprintable())[:100]
        super().__init__(f"Idempotency-Key {self.key!r} was used before with a different "
                         "body; send a new key with a new body")


@dataclass(frozen=True)
class Received:
    """What :meth:`Store.receive` did: ``submission_id`` is the new submission, or, for a
    duplicate, the original one (then ``duplicate_of`` is the same id)."""

    submission_id: str
    duplicate_of: str | None = None
    # a new submission: its row as :meth:`Store.submission` would read it back (an answer that
    # describes what it just stored needs no second look)
    row: dict | None = field(default=None, compare=False)

    @property
    def duplicate(self) -> bool:
        return self.duplicate_of is not None


def default_url() -> str:
    folder = var_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'gateway.sqlite').resolve()}"


class Store:
    """The durable store. ``url=None`` is the embedded SQLite file under :func:`var_dir`."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self._lock = nullcontext()
        self._write_lock = nullcontext()
        self.memory = False  # an in-memory SQLite database: it lives as long as its engine
        if self.dialect == "sqlite":
            database = parsed.database or ""
            memory = database in ("", ":memory:") or "mode=memory" in self.url
            self.memory = memory
            if memory:
                # one connection shared by all threads: every operation is serialised here
                self.engine: Engine = create_engine(
                    self.url, poolclass=StaticPool, connect_args={"check_same_thread": False})
                self._lock = threading.RLock()
            else:
                if not database.startswith("file:"):
                    Path(database).expanduser().resolve().parent.mkdir(parents=True,
                                                                       exist_ok=True)
                self.engine = create_engine(self.url)
                self._write_lock = _file_write_lock(database)
            _sqlite_setup(self.engine, wal=not memory)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        close_cursors_on_return(self.engine)
        # writes: BEGIN IMMEDIATE on SQLite (see the begin listener); plain begin elsewhere
        self._writer = self.engine.execution_options(sqlite_immediate=True)
        with self._write("schema") as conn:
            metadata.create_all(conn)
            _add_missing_columns(conn)
            _adopt_legacy_counters(conn)

    def close(self) -> None:
        """Close the pooled connections and the write-lock file (a store used again opens
        them again)."""
        self.engine.dispose()
        if isinstance(self._write_lock, _WriteLock):
            self._write_lock.close()

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def _write(self, lock: str | None = None) -> Iterator[Connection]:
        with self._lock, self._write_lock, self._writer.begin() as conn:
            if lock is not None and self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(lock)})
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock, self.engine.connect() as conn:
            yield conn

    # -- submissions -----------------------------------------------------------------------------
    def receive(self, *, partner: str, channel: str, kind: str, filename: str | None,
                payload: bytes, idempotency_key: str | None = None, x12_key: str | None = None,
                parent_id: str | None = None, now: datetime | None = None,
                window: timedelta = DEFAULT_WINDOW, claimed_by: str | None = None,
                lease: timedelta = timedelta(minutes=1),
                audit: dict[str, str] | None = None,
                version: dict | None = None,
                keys: list[tuple[str, str]] | None = None) -> Received:
        """Persist an inbound payload (raw, with its SHA-256) as a new submission in status
        ``received``, unless it duplicates one of the partner's earlier submissions: same
        ``idempotency_key`` (any age), or same payload hash within
        ``window`` before ``now``. A replay (``parent_id`` set) is never a duplicate.
        ``claimed_by``: the new submission is born claimed by that worker (under ``lease``),
        for a caller that processes it at once, so no queue worker takes it in between.
        ``audit`` (``actor``, ``action``, optional ``detail``): an audit entry whose target is
        the answer's submission id, written in the same transaction. ``version`` (an update
        of a FHIR resource: ``resource_type``, ``resource_id``, ``version``, ``status``,
        ``content``): the new version's row, written in the same transaction, only when
        ``version - 1`` is still the resource's latest (else :class:`VersionConflict`, and
        nothing is written); an update is never a duplicate. ``keys``:
        what the submission can be searched by (``(field, value)``, see
        :mod:`gateway.pipeline.search`)."""
        now = _utc(now)
        payload = bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        with self._write(f"receive:{partner}") as conn:
            if version is not None:
                latest = _latest_version(conn, version["resource_type"],
                                         version["resource_id"])
                if latest != version["version"] - 1:
                    raise VersionConflict(latest)
            elif parent_id is None:
                original = _find_original(conn, partner, digest, idempotency_key, x12_key,
                                          now - window)
                if original is not None and idempotency_key is not None:
                    sha, key = conn.execute(select(submissions.c.sha256,
                                                   submissions.c.idempotency_key)
                                            .where(submissions.c.id == original)).one()
                    if key == idempotency_key and sha != digest:
                        raise IdempotencyConflict(idempotency_key)
                if original is not None:
                    _audit_entry(conn, audit, original, now)
                    return Received(original, original)
            elif not _exists(conn, submissions, parent_id):
                raise KeyError(f"unknown parent submission {parent_id}")
            submission_id = uuid.uuid4().hex
            # plain insert() with the values as parameters: cheaper than .values() per call
            conn.execute(insert(submissions), values := dict(
                id=submission_id, partner=partner, channel=channel, kind=kind, filename=filename,
                sha256=digest, size=len(payload), idempotency_key=idempotency_key,
                x12_key=x12_key, parent_id=parent_id, status=Status.RECEIVED.value, error=None, attempts=0,
                summary={}, created_at=now, updated_at=now,
                run_state="running" if claimed_by else "queued", lease_owner=claimed_by,
                lease_until=now + lease if claimed_by else None,
                started_at=now if claimed_by else None))
            conn.execute(insert(payloads), dict(submission_id=submission_id, content=payload))
            conn.execute(insert(status_history), dict(
                submission_id=submission_id, status=Status.RECEIVED.value, at=now, error=None))
            if keys:
                conn.execute(insert(search_keys), [
                    {"submission_id": submission_id, "field": f, "value": v[:80]}
                    for f, v in dict.fromkeys(keys)])
            if version is not None:
                content = version["content"]
                conn.execute(insert(fhir_versions), dict(
                    resource_type=version["resource_type"],
                    resource_id=version["resource_id"], version=version["version"],
                    partner=partner, submission_id=submission_id,
                    status=version.get("status"), last_updated=now,
                    content=content(now) if callable(content) else content))
            _audit_entry(conn, audit, submission_id, now)
        return Received(submission_id, None, _submission_dict(
            {name: values.get(name) for name in _SUBMISSION_FIELDS}))

    def set_status(self, submission_id: str, status: str, error: str | None = None,
                   now: datetime | None = None) -> None:
        """Move a submission to ``status`` (one of :data:`STATUSES`), recording it in the
        history. ``error`` becomes the submission's current error (``None`` clears it)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
        status = Status(status).value
        now = _utc(now)
        with self._write() as conn:
            result = conn.execute(update(submissions).where(submissions.c.id == submission_id)
                                  .values(status=status, error=error, updated_at=now))
            if result.rowcount == 0:
                raise KeyError(f"unknown submission {submission_id}")
            conn.execute(insert(status_history).values(
                submission_id=submission_id, status=status, at=now, error=error))

    def submission(self, submission_id: str) -> dict | None:
        with self._read() as conn:
            row = conn.execute(_SUBMISSION_BY_ID, {"submission_id": submission_id}
                               ).mappings().first()
        return _submission_dict(row) if row is not None else None

    def answer(self, submission_id: str, ack_role: str = "ack-999"
               ) -> tuple[dict, bytes | None, int] | None:
        """What a synchronous answer needs, on one connection: the submission, the content of
        its document of role ``ack_role`` (None: none) and its number of findings."""
        d, f = documents_table.c, findings_table.c
        with self._read() as conn:
            row = conn.execute(_select_submissions().where(
                submissions.c.id == submission_id)).mappings().first()
            if row is None:
                return None
            ack = conn.execute(select(d.content).where(
                d.submission_id == submission_id, d.role == ack_role)
                .order_by(d.created_at, d.id).limit(1)).scalar()
            count = conn.execute(select(func.count()).where(
                f.submission_id == submission_id)).scalar() or 0
        return _submission_dict(row), bytes(ack) if ack is not None else None, count

    def history(self, submission_id: str) -> list[dict]:
        """The submission's statuses, oldest first: ``status``, ``at``, ``error``."""
        c = status_history.c
        with self._read() as conn:
            rows = conn.execute(select(c.status, c.at, c.error)
                                .where(c.submission_id == submission_id).order_by(c.id))
            return [dict(r) for r in rows.mappings()]

    def set_summary(self, submission_id: str, summary: dict) -> None:
        """Replace the submission's free-form JSON summary (statistics)."""
        with self._write() as conn:
            result = conn.execute(update(submissions).where(submissions.c.id == submission_id)
                                  .values(summary=dict(summary)))
            if result.rowcount == 0:
                raise KeyError(f"unknown submission {submission_id}")

    def raw_payload(self, submission_id: str) -> bytes:
        with self._read() as conn:
            content = conn.execute(select(payloads.c.content).where(
                payloads.c.submission_id == submission_id)).scalar()
        if content is None:
            raise KeyError(f"unknown submission {submission_id} (or its payload was purged "
                           "under the retention period)")
        return bytes(content)

    # -- retention (the policy is gateway.pipeline.retention) ------------------------------------
    def expire(self, kind: str, before: datetime, now: datetime | None = None,
              batch: int = 500) -> int:
        """Remove the ``kind`` of data (``payloads``, ``documents``, ``findings``) of finished
        submissions received before ``before``; returns how many were removed. The audit
        trail stays: the submission row (id, SHA-256, size, dates, status, summary counts), a
        document's row with its SHA-256 (its content emptied), and the time of the purge."""
        before, now = _utc(before), _utc(now)
        c, d = submissions.c, documents_table.c
        done = (c.run_state == "done") & (c.created_at < before)
        total = 0
        while True:
            with self._write() as conn:
                if kind == "payloads":
                    ids = list(conn.execute(select(c.id).where(
                        done, c.payload_purged_at.is_(None)).limit(batch)).scalars())
                    if ids:
                        conn.execute(payloads.delete().where(payloads.c.submission_id.in_(ids)))
                        conn.execute(update(submissions).where(c.id.in_(ids))
                                     .values(payload_purged_at=now))
                elif kind == "findings":
                    ids = list(conn.execute(select(c.id).where(
                        done, c.findings_purged_at.is_(None)).limit(batch)).scalars())
                    if ids:
                        conn.execute(findings_table.delete().where(
                            findings_table.c.submission_id.in_(ids)))
                        conn.execute(update(submissions).where(c.id.in_(ids))
                                     .values(findings_purged_at=now))
                elif kind == "documents":
                    rows = conn.execute(select(d.id, d.content).join(
                        submissions, c.id == d.submission_id).where(
                        done, d.created_at < before, d.purged_at.is_(None)).limit(batch)).all()
                    ids = [row.id for row in rows]
                    for row in rows:
                        conn.execute(update(documents_table).where(d.id == row.id).values(
                            content=b"", purged_at=now,
                            sha256=hashlib.sha256(bytes(row.content)).hexdigest()))
                    # FHIR resource versions made by updates are documents too (member data)
                    v = fhir_versions.c
                    conn.execute(update(fhir_versions).where(
                        v.submission_id.in_(select(c.id).where(done)),
                        v.last_updated < before, func.length(v.content) > 0).values(
                        content=b""))
                else:
                    raise ValueError(f"unknown kind of data {kind!r}")
            total += len(ids)
            if len(ids) < batch:
                return total

    def attempt(self, submission_id: str) -> int:
        """Count one more processing attempt; returns the new count."""
        c = submissions.c
        with self._write() as conn:
            conn.execute(update(submissions).where(c.id == submission_id)
                         .values(attempts=c.attempts + 1))
            count = conn.execute(select(c.attempts).where(c.id == submission_id)).scalar()
        if count is None:
            raise KeyError(f"unknown submission {submission_id}")
        return count

    # -- queue -----------------------------------------------------------------------------------
    # The store is the queue: a submission is ``queued`` when received, ``running`` while one
    # worker holds its lease, ``done`` when its run ended (any final status, dead letter
    # included). A claim is one UPDATE guarded by the state, so two workers (threads, processes,
    # machines) never both win it; a lease that expires (a killed worker) makes it claimable
    # again. Claiming also discards what an earlier, unfinished run of the same submission wrote
    # (findings, documents), in the same transaction, so a rerun never duplicates an output;
    # nothing of an unfinished run can have been delivered, because mailboxes and outboxes
    # show only documents of ``done`` submissions.
    def claim(self, submission_id: str, worker: str, lease: timedelta,
              now: datetime | None = None) -> str:
        """Try to take ``submission_id`` for ``worker``: ``"claimed"`` (it is yours until
        ``lease`` passes, see :meth:`extend_lease`), ``"busy"`` (another worker's lease is
        live), ``"waiting"`` (split into parts, see :meth:`claim_merge`), ``"done"`` (already
        finished) or ``"missing"``."""
        now = _utc(now)
        c = submissions.c
        with self._write() as conn:
            result = conn.execute(update(submissions).where(c.id == submission_id, _claimable(now))
                                  .values(run_state="running", lease_owner=worker,
                                          lease_until=now + lease, started_at=now))
            if result.rowcount == 1:
                _discard_outputs(conn, submission_id)
                return "claimed"
            state = conn.execute(select(c.run_state).where(c.id == submission_id)).scalar()
        return {None: "missing", "done": "done", "waiting": "waiting"}.get(state, "busy")

    def claim_next(self, worker: str, lease: timedelta, now: datetime | None = None
                   ) -> str | None:
        """Take the oldest claimable submission for ``worker`` (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite); None when there is none."""
        now = _utc(now)
        found = _CLAIM_NEXT_LOCKED if self.dialect == "postgresql" else _CLAIM_NEXT
        with self._write() as conn:
            row = conn.execute(found, {"now": now}).first()
            if row is None:
                return None
            submission_id, started = row
            conn.execute(_CLAIM_ONE, {"submission_id": submission_id, "worker": worker,
                                      "until": now + lease, "now": now})
            if started is not None:  # a run began before (it had outputs only if it did)
                _discard_outputs(conn, submission_id)
        return submission_id

    def extend_lease(self, submission_id: str, worker: str, lease: timedelta,
                     now: datetime | None = None) -> bool:
        """Keep a claim alive (a worker's heartbeat); False when ``worker`` no longer holds it."""
        now = _utc(now)
        c = submissions.c
        with self._write() as conn:
            result = conn.execute(update(submissions).where(
                c.id == submission_id, c.run_state == "running", c.lease_owner == worker)
                .values(lease_until=now + lease))
        return result.rowcount == 1

    def parts_of(self, parent_id: str) -> list[dict]:
        """The parts a large submission was split into, in part order (by file name)."""
        c = submissions.c
        with self._read() as conn:
            rows = conn.execute(_select_submissions().where(
                c.parent_id == parent_id, c.channel == SPLIT_CHANNEL).order_by(c.filename)
            ).mappings()
            return [_submission_dict(r) for r in rows]

    def await_parts(self, submission_id: str, worker: str) -> bool:
        """``worker`` split the submission into parts: it now waits for them (no lease)."""
        c = submissions.c
        with self._write() as conn:
            result = conn.execute(update(submissions).where(
                c.id == submission_id, c.run_state == "running", c.lease_owner == worker)
                .values(run_state="waiting", lease_owner=None, lease_until=None))
        return result.rowcount == 1

    def claim_merge(self, submission_id: str, worker: str, lease: timedelta,
                    now: datetime | None = None) -> bool:
        """Take a ``waiting`` submission for its merge, once every part is done (one UPDATE:
        when the last two parts finish together, one of their merges wins)."""
        now = _utc(now)
        c = submissions.c
        with self._write() as conn:
            result = conn.execute(update(submissions).where(
                c.id == submission_id, c.run_state == "waiting", ~_unfinished_parts())
                .values(run_state="running", lease_owner=worker, lease_until=now + lease))
        return result.rowcount == 1

    def restart_run(self, submission_id: str) -> None:
        """Discard the findings and documents written so far by the current run (before a
        retry, so the retry does not add to them)."""
        with self._write() as conn:
            _discard_outputs(conn, submission_id)

    def finish(self, submission_id: str, worker: str, now: datetime | None = None,
               run: Run | None = None) -> bool:
        """End ``worker``'s run: the submission is ``done`` and its outputs become deliverable.
        ``run``: what the run wrote and the store has not yet (:class:`Run`), written in the
        same transaction. False (and nothing changes, nothing of ``run`` is written) when the
        worker had lost its lease."""
        now = _utc(now)
        with self._write() as conn:
            row = conn.execute(_RUN_HELD, {"submission_id": submission_id, "worker": worker}
                               ).first()
            if row is None:
                return False
            created, started = (_utc(v) if v is not None else now for v in row)
            done = dict(run_state="done", lease_owner=None, lease_until=None, finished_at=now,
                        run_ms=_ms(now - started), latency_ms=_ms(now - created))
            if run is not None:  # the run's status, summary and attempts in the same UPDATE
                _write_outputs(conn, run, done)
            else:
                _update_submission(conn, submission_id, done)
        if run is not None:
            run.written()
        return True

    def write_outputs(self, run: Run) -> None:
        """Write what ``run`` holds now, in one transaction, without ending it (a step that
        reads back what it wrote, see :class:`Run`)."""
        with self._write() as conn:
            _write_outputs(conn, run)
        run.written()

    def requeue_abandoned(self, owners_alive, now: datetime | None = None) -> list[str]:
        """Put back in the queue the running submissions whose ``lease_owner`` is judged dead by
        ``owners_alive(owner) -> bool`` (a restarted server releases its predecessor's claims
        at once instead of waiting for their leases to expire)."""
        c = submissions.c
        with self._write() as conn:
            running = conn.execute(select(c.id, c.lease_owner).where(c.run_state == "running")
                                   ).all()
            dead = [sid for sid, owner in running if not owners_alive(owner or "")]
            for sid in dead:
                conn.execute(update(submissions).where(c.id == sid, c.run_state == "running")
                             .values(run_state="queued", lease_owner=None, lease_until=None))
        return dead

    def mark_enqueued(self, submission_ids: list[str], now: datetime | None = None) -> None:
        """Note when a submission was last handed to an external broker (Celery)."""
        if not submission_ids:
            return
        with self._write() as conn:
            conn.execute(update(submissions).where(submissions.c.id.in_(submission_ids))
                         .values(enqueued_at=_utc(now)))

    def overdue(self, redeliver_after: timedelta, limit: int = 500,
                now: datetime | None = None) -> list[str]:
        """Submissions a broker may have lost: queued and not handed over since
        ``redeliver_after``, running under an expired lease (a killed worker), or waiting for
        parts that are all done (a lost merge). Oldest first."""
        now = _utc(now)
        c = submissions.c
        stale = (c.run_state == "queued") & ((c.enqueued_at.is_(None))
                                              | (c.enqueued_at < now - redeliver_after))
        expired = (c.run_state == "running") & (c.lease_until < now)
        mergeable = (c.run_state == "waiting") & ~_unfinished_parts()
        with self._read() as conn:
            return list(conn.execute(select(c.id).where(stale | expired | mergeable)
                                     .order_by(c.created_at, c.id).limit(limit)).scalars())

    def queued(self, limit: int = 10) -> list[str]:
        """Ids of submissions waiting for a worker, oldest first."""
        c = submissions.c
        with self._read() as conn:
            return list(conn.execute(select(c.id).where(c.run_state == "queued")
                                     .order_by(c.created_at, c.id).limit(limit)).scalars())

    def queue_depth(self) -> dict[str, int]:
        """Submissions per run state: ``queued``, ``running``, ``done``."""
        c = submissions.c
        with self._read() as conn:
            rows = dict(conn.execute(select(c.run_state, func.count()).group_by(c.run_state)
                                     ).all())
        return {state: rows.get(state, 0) for state in RUN_STATES}

    def latency_histogram(self, buckets: tuple[float, ...] = LATENCY_BUCKETS,
                          column: str = "latency_ms") -> dict[str, tuple[list[int], float, int]]:
        """Per kind, over finished submissions: cumulative counts for each bucket (seconds),
        the sum (seconds) and the count of ``latency_ms`` (receipt to end of run) or
        ``run_ms`` (the final run alone). Read at scrape time, so every process agrees."""
        c = submissions.c
        value = c[column]
        columns = [func.sum(case((value <= int(b * 1000), 1), else_=0)) for b in buckets]
        with self._read() as conn:
            rows = conn.execute(select(c.kind, func.count(), func.sum(value), *columns)
                                .where(c.run_state == "done", value.is_not(None))
                                .group_by(c.kind)).all()
        return {kind: ([int(n or 0) for n in counts], float(total or 0) / 1000.0, count)
                for kind, count, total, *counts in rows}

    def finding_count(self, submission_id: str) -> int:
        c = findings_table.c
        with self._read() as conn:
            return conn.execute(select(func.count()).where(c.submission_id == submission_id)
                                ).scalar() or 0

    def submissions_for(self, partner: str, limit: int = 100) -> list[dict]:
        """The partner's submissions, newest first."""
        c = submissions.c
        with self._read() as conn:
            rows = conn.execute(_select_submissions().where(c.partner == partner)
                                .order_by(c.created_at.desc(), c.id).limit(limit)).mappings()
            return [_submission_dict(r) for r in rows]

    def routed_fhir_submissions(self, since: datetime) -> list[dict]:
        """FHIR submissions received since ``since`` whose run routed something (routed or
        delivered), oldest first, with their summaries (the referrals' deadlines)."""
        c = submissions.c
        with self._read() as conn:
            rows = conn.execute(_select_submissions().where(
                c.kind == "fhir", c.status.in_((Status.ROUTED.value, Status.DELIVERED.value)),
                c.run_state == "done", c.created_at >= _utc(since))
                .order_by(c.created_at, c.id)).mappings()
            return [_submission_dict(r) for r in rows]

    def counts_by_status(self) -> dict[tuple[str, str], int]:
        """``(kind, status) -> number of submissions`` (for the Prometheus gauges)."""
        c = submissions.c
        with self._read() as conn:
            rows = conn.execute(select(c.kind, c.status, func.count())
                                .group_by(c.kind, c.status))
            return {(kind, status): count for kind, status, count in rows}

    # -- the listing (console and GET /submissions) ---------------------------------------------
    def list_submissions(self, *, partner: str | None = None, kind: str | None = None,
                         status: str | None = None, since: datetime | None = None,
                         until: datetime | None = None, search: str | None = None,
                         after: tuple[datetime, str] | None = None, limit: int = 50,
                         include_parts: bool = False) -> list[dict]:
        """Submissions newest first (``created_at``, then ``id``, both descending), at most
        ``limit``, filtered: ``partner`` (None: every partner's, for an operator), ``kind``,
        ``status``, ``since`` <= created_at < ``until``; ``search`` is a submission id, a file
        name (or the start of one), or a search key's value (ISA13, GS06, claim id). ``after``:
        the ``(created_at, id)`` of the last row of the previous page (keyset paging, so a page
        deep in 100k submissions costs what the first does). The parts of a split file are left
        out unless ``include_parts``."""
        c = submissions.c
        where = []
        if partner is not None:
            where.append(c.partner == partner)
        if kind:
            where.append(c.kind == kind)
        if status:
            where.append(c.status == status)
        if since is not None:
            where.append(c.created_at >= _utc(since))
        if until is not None:
            where.append(c.created_at < _utc(until))
        if not include_parts:
            where.append(c.channel != SPLIT_CHANNEL)
        if search:
            search = search.strip()
            k = search_keys.c
            by_key = select(k.submission_id).where(k.value == search[:80])
            where.append(or_(c.id == search.lower(), c.id.in_(by_key),
                             and_(c.filename >= search, c.filename < search + "\U0010ffff")))
        if after is not None:
            created, last_id = after
            where.append(tuple_(c.created_at, c.id) < tuple_(
                bindparam("after_at", _utc(created), type_=UTCDateTime), last_id))
        statement = _select_submissions().where(*where).order_by(
            c.created_at.desc(), c.id.desc()).limit(max(1, min(int(limit), 1000)))
        with self._read() as conn:
            return [_submission_dict(r) for r in conn.execute(statement).mappings()]

    def replays_of(self, submission_id: str) -> list[dict]:
        """The submissions that replayed this one (channel ``replay``), oldest first."""
        c = submissions.c
        with self._read() as conn:
            rows = conn.execute(_select_submissions().where(
                c.parent_id == submission_id, c.channel != SPLIT_CHANNEL)
                .order_by(c.created_at, c.id)).mappings()
            return [_submission_dict(r) for r in rows]

    def search_keys_of(self, submission_id: str) -> list[tuple[str, str]]:
        k = search_keys.c
        with self._read() as conn:
            return [(f, v) for f, v in conn.execute(
                select(k.field, k.value).where(k.submission_id == submission_id)
                .order_by(k.id))]

    def counts_since(self, since: datetime, partner: str | None = None
                     ) -> dict[tuple[str, str], int]:
        """``(kind, status) -> number`` of submissions received since ``since``."""
        c = submissions.c
        where = [c.created_at >= _utc(since), c.channel != SPLIT_CHANNEL]
        if partner is not None:
            where.append(c.partner == partner)
        with self._read() as conn:
            rows = conn.execute(select(c.kind, c.status, func.count()).where(*where)
                                .group_by(c.kind, c.status))
            return {(kind, status): count for kind, status, count in rows}

    def daily_counts(self, days: int, partner: str | None = None,
                     now: datetime | None = None) -> list[tuple[str, int, int]]:
        """The last ``days`` days (UTC), oldest first: ``(YYYY-MM-DD, received, rejected)``."""
        now = _utc(now)
        start = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days - 1)
        c = submissions.c
        day = func.substr(func.cast(c.created_at, String), 1, 10) \
            if self.dialect == "sqlite" else func.to_char(c.created_at, "YYYY-MM-DD")
        where = [c.created_at >= start, c.channel != SPLIT_CHANNEL]
        if partner is not None:
            where.append(c.partner == partner)
        with self._read() as conn:
            rows = conn.execute(select(day, func.count(),
                                       func.sum(case((c.status == "rejected", 1), else_=0)))
                                .where(*where).group_by(day)).all()
        found = {d: (int(n), int(r or 0)) for d, n, r in rows}
        out = []
        for i in range(days):
            key = (start + timedelta(days=i)).strftime("%Y-%m-%d")
            out.append((key, *found.get(key, (0, 0))))
        return out

    # -- findings --------------------------------------------------------------------------------
    def add_findings(self, submission_id: str, findings: list[Finding]) -> None:
        """Append findings (their public fields, :meth:`Finding.as_dict`; ``context`` is not
        kept)."""
        rows = _finding_rows(submission_id, findings)
        with self._write() as conn:
            if not _exists(conn, submissions, submission_id):
                raise KeyError(f"unknown submission {submission_id}")
            if rows:
                conn.execute(insert(findings_table), rows)

    def findings(self, submission_id: str, view: str = "submitter") -> list[dict]:
        """The findings in the order they were added, as :meth:`Finding.as_dict` gives them
        (``Finding(**d)`` rebuilds one). ``view``: ``"submitter"`` what the submitter was
        told; ``"plan"`` the full reasons (rule and message) instead; ``"both"`` the
        submitter's form plus ``plan_rule``/``plan_message`` where they differ (to rebuild
        findings whole)."""
        c = findings_table.c
        with self._read() as conn:
            rows = conn.execute(select(c.rule, c.severity, c.location, c.message, c.source,
                                       c.segment, c.plan_rule, c.plan_message)
                                .where(c.submission_id == submission_id)
                                .order_by(c.id)).mappings().all()
        out = []
        for r in rows:
            data = {k: r[k] for k in ("rule", "severity", "location", "message", "source")}
            if r["segment"] is not None:
                data["segment"] = r["segment"]
            if r["plan_rule"] and view == "plan":
                data.update(rule=r["plan_rule"], message=r["plan_message"] or data["message"])
            elif r["plan_rule"] and view == "both":
                data.update(plan_rule=r["plan_rule"], plan_message=r["plan_message"])
            out.append(data)
        return out

    def findings_page(self, submission_id: str, *, rule: str | None = None,
                      after: int | None = None, limit: int = 100,
                      view: str = "submitter") -> list[dict]:
        """One page of the findings in the order they were added: each with its ``id`` (the
        cursor of the next page is the last one's); ``rule``: only that rule's (as ``view``
        names it); ``view`` as in :meth:`findings`."""
        c = findings_table.c
        shown_rule = func.coalesce(c.plan_rule, c.rule) if view == "plan" else c.rule
        where = [c.submission_id == submission_id]
        if rule:
            where.append(shown_rule == rule)
        if after is not None:
            where.append(c.id > int(after))
        with self._read() as conn:
            rows = conn.execute(select(c.id, c.rule, c.severity, c.location, c.message,
                                       c.source, c.segment, c.plan_rule, c.plan_message)
                                .where(*where).order_by(c.id)
                                .limit(max(1, min(int(limit), 5000)))).mappings().all()
        out = []
        for r in rows:
            data = {k: r[k] for k in ("id", "rule", "severity", "location", "message",
                                      "source")}
            if r["segment"] is not None:
                data["segment"] = r["segment"]
            if r["plan_rule"] and view == "plan":
                data.update(rule=r["plan_rule"], message=r["plan_message"] or data["message"])
            out.append(data)
        return out

    def finding_counts(self, submission_id: str, view: str = "submitter") -> list[dict]:
        """Per rule (most frequent first; the rule as ``view`` names it, see
        :meth:`findings`): ``rule``, ``severity`` (the worst seen) and ``count``."""
        c = findings_table.c
        shown_rule = func.coalesce(c.plan_rule, c.rule) if view == "plan" else c.rule
        worst = func.min(case((c.severity == "error", 0), (c.severity == "warning", 1),
                              else_=2))
        with self._read() as conn:
            rows = conn.execute(select(shown_rule, worst, func.count()).where(
                c.submission_id == submission_id).group_by(shown_rule)
                .order_by(func.count().desc(), shown_rule)).all()
        return [{"rule": rule, "severity": ("error", "warning", "info")[w], "count": n}
                for rule, w, n in rows]

    # -- documents -------------------------------------------------------------------------------
    def add_document(self, submission_id: str, *, role: str, name: str, content: bytes,
                     media_type: str, recipient: str | None = None,
                     parent_document: str | None = None, now: datetime | None = None) -> str:
        """Store a document made from a submission (ack, converted file, report, routed copy;
        a routed copy names the document it copies in ``parent_document``)."""
        row = document_row(submission_id, role=role, name=name, content=content,
                            media_type=media_type, recipient=recipient,
                            parent_document=parent_document, now=now)
        with self._write() as conn:
            if not _exists(conn, submissions, submission_id):
                raise KeyError(f"unknown submission {submission_id}")
            if parent_document is not None and not _exists(conn, documents_table,
                                                           parent_document):
                raise KeyError(f"unknown parent document {parent_document}")
            conn.execute(insert(documents_table).values(**row))
        return row["id"]

    def documents(self, submission_id: str) -> list[dict]:
        """The submission's documents, oldest first (without content)."""
        c = documents_table.c
        with self._read() as conn:
            rows = conn.execute(_select_documents().where(c.submission_id == submission_id)
                                .order_by(c.created_at, c.id)).mappings()
            return [dict(r) for r in rows]

    def document(self, document_id: str) -> dict | None:
        c = documents_table.c
        with self._read() as conn:
            row = conn.execute(_select_documents(c.content).where(c.id == document_id)
                               ).mappings().first()
        if row is None:
            return None
        data = dict(row)
        data["content"] = bytes(data["content"])
        return data

    def mailbox(self, partner: str, *, after: tuple[datetime, str] | None = None,
                limit: int | None = None) -> list[dict]:
        """Documents addressed to ``partner``, newest first (without content); only those of
        finished runs (``done``), so nothing of a run that may still be redone is handed out,
        and not those of the parts of a split file (their merge is). ``after``: the
        ``(created_at, id)`` of the last document of the previous page; ``limit``: a page."""
        c = documents_table.c
        where = [c.recipient == partner, submissions.c.run_state == "done",
                 submissions.c.channel != SPLIT_CHANNEL, c.purged_at.is_(None)]
        if after is not None:
            where.append(tuple_(c.created_at, c.id) < tuple_(
                bindparam("after_at", _utc(after[0]), type_=UTCDateTime), after[1]))
        statement = _select_documents().join(
            submissions, submissions.c.id == c.submission_id).where(*where) \
            .order_by(c.created_at.desc(), c.id.desc())
        if limit is not None:
            statement = statement.limit(max(1, min(int(limit), 1000)))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(statement).mappings()]

    def mark_delivered(self, document_id: str, now: datetime | None = None) -> None:
        """The recipient has the document (downloaded, or written to its outbox). When every
        document routed onward from a ``routed`` submission is delivered, the submission
        becomes ``delivered`` (acknowledgments back to the sender do not count)."""
        now = _utc(now)
        d, c = documents_table.c, submissions.c
        with self._write() as conn:
            found = conn.execute(select(d.submission_id).where(d.id == document_id)).first()
            if found is None:
                raise KeyError(f"unknown document {document_id}")
            conn.execute(update(documents_table).where(d.id == document_id)
                         .values(delivered_at=now))
            submission_id = found.submission_id
            pending = conn.execute(select(func.count()).where(
                d.submission_id == submission_id, d.role.like("routed%"),
                d.delivered_at.is_(None))).scalar()
            if pending == 0 and conn.execute(update(submissions).where(
                    c.id == submission_id, c.status == Status.ROUTED.value,
                    c.run_state == "done").values(status=Status.DELIVERED.value, updated_at=now)
            ).rowcount:
                conn.execute(insert(status_history).values(
                    submission_id=submission_id, status=Status.DELIVERED.value, at=now, error=None))

    # -- console sessions ----------------------------------------------------------------------------
    def create_session(self, *, session_sha256: str, partner: str, token_sha256: str,
                       csrf: str, expires_at: datetime, now: datetime | None = None) -> None:
        now = _utc(now)
        with self._write() as conn:
            conn.execute(console_sessions.delete().where(
                console_sessions.c.expires_at < now))  # sweep the expired ones
            conn.execute(insert(console_sessions), {
                "id_sha256": session_sha256, "partner": partner, "token_sha256": token_sha256,
                "csrf": csrf, "created_at": now, "expires_at": _utc(expires_at)})

    def session(self, session_sha256: str, now: datetime | None = None) -> dict | None:
        """The live session with this hash (None: unknown or expired)."""
        c = console_sessions.c
        with self._read() as conn:
            row = conn.execute(select(console_sessions).where(
                c.id_sha256 == session_sha256, c.expires_at > _utc(now))).mappings().first()
        return dict(row) if row is not None else None

    def end_session(self, session_sha256: str) -> None:
        with self._write() as conn:
            conn.execute(console_sessions.delete().where(
                console_sessions.c.id_sha256 == session_sha256))

    # -- control numbers ---------------------------------------------------------------------------
    def next_numbers(self, name: str, count: int = 1) -> list[int]:
        """``count`` consecutive control numbers from the counter ``name`` (the first is 1;
        after :data:`MAX_CONTROL` comes 1 again). Atomic across threads, processes and
        machines sharing the database, so no two callers ever get the same number."""
        return self.take_numbers({name: count})[name]

    def take_numbers(self, wanted: dict[str, int]) -> dict[str, list[int]]:
        """:meth:`next_numbers` for several counters in one transaction (an envelope's ISA13
        and GS06 together)."""
        with self._write() as conn:
            return {name: _take_numbers(conn, name, count) for name, count in wanted.items()}

    # -- FHIR versions ---------------------------------------------------------------------------
    def resource_versions(self, resource_type: str, resource_id: str) -> list[dict]:
        """The versions an update made of a resource (2, 3, ...), newest first, with content."""
        c = fhir_versions.c
        with self._read() as conn:
            rows = conn.execute(select(fhir_versions).where(
                c.resource_type == resource_type, c.resource_id == resource_id)
                .order_by(c.version.desc())).mappings()
            return [{**r, "content": bytes(r["content"])} for r in rows]

    def latest_versions(self, partner: str, resource_type: str) -> dict[str, dict]:
        """The latest updated version of each of the partner's resources of a type, by id."""
        c = fhir_versions.c
        latest = select(c.resource_id, func.max(c.version).label("v")).where(
            c.partner == partner, c.resource_type == resource_type).group_by(
            c.resource_id).subquery()
        with self._read() as conn:
            rows = conn.execute(select(fhir_versions).join(latest, (
                c.resource_id == latest.c.resource_id) & (c.version == latest.c.v)).where(
                c.resource_type == resource_type)).mappings()
            return {r["resource_id"]: {**r, "content": bytes(r["content"])} for r in rows}

    def version_of_submission(self, submission_id: str) -> dict | None:
        """The resource version an update submission made — or, for a replay of one, the
        version the replayed update made (a replay routes it again, it makes no resource of
        its own); None: not an update."""
        c = fhir_versions.c
        with self._read() as conn:
            sid = submission_id
            for _ in range(16):  # replays of replays
                row = conn.execute(select(fhir_versions).where(
                    c.submission_id == sid)).mappings().first()
                if row is not None:
                    return {**row, "content": bytes(row["content"])}
                sid = conn.execute(select(submissions.c.parent_id).where(
                    submissions.c.id == sid)).scalar()
                if sid is None:
                    return None
        return None

    def stored_resources(self, partner: str, role: str, resource_type: str) -> list[dict]:
        """The partner's stored FHIR resources of a type as their creates stored them, in one
        query: name, content, the creating submission's id and time (version 1's
        ``lastUpdated``); documents of finished runs addressed to the partner, not purged, not
        those of update submissions (their versions are :meth:`latest_versions`)."""
        c, s, v = documents_table.c, submissions.c, fhir_versions.c
        with self._read() as conn:
            rows = conn.execute(select(
                c.name, c.content, c.submission_id, s.created_at).join(
                submissions, s.id == c.submission_id).where(
                c.recipient == partner, c.role == role, c.name.like(f"{resource_type}/%"),
                s.run_state == "done", s.channel != SPLIT_CHANNEL, c.purged_at.is_(None),
                ~select(v.submission_id).where(v.submission_id == s.id).exists())
                .order_by(s.created_at, c.name)).mappings()
            return [{**r, "content": bytes(r["content"])} for r in rows]

    # -- SMART Backend Services --------------------------------------------------------------------
    def remember_assertion(self, client_id: str, jti: str, expires_at: datetime,
                           now: datetime | None = None) -> bool:
        """Record a client assertion's ``jti`` until it expires; False when it was seen
        before (a replay). Expired ones are forgotten on the way."""
        now = _utc(now)
        c = assertion_ids.c
        with self._write(f"jti:{client_id}") as conn:
            conn.execute(assertion_ids.delete().where(c.expires_at < now))
            if conn.execute(select(c.jti).where(c.client_id == client_id, c.jti == jti)
                            ).first() is not None:
                return False
            conn.execute(insert(assertion_ids), dict(client_id=client_id, jti=jti,
                                                     expires_at=_utc(expires_at)))
        return True

    def add_access_token(self, token_sha256: str, partner: str, scope: str,
                         expires_at: datetime, now: datetime | None = None) -> None:
        c = access_tokens.c
        with self._write() as conn:
            conn.execute(access_tokens.delete().where(c.expires_at < _utc(now)))
            conn.execute(insert(access_tokens), dict(token_sha256=token_sha256, partner=partner,
                                                     scope=scope, expires_at=_utc(expires_at)))

    def access_token(self, token_sha256: str, now: datetime | None = None) -> dict | None:
        """An unexpired access token's partner and scope."""
        c = access_tokens.c
        with self._read() as conn:
            row = conn.execute(select(access_tokens).where(
                c.token_sha256 == token_sha256, c.expires_at > _utc(now))).mappings().first()
        return dict(row) if row else None

    # -- audit (append-only: no update or delete here, by design) --------------------------------
    def audit(self, *, actor: str, action: str, target: str, detail: str = "",
              now: datetime | None = None) -> None:
        with self._write() as conn:
            _audit_entry(conn, {"actor": actor, "action": action, "detail": detail}, target,
                         _utc(now))

    def audit_log(self, limit: int = 1000) -> list[dict]:
        """The latest ``limit`` audit entries, newest first: id, at, actor, action, target,
        detail."""
        c = audit_table.c
        with self._read() as conn:
            rows = conn.execute(select(audit_table).order_by(c.id.desc()).limit(limit))
            return [dict(r) for r in rows.mappings()]


# -- a run's outputs, written together --------------------------------------------------------------
# reads a step may make of what it has just written: they see it because the run is written first
_READS_AFTER_WRITES = frozenset({"submission", "documents", "document", "findings",
                                 "finding_count", "history", "mailbox", "submissions_for",
                                 "counts_by_status"})


class Run:
    """The store as a step sees it while it runs one submission. What the step writes about
    that submission — processing attempts, status changes, findings, documents, its summary —
    is kept here and written by :meth:`Store.finish` in ONE transaction together with the end
    of the run (before: one transaction per write). So a run that does not end (a crash, a
    lost lease, an exception before a retry) leaves nothing behind, and a finished run's
    outputs appear all at once. When the step reads the store about the submission after
    writing (``submission``, ``documents``, ``findings``…), what it holds is written first
    (:meth:`Store.write_outputs`), so it reads its own writes. Everything else (reads, control
    numbers, writes about other submissions) goes straight to the store.

    ``delay`` (tests only, see ``TEST_SLOW_WRITES`` in :mod:`gateway.pipeline.process`): sleep
    that long at every write, so a kill lands in the middle of a run."""

    def __init__(self, store: Store, submission_id: str, attempts: int = 0,
                 delay: float = 0.0) -> None:
        self.store, self.submission_id, self.delay = store, submission_id, delay
        self.base_attempts = attempts
        self.attempts = 0
        self.written_before = False  # part of the run is in the store already
        self._clear()

    def _clear(self) -> None:
        self._statuses: list[dict] = []
        self._findings: list[dict] = []
        self._documents: list[dict] = []
        self._summary: dict | None = None

    @property
    def pending(self) -> bool:
        """Outputs not yet written (attempts aside)."""
        return bool(self._statuses or self._findings or self._documents
                    or self._summary is not None)

    def __getattr__(self, name):
        found = getattr(self.store, name)
        if name not in _READS_AFTER_WRITES:
            return found

        def read(*args, **kwargs):
            self.flush()
            return found(*args, **kwargs)
        return read

    def _mine(self, submission_id: str) -> bool:
        if self.delay > 0:
            time.sleep(self.delay)
        return submission_id == self.submission_id

    # -- the writes a step makes (the same signatures as the store's) --------------------------
    def attempt(self, submission_id: str) -> int:
        if not self._mine(submission_id):
            return self.store.attempt(submission_id)
        self.attempts += 1
        return self.base_attempts + self.attempts

    def set_status(self, submission_id: str, status: str, error: str | None = None,
                   now: datetime | None = None) -> None:
        if not self._mine(submission_id):
            return self.store.set_status(submission_id, status, error=error, now=now)
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
        self._statuses.append({"submission_id": submission_id, "status": Status(status).value,
                              "at": _utc(now), "error": error})

    def set_summary(self, submission_id: str, summary: dict) -> None:
        if not self._mine(submission_id):
            return self.store.set_summary(submission_id, summary)
        self._summary = dict(summary)

    def add_findings(self, submission_id: str, findings: list[Finding]) -> None:
        if not self._mine(submission_id):
            return self.store.add_findings(submission_id, findings)
        self._findings.extend(_finding_rows(submission_id, findings))

    def add_document(self, submission_id: str, *, role: str, name: str, content: bytes,
                     media_type: str, recipient: str | None = None,
                     parent_document: str | None = None, now: datetime | None = None) -> str:
        if not self._mine(submission_id):
            return self.store.add_document(submission_id, role=role, name=name,
                                           content=content, media_type=media_type,
                                           recipient=recipient,
                                           parent_document=parent_document, now=now)
        if parent_document is not None and \
                all(d["id"] != parent_document for d in self._documents) and \
                self.store.document(parent_document) is None:
            raise KeyError(f"unknown parent document {parent_document}")
        row = document_row(submission_id, role=role, name=name, content=content,
                            media_type=media_type, recipient=recipient,
                            parent_document=parent_document, now=now)
        self._documents.append(row)
        return row["id"]

    def write_result(self, result, now: datetime | None = None) -> None:
        """Hold a step's :class:`~gateway.pipeline.steps.result.StepResult`: its status path,
        findings, documents and summary (written with the end of the run)."""
        from gateway.pipeline.status import path

        at = _utc(now)
        sid = self.submission_id
        for status in path(result.status, read=result.read, converted=result.converted):
            error = result.error if status == result.status else None
            self._statuses.append({"submission_id": sid, "status": status.value, "at": at,
                                   "error": error})
        self._findings.extend(_finding_rows(sid, result.findings))
        self._documents.extend(result.documents)
        if result.summary is not None:
            self._summary = dict(result.summary)

    # -- the run's own bookkeeping -------------------------------------------------------------
    def flush(self) -> None:
        """Write what is held now (one transaction; attempts alone wait for the end)."""
        if self.pending:
            self.store.write_outputs(self)

    def written(self) -> None:
        """The store has written what was held."""
        self.written_before = self.written_before or self.pending
        self.base_attempts += self.attempts
        self.attempts = 0
        self._clear()

    def restart(self) -> None:
        """Before a retry: drop this attempt's outputs (attempts are kept), and those already
        written (:meth:`Store.restart_run`)."""
        self._clear()
        if self.written_before:
            self.store.restart_run(self.submission_id)
            self.written_before = False


def _write_outputs(conn: Connection, run: Run, also: dict | None = None) -> None:
    """Write what ``run`` holds; ``also``: more columns of the submission's row to set in
    the same UPDATE (the end of the run, :meth:`Store.finish`)."""
    sid = run.submission_id
    values: dict = dict(also or {})
    if run._statuses:
        last = run._statuses[-1]
        values.update(status=last["status"], error=last["error"], updated_at=last["at"])
        conn.execute(insert(status_history), run._statuses)
    if run._summary is not None:
        values["summary"] = run._summary
    if values or run.attempts:
        if _update_submission(conn, sid, values, run.attempts) == 0:
            raise KeyError(f"unknown submission {sid}")
    if run._findings:
        conn.execute(insert(findings_table), run._findings)
    if run._documents:  # in the order they were made: a routed copy after what it copies
        conn.execute(insert(documents_table), run._documents)


_UPDATES: dict[tuple, object] = {}  # the columns an UPDATE of a submission sets -> it


def _update_submission(conn: Connection, submission_id: str, values: dict,
                       add_attempts: int = 0) -> int:
    """Set ``values`` (column -> value) of a submission's row and add ``add_attempts`` to its
    attempts; returns the rows changed. One statement per set of columns, built once (a run
    sets the same few columns every time)."""
    key = (*sorted(values), bool(add_attempts))
    statement = _UPDATES.get(key)
    if statement is None:
        c = submissions.c
        columns = {name: bindparam(f"set_{name}", type_=c[name].type) for name in key[:-1]}
        if add_attempts:
            columns["attempts"] = c.attempts + bindparam("add_attempts", type_=Integer)
        statement = update(submissions).where(c.id == bindparam("submission_id")).values(
            **columns)
        _UPDATES[key] = statement
    parameters = {f"set_{name}": value for name, value in values.items()}
    parameters.update(submission_id=submission_id, add_attempts=add_attempts)
    return conn.execute(statement, parameters).rowcount


def _audit_entry(conn: Connection, entry: dict[str, str] | None, target: str,
                 now: datetime) -> None:
    if entry is not None:
        conn.execute(insert(audit_table), {"at": now, "actor": entry["actor"],
                                           "action": entry["action"], "target": target,
                                           "detail": entry.get("detail") or ""})


def _finding_rows(submission_id: str, findings: list[Finding]) -> list[dict]:
    rows = []
    for finding in findings:
        data = finding.as_dict()
        rows.append({"submission_id": submission_id, "rule": data["rule"],
                     "severity": data["severity"], "location": data["location"],
                     "message": data["message"], "source": data["source"],
                     "segment": data.get("segment"), "plan_rule": finding.plan_rule,
                     "plan_message": finding.plan_message})
    return rows


def document_row(submission_id: str, *, role: str, name: str, content: bytes,
                  media_type: str, recipient: str | None, parent_document: str | None,
                  now: datetime | None) -> dict:
    content = bytes(content)
    return {"id": uuid.uuid4().hex, "submission_id": submission_id, "role": role,
            "name": name, "media_type": media_type, "recipient": recipient,
            "parent_document": parent_document, "size": len(content), "content": content,
            "created_at": _utc(now), "delivered_at": None}


# -- helpers ---------------------------------------------------------------------------------------
def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_FILE_WRITE_LOCKS: dict[str, "_WriteLock"] = {}
_FILE_WRITE_LOCKS_GUARD = threading.Lock()


class _WriteLock:
    """The writers of one SQLite file: a re-entrant lock of this process's threads, then an
    exclusive ``flock`` of the file ``<database>.writelock`` shared with the other processes on
    the store (``serve --api-workers N``, worker processes, the command line). A writer waits
    in the kernel and starts the moment the one ahead of it lets go, instead of SQLite's busy
    handler sleeping 1, 2, 5, 10… ms between tries: two API processes writing at once made
    creates wait far longer than the transactions ahead of them lasted (measured with
    bench/bench_fhir.py). Without ``fcntl`` (or for a ``file:`` URI) threads alone queue."""

    def __init__(self, path: str | None) -> None:
        self._threads = threading.RLock()
        self._path = path
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self._path is None or fcntl is None:
            return None
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self._path = None  # a read-only folder: SQLite's own lock then
                return None
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> _WriteLock:
        self._threads.acquire()
        if self._depth == 0:
            fd = self._file()
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    self._threads.release()
                    raise
        self._depth += 1
        return self

    def __exit__(self, *_exc) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the lock file between writes (the next writer opens it again): a store that
        is closed keeps no descriptor open."""
        with self._threads:
            if self._depth == 0 and self._fd is not None:
                if self._pid == os.getpid():
                    os.close(self._fd)
                self._fd = None


def _file_write_lock(database: str) -> _WriteLock:
    """One lock per SQLite file and process, taken before ``BEGIN IMMEDIATE``
    (:class:`_WriteLock`)."""
    if database.startswith("file:"):
        key, path = database, None
    else:
        key = str(Path(database).expanduser().resolve())
        path = key + ".writelock"
    with _FILE_WRITE_LOCKS_GUARD:
        return _FILE_WRITE_LOCKS.setdefault(key, _WriteLock(path))


def _lock_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for ``name``."""
    digest = hashlib.sha256(f"ecm-gateway:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _ms(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


def _claimable(now: datetime):
    c = submissions.c
    return (c.run_state == "queued") | ((c.run_state == "running") & (c.lease_until < now))


def _unfinished_parts():
    """EXISTS a part of the outer submission row that is not done."""
    part = submissions.alias("part")
    return select(part.c.id).where(part.c.parent_id == submissions.c.id,
                                   part.c.channel == SPLIT_CHANNEL,
                                   part.c.run_state != "done").exists()


def _discard_outputs(conn: Connection, submission_id: str) -> None:
    """Findings and documents of an unfinished run (routed copies before what they copy)."""
    d = documents_table.c
    conn.execute(documents_table.delete().where(d.submission_id == submission_id,
                                                d.parent_document.is_not(None)))
    conn.execute(documents_table.delete().where(d.submission_id == submission_id))
    conn.execute(findings_table.delete().where(findings_table.c.submission_id == submission_id))


_TAKE_STATEMENTS: dict[str, object] = {}  # dialect name -> the upsert of _take_numbers


def _take_numbers(conn: Connection, name: str, count: int) -> list[int]:
    """One statement (an upsert returning the new last number): the row lock it takes on
    PostgreSQL, and the write lock ``BEGIN IMMEDIATE`` holds on SQLite, make it atomic."""
    if count < 1:
        return []
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    statement = _TAKE_STATEMENTS.get(conn.dialect.name)
    if statement is None:  # built once per dialect: building it cost more than running it
        c = control_counters.c
        statement = upsert(control_counters).values(name=bindparam("name"),
                                                    value=bindparam("first"))
        statement = statement.on_conflict_do_update(
            index_elements=[c.name], set_={"value": (c.value + bindparam("step", type_=Integer))
                                          % MAX_CONTROL + 1}
        ).returning(c.value)
        _TAKE_STATEMENTS[conn.dialect.name] = statement
    last = conn.execute(statement, {"name": name, "first": (count - 1) % MAX_CONTROL + 1,
                                    "step": count - 1}).scalar_one()
    # the numbers that end at ``last``: (previous last + i) wrapped, as counters.py gives them
    return [(last - 1 - (count - 1 - i)) % MAX_CONTROL + 1 for i in range(count)]


def _adopt_legacy_counters(conn: Connection) -> None:
    """A store that has no counters yet starts where the server's former counter file
    (``<var_dir>/counters.sqlite``) stopped, so an upgraded server does not reuse the control
    numbers it sent before."""
    import sqlite3

    legacy = var_dir() / "counters.sqlite"
    if not legacy.is_file() or conn.execute(
            select(func.count()).select_from(control_counters)).scalar():
        return
    try:
        with closing(sqlite3.connect(f"file:{legacy.resolve()}?mode=ro", uri=True)) as old:
            rows = old.execute("SELECT name, value FROM counters").fetchall()
    except sqlite3.Error:
        return
    rows = [{"name": n, "value": int(v)} for n, v in rows
            if isinstance(n, str) and isinstance(v, int) and 0 < v <= MAX_CONTROL]
    if rows:
        conn.execute(insert(control_counters), rows)


def _add_missing_columns(conn: Connection) -> None:
    """Bring a store made by an earlier version up to date (new nullable columns only; a
    submission of an old store counts as done unless still ``received``)."""
    for table in (findings_table, documents_table):
        present = {col["name"] for col in inspect(conn).get_columns(table.name)}
        for col in table.columns:
            if col.name not in present:
                kind = col.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {col.name} {kind}")
    present = {col["name"] for col in inspect(conn).get_columns("submissions")}
    missing = [col for col in submissions.columns if col.name not in present]
    for col in missing:
        kind = col.type.compile(dialect=conn.dialect)
        default = " NOT NULL DEFAULT 'done'" if col.name == "run_state" else ""
        conn.exec_driver_sql(f"ALTER TABLE submissions ADD COLUMN {col.name} {kind}{default}")
    if any(col.name == "run_state" for col in missing):
        conn.execute(update(submissions).where(submissions.c.status == Status.RECEIVED.value)
                     .values(run_state="queued"))


def _latest_version(conn: Connection, resource_type: str, resource_id: str) -> int:
    """The latest version of a FHIR resource: 1 (its create) unless updates made more."""
    c = fhir_versions.c
    found = conn.execute(select(func.max(c.version)).where(
        c.resource_type == resource_type, c.resource_id == resource_id)).scalar()
    return found or 1


def _exists(conn: Connection, table: Table, row_id: str) -> bool:
    return conn.execute(select(table.c.id).where(table.c.id == row_id)).first() is not None


def _find_original(conn: Connection, partner: str, digest: str, idempotency_key: str | None,
                   x12_key: str | None, since: datetime) -> str | None:
    checks = []
    if idempotency_key is not None:
        checks.append((_ORIGINAL_BY["idempotency_key"], {"key": idempotency_key}))
    # (x12_key is kept for information only: a different interchange reusing a sender's ISA13
    # is not the same submission — gateway.pipeline.controls answers it with a TA1 025)
    checks.append((_ORIGINAL_BY["sha256"], {"key": digest, "since": since}))
    for statement, values in checks:
        found = conn.execute(statement, {"partner": partner, **values}).scalar()
        if found is not None:
            return found
    return None


def _original_by(column: str, recent: bool):
    """The statement finding a partner's first submission with ``column`` = :key (since
    :since when ``recent``), built once: building it per receive cost more than running it."""
    c = submissions.c
    where = [c.partner == bindparam("partner"), c[column] == bindparam("key")]
    if recent:
        where.append(c.created_at >= bindparam("since"))
    return select(c.id).where(*where).order_by(c.created_at, c.id).limit(1)


_ORIGINAL_BY = {"idempotency_key": _original_by("idempotency_key", False),
                "x12_key": _original_by("x12_key", True),
                "sha256": _original_by("sha256", True)}


def _select_submissions():
    return select(*(submissions.c[name] for name in _SUBMISSION_FIELDS))


# the statements of every run, built once (building one cost more than running it):
# claim_next's look for the oldest claimable submission (FOR UPDATE SKIP LOCKED on
# PostgreSQL) and its claim
_CLAIM_NEXT = select(submissions.c.id, submissions.c.started_at).where(
    _claimable(bindparam("now", type_=UTCDateTime))).order_by(
    submissions.c.created_at, submissions.c.id).limit(1)
_CLAIM_NEXT_LOCKED = _CLAIM_NEXT.with_for_update(skip_locked=True)
_CLAIM_ONE = update(submissions).where(submissions.c.id == bindparam("submission_id")).values(
    run_state="running", lease_owner=bindparam("worker"),
    lease_until=bindparam("until", type_=UTCDateTime),
    started_at=bindparam("now", type_=UTCDateTime))
# the run a worker holds (Store.finish)
_RUN_HELD = select(submissions.c.created_at, submissions.c.started_at).where(
    submissions.c.id == bindparam("submission_id"), submissions.c.run_state == "running",
    submissions.c.lease_owner == bindparam("worker"))
# a submission by id (Store.submission, asked for by every run)
_SUBMISSION_BY_ID = _select_submissions().where(submissions.c.id == bindparam("submission_id"))


def _submission_dict(row) -> dict:
    data = dict(row)
    data["summary"] = data["summary"] or {}
    return data


def _select_documents(*extra):
    return select(*(documents_table.c[name] for name in _DOCUMENT_FIELDS), *extra)


_OPEN_CURSORS = "gateway_open_cursors"


def close_cursors_on_return(engine: Engine) -> None:
    """Every DBAPI cursor a pooled connection opened is closed when the connection goes back
    to the pool, before its reset. A result left unread -- its reader raised half-way, e.g. a
    report whose pure code failed on the rows it was fed -- otherwise keeps its cursor alive
    for as long as something holds the exception (its traceback holds the result). On SQLite
    that cursor's statement is a read transaction the pool's rollback does not end (the sqlite3
    module's rollback is a no-op outside BEGIN): the connection, back in the pool, keeps an old
    snapshot, and the next writer that draws it fails at once with ``database is locked``
    (every later registry load, until a restart). Not for a StaticPool's one connection shared
    by threads (another thread's cursor is not ours to close there)."""
    import weakref

    if isinstance(engine.pool, StaticPool):
        return

    @event.listens_for(engine, "before_cursor_execute")
    def _track(conn, cursor, _statement, _parameters, _context, _executemany) -> None:
        cursors = conn.info.get(_OPEN_CURSORS)
        if cursors is None:
            cursors = conn.info[_OPEN_CURSORS] = weakref.WeakSet()
        cursors.add(cursor)

    @event.listens_for(engine, "reset")
    def _close(_dbapi_connection, record, _reset_state) -> None:
        cursors = record.info.get(_OPEN_CURSORS) if record is not None else None
        if not cursors:
            return
        for cursor in list(cursors):
            try:
                cursor.close()
            except Exception:  # noqa: BLE001 - closed already, or its connection gone
                pass
        cursors.clear()


def _sqlite_setup(engine: Engine, *, wal: bool) -> None:
    """Connection pragmas, and SQLAlchemy (not the sqlite3 module) in charge of BEGIN, so a
    write transaction can start with ``BEGIN IMMEDIATE``: it takes the write lock before the
    duplicate check reads, instead of failing with SQLITE_BUSY when it upgrades later."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
