"""The registries the ECM rules read: member assignments (from MIF files), program enrolments,
ECM/CS providers (from a roster), Community Supports authorizations and encounter history - and
the members' data-sharing authorizations providers report back to the plan. Kept in the store
(SQLAlchemy: SQLite by default, PostgreSQL by URL) with indexes, so checking a claim costs
O(lines), not O(registry).

Reads are batched: :meth:`Registry.snapshot` fetches everything a batch of claims needs in a
handful of ``IN (...)`` queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

from sqlalchemy import (
    Boolean, Column, Date, Index, Integer, MetaData, String, Table, create_engine, delete,
    insert, or_, select,
)
from sqlalchemy.engine import Engine

from gateway.periods import within
from gateway.registry import _rows

metadata = MetaData()

assignments = Table(
    "member_assignments", metadata,
    Column("id", Integer, primary_key=True),
    Column("cin", String(9), nullable=False, index=True),
    Column("last_name", String(60)), Column("first_name", String(35)),
    Column("birth_date", Date), Column("pof_codes", String(200)),
    Column("authorization_date", Date), Column("assignment_date", Date),
    Column("benefit_start", Date), Column("benefit_end", Date),
    Column("provider_npi", String(10), index=True), Column("provider_tin", String(9)),
    Column("provider_name", String(120)), Column("lead_care_manager", String(120)),
    Column("source", String(200)),
)
programs = Table(
    "member_programs", metadata,
    Column("id", Integer, primary_key=True),
    Column("cin", String(9), nullable=False, index=True),
    Column("program", String(40), nullable=False),
    Column("start", Date), Column("end", Date),
    Column("county", String(40)),  # the member's county (county-level overlap overrides)
    Column("source", String(200)),
)
# Community Supports authorizations: a benefit of its own (ECM Policy Guide 002:30-31 "some
# Medi-Cal Members will qualify for only ECM or only ILOS"), from a MIF's CS columns or a CS
# authorization file (mappings/layouts/cs-auth/).
cs_authorizations = Table(
    "cs_authorizations", metadata,
    Column("id", Integer, primary_key=True),
    Column("cin", String(9), nullable=False, index=True),
    Column("service", String(40), nullable=False),
    Column("provider_npi", String(10)),
    Column("start", Date), Column("end", Date),
    Column("source", String(200)),
)
# Members' written authorizations to share data, as providers communicate them back to the
# plan (ECM Policy Guide 002:1589-1599 "Communicate Member-level record of written authorization
# to allow data sharing (once obtained) back to the MCP"): from the data-sharing columns of an
# RTF (mappings/layouts/rtf/) and from FHIR Consent (mappings/fhir/consent-to-rtf.yaml), kept
# per plan by source (plan:<plan>:data-sharing:<sender>:<submission>).
data_sharing = Table(
    "data_sharing_authorizations", metadata,
    Column("id", Integer, primary_key=True),
    Column("cin", String(9), nullable=False, index=True),
    Column("authorized", Boolean, nullable=False),  # N: refused, withdrawn or inactive
    Column("authorization_date", Date), Column("scope", String(200)),  # codes, ";"-separated
    Column("expiry", Date),
    Column("provider_npi", String(10)), Column("provider_tin", String(9)),
    Column("provider_name", String(120)),
    Column("reported_on", Date),  # the RTF production date
    Column("source", String(200), index=True),
)
# The ECM lines a trusted provider billed under presumptive authorization (ECM Policy Guide
# 002:1536-1542), one row a member and provider: the period's first day and the latest line.
# The server records them when it checks the provider's submission (source
# ``provider:<id>:submission:<first submission of the replay chain>``): the encounter history
# holds such lines only once the plan sends them to the state, and without them each
# submission would open a new period and a MIF could not re-check them (ECM-MEM-006).
presumptive_lines = Table(
    "presumptive_lines", metadata,
    Column("id", Integer, primary_key=True),
    Column("cin", String(9), nullable=False, index=True),
    Column("billing_npi", String(10), nullable=False),
    Column("first_day", Date, nullable=False), Column("last_day", Date, nullable=False),
    Column("source", String(200), index=True),
)
providers = Table(
    "providers", metadata,
    Column("id", Integer, primary_key=True),
    Column("npi", String(10), nullable=False, index=True),
    Column("tin", String(9)), Column("name", String(120)),
    Column("ecm", Boolean, nullable=False, default=False),
    Column("cs", Boolean, nullable=False, default=False),
    Column("cs_services", String(400)),
    Column("active_from", Date), Column("active_to", Date),
    Column("source", String(200)),
)
history = Table(
    "encounter_history", metadata,
    Column("id", Integer, primary_key=True),
    Column("cin", String(9), nullable=False),  # ix_history_member_day_event serves cin look-ups
    Column("billing_npi", String(10)), Column("rendering_npi", String(10)),
    Column("service_date", Date, nullable=False),
    Column("procedure_code", String(5)), Column("modifiers", String(11)),
    Column("units", String(12)),  # normalised text ("1", "2.5"): compared as the line's
    Column("place_of_service", String(2)),
    Column("claim_id", String(38)), Column("line_number", Integer),
    Column("diagnoses", String(200)),  # ICD-10-CM codes without the dot, ";"-separated
    Column("source", String(200)),
    # a member's lines by day; with place of service and procedure code in the index, the
    # rules' look-ups (a batch's dates, utilization events) filter in the index and read only
    # the lines they keep; with claim id and diagnoses too it COVERS the utilization-event
    # read (Registry.snapshot(event_rows=True): EVENT_ROW), which then never visits the table
    # (a registry made with the earlier four columns is upgraded on open: upgrade_indexes)
    Index("ix_history_member_day_event", "cin", "service_date", "place_of_service",
          "procedure_code", "claim_id", "diagnoses"),
    # the latest service date (latest_history_day: the POF lookback's anchor, read by every
    # EncounterRules) in one index step; without it each rule engine's construction scanned
    # the whole history (0.31 s on 5M lines)
    Index("ix_history_day", "service_date"),
)


def modifier_key(modifiers: Iterable[str]) -> str:
    """Modifiers as one order-free key: ``U8`` + ``GQ`` and ``GQ`` + ``U8`` are the same."""
    return ":".join(sorted(m for m in modifiers if m))


# The registry rows the rules read are named tuples: a batch of claims reads thousands of them,
# and a tuple is built several times faster than a frozen dataclass.
class Assignment(NamedTuple):
    cin: str
    benefit_start: date | None
    benefit_end: date | None
    provider_npi: str
    provider_tin: str
    pof_codes: tuple[str, ...]
    authorization_date: date | None
    birth_date: date | None = None

    def covers(self, day: date) -> bool:
        return within(day, self.benefit_start, self.benefit_end)


class Enrolment(NamedTuple):
    program: str
    start: date | None
    end: date | None
    county: str = ""

    def covers(self, day: date) -> bool:
        return within(day, self.start, self.end)


class CsAuthorization(NamedTuple):
    service: str
    provider_npi: str
    start: date | None
    end: date | None

    def covers(self, day: date) -> bool:
        return within(day, self.start, self.end)


@dataclass(frozen=True)
class DataSharingAuthorization:
    """One member's data-sharing authorization as a provider reported it to a plan."""
    cin: str
    authorized: bool
    authorization_date: date | None
    scope: tuple[str, ...]
    expiry: date | None
    provider_npi: str
    provider_tin: str
    provider_name: str
    reported_on: date | None
    source: str

    def status(self, day: date) -> str:
        """``active`` (authorized, dated on or before ``day``, not expired), ``expired``,
        ``not-yet-effective`` or ``not-authorized`` (refused, withdrawn, inactive)."""
        if not self.authorized:
            return "not-authorized"
        if self.authorization_date is not None and day < self.authorization_date:
            return "not-yet-effective"
        if self.expiry is not None and day > self.expiry:
            return "expired"
        return "active"


class ProviderPeriod(NamedTuple):
    npi: str
    tin: str
    ecm: bool
    cs: bool
    cs_services: frozenset[str]
    active_from: date | None
    active_to: date | None

    def active(self, day: date) -> bool:
        return within(day, self.active_from, self.active_to)


class HistoryLine:
    __slots__ = ("cin", "billing_npi", "service_date", "procedure_code", "modifiers", "units",
                 "place_of_service", "claim_id", "line_number", "diagnoses")

    def __init__(self, cin, billing_npi, service_date, procedure_code, modifiers, units,
                 place_of_service, claim_id, line_number, diagnoses=None) -> None:
        self.cin = cin
        self.billing_npi = billing_npi or ""
        self.service_date = service_date
        self.procedure_code = procedure_code or ""
        self.modifiers = modifiers or ""  # modifier_key
        self.units = units or ""
        self.place_of_service = place_of_service or ""
        self.claim_id = claim_id or ""
        self.line_number = line_number or 0
        self.diagnoses = _codes(diagnoses, tuple)

    @property
    def key(self) -> tuple:
        """What the duplicate check compares."""
        return (self.cin, self.billing_npi, self.service_date, self.procedure_code,
                self.modifiers, self.units)


# which registries hold any row: one EXISTS per table, in one statement (Registry.loaded)
_LOADED_NAMES = ("members", "providers", "history", "cs_authorizations")
_LOADED = select(*(select(table.c.id).exists().label(name) for name, table in zip(
    _LOADED_NAMES, (assignments, providers, history, cs_authorizations))))


@dataclass
class Snapshot:
    """What a batch of claims needs from the registries, keyed for O(1) lookups."""

    assignments: dict[str, list[Assignment]] = field(default_factory=lambda: defaultdict(list))
    enrolments: dict[str, list[Enrolment]] = field(default_factory=lambda: defaultdict(list))
    providers: dict[str, list[ProviderPeriod]] = field(default_factory=lambda: defaultdict(list))
    history: dict[str, list[HistoryLine]] = field(default_factory=lambda: defaultdict(list))
    history_keys: dict[tuple, HistoryLine] = field(default_factory=dict)
    cs_authorizations: dict[str, list[CsAuthorization]] = field(
        default_factory=lambda: defaultdict(list))
    # (cin, billing NPI) -> the first ECM line in the history (presumptive authorization)
    first_ecm_line: dict[tuple[str, str], date] = field(default_factory=dict)
    # ``snapshot(event_rows=True)``: the utilization events of the members asked for, as the
    # database returns them - ``EVENT_ROW`` tuples, not HistoryLine objects (``history`` then
    # holds none of them)
    events: dict[str, list[tuple]] = field(default_factory=dict)


# the columns of an event row (``Snapshot.events``): what the POF evidence reads of a history
# line (gateway/ecm/pof.py turns them into events; the date as the driver returns it)
EVENT_ROW = ("cin", "service_date", "place_of_service", "procedure_code", "claim_id",
             "diagnoses")


class Registry:
    """Registries in a database. ``has_*`` say which were loaded (rules needing a registry
    that was not given are skipped and say so)."""

    def __init__(self, url: str = "sqlite://", engine: Engine | None = None,
                 schema: bool = True) -> None:
        """``engine``: share an existing engine (e.g. the gateway store's, so an in-memory
        store and its registries are one database) instead of opening ``url``. ``schema``
        False: the database is one a Registry has set up already (the ECM rules' worker
        opening its caller's registry, gateway/ecm/pipelined.py): its tables and indexes are
        not checked again (≈ 1-5 ms of a freshly forked process's start)."""
        self.engine: Engine = engine if engine is not None else create_engine(url, future=True)
        self.memory_file: str | None = None  # see :meth:`in_memory_file`
        if schema:
            metadata.create_all(self.engine)
            upgrade_indexes(self.engine)

    @classmethod
    def in_memory_file(cls) -> Registry:
        """A registry held in memory that another process can open too (the command line's):
        a SQLite file in a private folder (mode 0700) on the memory file system
        (``/dev/shm``; elsewhere the temporary folder), removed when the registry goes or the
        process ends. A process killed outright (SIGKILL, SIGTERM) cannot remove it: the next
        one sweeps the folders whose process is gone (:func:`_sweep_memory_files`), so member
        data does not stay in memory files after a crash longer than until the next run. A forked worker (gateway/ecm/pipelined.py) opens it by its path with a
        connection of its own: no copy of the database, no connection used on both sides of
        the fork. (Not an anonymous memory file: SQLite resolves ``/proc/self/fd/N`` to the
        file's name and would open that instead.)"""
        import os
        import tempfile
        import weakref

        shm = "/dev/shm"
        where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
        _sweep_memory_files(where)
        folder = tempfile.mkdtemp(prefix=f"{MEMORY_FILE_PREFIX}{os.getpid()}-", dir=where)
        path = os.path.join(folder, "registry.sqlite")
        try:
            registry = cls(engine=memory_file_engine(path))
        except BaseException:
            _remove_memory_file(None, folder, os.getpid())
            raise
        registry.memory_file = path
        weakref.finalize(registry, _remove_memory_file, registry.engine, folder, os.getpid())
        return registry

    # -- loading ---------------------------------------------------------------------------------
    def _load(self, table: Table, rows: Iterable[dict], replace_source: str | None) -> int:
        count = 0
        with self.engine.begin() as conn:
            if replace_source is not None:
                conn.execute(delete(table).where(table.c.source == replace_source))
            batch: list[dict] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= 5000:
                    conn.execute(insert(table), batch)
                    count += len(batch)
                    batch = []
            if batch:
                conn.execute(insert(table), batch)
                count += len(batch)
        return count

    def load_members(self, rows: Iterable[dict], source: str) -> int:
        """Typed MIF rows (canonical field names of ``mappings/layouts/mif``)."""
        member_rows, program_rows, cs_rows = [], [], []
        for row in rows:
            member_rows.append({
                "cin": row["member_cin"], "last_name": row.get("member_last_name"),
                "first_name": row.get("member_first_name"),
                "birth_date": row.get("member_birth_date"),
                "pof_codes": ";".join(row.get("pof_codes") or []),
                "authorization_date": row.get("authorization_date"),
                "assignment_date": row.get("assignment_date"),
                "benefit_start": row.get("ecm_benefit_start"),
                "benefit_end": row.get("ecm_benefit_end"),
                "provider_npi": row.get("ecm_provider_npi") or "",
                "provider_tin": row.get("ecm_provider_tin") or "",
                "provider_name": row.get("ecm_provider_name"),
                "lead_care_manager": row.get("lead_care_manager_name"), "source": source,
            })
            if row.get("other_program"):
                program_rows.append({"cin": row["member_cin"], "program": row["other_program"],
                                     "start": row.get("other_program_start"),
                                     "end": row.get("other_program_end"),
                                     "county": row.get("member_county") or None,
                                     "source": source})
            if row.get("cs_service"):
                cs_rows.append(cs_row(row, source))
        # a member with two programs has two MIF rows: keep one assignment per period
        unique = {(r["cin"], r["benefit_start"], r["provider_npi"]): r for r in member_rows}
        self._load(programs, program_rows, source)
        unique_cs = {(r["cin"], r["service"], r["start"], r["provider_npi"]): r for r in cs_rows}
        self._load(cs_authorizations, unique_cs.values(), source)
        return self._load(assignments, (r for r in unique.values()
                                        if r["benefit_start"] or r["provider_npi"]), source)

    def load_cs_authorizations(self, rows: Iterable[dict], source: str) -> int:
        """Typed rows of a CS authorization file (``mappings/layouts/cs-auth``)."""
        return self._load(cs_authorizations, (cs_row(r, source) for r in rows), source)

    def replace_presumptive(self, rows: Iterable[dict], source: str) -> int:
        """The presumptive periods of one submission (``cin``, ``billing_npi``, ``first_day``,
        ``last_day``: :meth:`~gateway.ecm.rules.EncounterRules.presumptive_lines`), replacing
        ``source`` (a re-run or replay of it)."""
        return self._load(presumptive_lines, ({**row, "source": source} for row in rows),
                          source)

    def presumptive_periods(self, cins: Iterable[str], npis: Iterable[str],
                            codes: Iterable[str]) -> dict[tuple[str, str], tuple[date, date]]:
        """(member, provider) -> (first line, latest line) of the ECM lines (procedure
        ``codes``) the providers ``npis`` billed for ``cins``: the encounter history and the
        recorded presumptive lines together (the re-check of a MIF, ECM-MEM-006)."""
        from sqlalchemy import func

        wanted, providers_wanted = sorted(set(cins)), sorted(set(npis))
        codes = sorted(set(codes))
        found: dict[tuple[str, str], tuple[date, date]] = {}
        h, p = history.c, presumptive_lines.c
        with self.engine.connect() as conn:
            for chunk in _chunks(wanted, 500):
                for query in (
                        select(h.cin, h.billing_npi, func.min(h.service_date),
                               func.max(h.service_date))
                        .where(h.cin.in_(chunk), h.procedure_code.in_(codes),
                               h.billing_npi.in_(providers_wanted))
                        .group_by(h.cin, h.billing_npi),
                        select(p.cin, p.billing_npi, func.min(p.first_day), func.max(p.last_day))
                        .where(p.cin.in_(chunk), p.billing_npi.in_(providers_wanted))
                        .group_by(p.cin, p.billing_npi)):
                    for cin, npi, first, last in conn.execute(query):
                        known = found.get((cin, npi))
                        if known is not None:
                            first, last = min(first, known[0]), max(last, known[1])
                        found[(cin, npi)] = (first, last)
        return found

    def load_data_sharing(self, rows: Iterable[dict], source: str) -> int:
        """Typed RTF rows (canonical names of ``mappings/layouts/rtf``) carrying a data-sharing
        authorization (``data_sharing_authorization`` given), replacing ``source``; rows
        without one are not authorizations and are skipped."""
        return self._load(data_sharing, (data_sharing_row(r, source) for r in rows
                                         if r.get("data_sharing_authorization") is not None),
                          source)

    def data_sharing(self, cins: Iterable[str] | None = None, source_prefix: str | None = None
                     ) -> list[DataSharingAuthorization]:
        """The data-sharing authorizations of ``cins`` (all when None) under sources starting
        with ``source_prefix`` (e.g. one plan's), newest authorization first per member."""
        c = data_sharing.c
        query = select(data_sharing)
        if source_prefix is not None:
            query = query.where(c.source.like(f"{source_prefix}%"))
        found: list[DataSharingAuthorization] = []
        with self.engine.connect() as conn:
            wanted = None if cins is None else sorted(set(cins))
            for chunk in [None] if wanted is None else _chunks(wanted):
                q = query if chunk is None else query.where(c.cin.in_(chunk))
                for r in conn.execute(q):
                    found.append(DataSharingAuthorization(
                        cin=r.cin, authorized=bool(r.authorized),
                        authorization_date=r.authorization_date,
                        scope=tuple(x for x in (r.scope or "").split(";") if x),
                        expiry=r.expiry, provider_npi=r.provider_npi or "",
                        provider_tin=r.provider_tin or "", provider_name=r.provider_name or "",
                        reported_on=r.reported_on, source=r.source or ""))
        found.sort(key=lambda a: (a.cin, -(a.authorization_date or date.min).toordinal(),
                                  -(a.reported_on or date.min).toordinal(), a.source))
        return found

    def load_providers(self, rows: Iterable[dict], source: str) -> int:
        return self._load(providers, ({
            "npi": r["provider_npi"], "tin": r.get("provider_tin") or "",
            "name": r.get("provider_name"), "ecm": bool(r.get("ecm")), "cs": bool(r.get("cs")),
            "cs_services": ";".join(r.get("cs_services") or []),
            "active_from": r.get("active_from"), "active_to": r.get("active_to"),
            "source": source} for r in rows), source)

    HISTORY_COLUMNS = ("cin", "billing_npi", "rendering_npi", "service_date", "procedure_code",
                       "modifiers", "units", "place_of_service", "claim_id", "line_number",
                       "diagnoses")

    BULK_BATCH = 10_000  # rows per executemany; also the size that makes a load "bulk"
    REBUILD_BELOW = 2_000_000  # SQLite: rebuild indexes after a bulk load into fewer rows

    def load_history_tuples(self, rows: Iterable[tuple], source: str) -> int:
        """History lines as tuples in :attr:`HISTORY_COLUMNS` order (units already as
        :func:`units_text`), replacing ``source``: the bulk path (a plan's claims extract of
        millions of lines), in one transaction, in bounded memory. An exception raised by
        ``rows`` rolls everything back (the registry stays as it was).

        PostgreSQL: ``COPY ... FROM STDIN``. SQLite: executemany of one prepared INSERT in
        batches of :attr:`BULK_BATCH`; when the load is bulk (more than one batch) and the
        table holds fewer than :attr:`REBUILD_BELOW` other lines, the history indexes are
        dropped and built once after the insert (a sort, instead of millions of random index
        inserts) - inside the same transaction, so a rollback brings them back too. SQLite's
        own small page cache is kept (a 64-256 MB one bought nothing measurable on 5M lines
        and cost its size in memory)."""
        rows = iter(rows)
        with self.engine.begin() as conn:
            conn.execute(delete(history).where(history.c.source == source))
            if self.engine.dialect.name == "postgresql":
                return _copy_history(conn, rows, source)
            return self._insert_history(conn, rows, source)

    def _insert_history(self, conn, rows, source: str) -> int:
        dialect = self.engine.dialect
        columns = (*self.HISTORY_COLUMNS, "source")
        marks = {"qmark": "?", "numeric": ":{n}", "named": ":{name}", "format": "%s",
                 "pyformat": "%s"}[dialect.paramstyle]
        values = ", ".join(marks.format(n=i + 1, name=c) for i, c in enumerate(columns))
        sql = f"INSERT INTO {history.name} ({', '.join(columns)}) VALUES ({values})"
        convert = [history.c[c].type.bind_processor(dialect) for c in columns]
        convert = [(i, f) for i, f in enumerate(convert) if f is not None]
        if dialect.paramstyle == "named":
            def shape(row):
                return dict(zip(columns, row, strict=True))
        else:
            shape = tuple
        sqlite = dialect.name == "sqlite"
        dropped: list[Index] = []
        count = 0
        batch = []
        for row in rows:
            row = [*row, source]
            for i, f in convert:
                row[i] = f(row[i])
            batch.append(shape(row))
            if len(batch) >= self.BULK_BATCH:
                if count == 0 and sqlite:
                    dropped = _drop_history_indexes(conn, self.REBUILD_BELOW)
                conn.exec_driver_sql(sql, batch)
                count += len(batch)
                batch = []
        if batch:
            conn.exec_driver_sql(sql, batch)
            count += len(batch)
        for index in dropped:
            index.create(conn)
        return count

    def load_history(self, rows: Iterable[dict], source: str) -> int:
        """Rows with keys of the ``encounter_history`` table (modifiers as modifier_key)."""
        return self._load(history, ({**r, "units": units_text(r.get("units")),
                                     "source": source} for r in rows), source)

    # -- reading ---------------------------------------------------------------------------------
    def snapshot(self, cins: set[str], npis: set[str], days: tuple[date, date] | None = None,
                 events: tuple[frozenset, frozenset] = (frozenset(), frozenset()),
                 ecm_codes: frozenset[str] = frozenset(), event_members=None,
                 event_rows: bool = False, cs_authorizations: bool = True) -> Snapshot:
        """Registry rows for a batch, in one query per table per chunk of members (plain
        DB-API cursors: the rows are read as tuples, not through SQLAlchemy's row objects).
        History is narrowed to what the rules compare: lines on the batch's service dates
        ``days`` (duplicates: ``history_keys``, and ``history``) and utilization events
        (places of service / procedure codes in ``events``) for the POF evidence
        (``history``) - the latter only for the members ``event_members(cin, assignments)``
        accepts, when given (e.g. those whose POF evidence is still to be checked).

        ``event_rows``: those utilization events go to ``events`` as plain rows of the
        :data:`EVENT_ROW` columns (all of them, whatever their date; the rules' POF evidence
        reads them, gateway/ecm/pof.py), and the lines on the batch's dates only to
        ``history_keys``; ``history`` stays empty. ``cs_authorizations=False``: that table
        is not read (the caller knows it is empty)."""
        snap = Snapshot()
        if not cins and not npis:
            return snap
        day = _DayReader(self.engine.dialect.name == "sqlite")
        with self.engine.connect() as conn:
            marks = _Marks(self.engine.dialect.paramstyle,
                           binary=self.engine.dialect.name == "sqlite")
            cursor = conn.connection.cursor()
            try:
                for chunk in _chunks(sorted(cins), 999):
                    self._read_members(cursor, marks, chunk, day, snap, cs_authorizations)
                    wanted = chunk if event_members is None else \
                        _rows.accepted(chunk, snap.assignments, event_members)
                    if event_rows:
                        self._read_event_rows(cursor, marks, chunk, wanted, days, events, day,
                                              snap)
                    else:
                        self._read_history_rows(cursor, marks, chunk, wanted, days, events,
                                                day, snap)
                    if not ecm_codes:
                        continue
                    unassigned = [c for c in chunk if c not in snap.assignments]
                    if unassigned:
                        self._first_ecm_lines(conn, unassigned, ecm_codes, snap)
                for chunk in _chunks(sorted(npis), 999):
                    cursor.execute(
                        "SELECT npi, tin, ecm, cs, cs_services, active_from, active_to FROM "
                        f"providers WHERE npi IN ({marks(len(chunk))})", marks.params(chunk))
                    for npi, tin, ecm, cs, services, start, end in cursor.fetchall():
                        snap.providers[npi].append(ProviderPeriod(
                            npi, tin or "", bool(ecm), bool(cs), _codes(services, frozenset),
                            day(start), day(end)))
            finally:
                cursor.close()
        return snap

    @staticmethod
    def _read_members(cursor, marks, chunk: list[str], day, snap: Snapshot,
                      cs_authorizations: bool = True) -> None:
        inside = marks(len(chunk))
        params = marks.params(chunk)
        cursor.execute("SELECT cin, benefit_start, benefit_end, provider_npi, provider_tin, "
                       "pof_codes, authorization_date, birth_date FROM member_assignments "
                       f"WHERE cin IN ({inside})", params)
        _rows.assignments_into(snap.assignments, cursor.fetchall(), day.dates, CODE_TUPLES,
                               Assignment)
        cursor.execute(f"SELECT cin, program, start, \"end\", county FROM member_programs "
                       f"WHERE cin IN ({inside})", params)
        _rows.enrolments_into(snap.enrolments, cursor.fetchall(), day.dates, Enrolment)
        if not cs_authorizations:
            return
        cursor.execute(f"SELECT cin, service, provider_npi, start, \"end\" FROM "
                       f"cs_authorizations WHERE cin IN ({inside})", params)
        for cin, service, npi, start, end in cursor.fetchall():
            snap.cs_authorizations[cin].append(CsAuthorization(service, npi or "", day(start),
                                                               day(end)))

    @staticmethod
    def _read_history_rows(cursor, marks, chunk: list[str], wanted: list[str], days, events,
                           day, snap: Snapshot) -> None:
        """History lines on the batch's dates (for ``history_keys``) and the utilization
        events of the ``wanted`` members (for ``history``)."""
        columns = ("cin, billing_npi, service_date, procedure_code, modifiers, units, "
                   "place_of_service, claim_id, line_number, diagnoses")
        keys = snap.history_keys
        if days is not None:
            cursor.execute(f"SELECT {columns} FROM encounter_history WHERE "
                           f"{_on_days(marks, chunk)}", _on_days_params(marks, chunk, days, day))
            history_of = snap.history
            for row in cursor.fetchall():
                line = HistoryLine(row[0], row[1], day(row[2]), *row[3:])
                history_of[line.cin].append(line)
                keys.setdefault(line.key, line)
        if not wanted or not (events[0] or events[1]):
            return
        where, values = _events_of(marks, wanted, events)
        cursor.execute(f"SELECT {columns} FROM encounter_history WHERE {where}",
                       marks.params(values))
        history_of = snap.history
        for row in cursor.fetchall():
            line = HistoryLine(row[0], row[1], day(row[2]), *row[3:])
            if days is None:
                keys.setdefault(line.key, line)
            elif days[0] <= line.service_date <= days[1]:
                continue  # read with the batch's dates already
            history_of[line.cin].append(line)

    @staticmethod
    def _read_event_rows(cursor, marks, chunk: list[str], wanted: list[str], days, events,
                         day, snap: Snapshot) -> None:
        """:meth:`_read_history_rows` for ``snapshot(event_rows=True)``: the lines on the
        batch's dates as HistoryLine objects in ``history_keys`` only (the duplicate check
        reads a few), the utilization events of the ``wanted`` members as plain
        :data:`EVENT_ROW` tuples in ``events`` (thousands a batch: no object each, only the
        columns the POF evidence reads)."""
        keys = snap.history_keys
        if days is not None:
            cursor.execute("SELECT cin, billing_npi, service_date, procedure_code, modifiers, "
                           "units, claim_id, line_number FROM encounter_history WHERE "
                           f"{_on_days(marks, chunk)}", _on_days_params(marks, chunk, days, day))
            for cin, npi, served, code, modifiers, units, claim, number in cursor.fetchall():
                line = HistoryLine(cin, npi, day(served), code, modifiers, units, None, claim,
                                   number)
                keys.setdefault(line.key, line)
        if not wanted or not (events[0] or events[1]):
            return
        where, values = _events_of(marks, wanted, events)
        cursor.execute(f"SELECT {', '.join(EVENT_ROW)} FROM encounter_history WHERE {where}",
                       marks.params(values))
        _rows.events_into(snap.events, cursor.fetchall())

    def loaded(self) -> dict[str, bool]:
        """Which registries hold any row (one statement: a routing run asks every time)."""
        with self.engine.connect() as conn:
            row = conn.execute(_LOADED).one()
        return {name: bool(value) for name, value in zip(_LOADED_NAMES, row)}

    def assignments_of(self, cins: Iterable[str] | None = None) -> dict[str, list[Assignment]]:
        """The assignments of ``cins`` (every member's when None), by member."""
        out: dict[str, list[Assignment]] = defaultdict(list)
        a = assignments.c
        query = select(a.cin, a.benefit_start, a.benefit_end, a.provider_npi, a.provider_tin,
                       a.pof_codes, a.authorization_date, a.birth_date)
        wanted = None if cins is None else sorted(set(cins))
        with self.engine.connect() as conn:
            for chunk in [None] if wanted is None else _chunks(wanted, 5000):
                q = query if chunk is None else query.where(a.cin.in_(chunk))
                for cin, start, end, npi, tin, pofs, auth, birth in conn.execute(q):
                    out[cin].append(Assignment(
                        cin=cin, benefit_start=start, benefit_end=end, provider_npi=npi or "",
                        provider_tin=tin or "",
                        pof_codes=tuple(c for c in (pofs or "").split(";") if c),
                        authorization_date=auth, birth_date=birth))
        return out

    def utilization_lines(self, events: tuple[frozenset, frozenset]):
        """Every history line that is a utilization event (place of service or procedure code
        in ``events``), grouped by member: ``(cin, [HistoryLine, ...])`` in CIN order, in one
        pass over the table (read in storage order and sorted by the database, not looked up
        member by member), streamed - one member's lines in memory at a time."""
        places, codes = events
        c = history.c
        wanted = []
        if places:
            wanted.append(c.place_of_service.in_(sorted(places)))
        if codes:
            wanted.append(c.procedure_code.in_(sorted(codes)))
        if not wanted:
            return
        query = (select(c.cin, c.billing_npi, c.service_date, c.procedure_code, c.modifiers,
                        c.units, c.place_of_service, c.claim_id, c.line_number, c.diagnoses)
                 .where(or_(*wanted))
                 # ``cin || ''``: sorted as a whole, not walked through the member index
                 .order_by(c.cin.concat("")))
        current, lines = None, []
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10_000) \
                .execute(query)
            for row in result:
                if row[0] != current:
                    if current is not None:
                        yield current, lines
                    current, lines = row[0], []
                lines.append(HistoryLine(*row))
        if current is not None:
            yield current, lines

    def latest_history_day(self) -> date | None:
        """The most recent service date in the history (the latest month of adjudicated
        claims the POF lookback is anchored on)."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(select(func.max(history.c.service_date))).scalar()

    @staticmethod
    def _first_ecm_lines(conn, cins: list[str], codes: frozenset[str], snap: Snapshot) -> None:
        """The first ECM line (procedure code in ``codes``) per member and billing provider,
        for members without an assignment (the start of a presumptive period): in the history
        and in the presumptive lines recorded from earlier submissions."""
        from sqlalchemy import func

        c = history.c
        query = (select(c.cin, c.billing_npi, func.min(c.service_date))
                 .where(c.cin.in_(cins), c.procedure_code.in_(sorted(codes)))
                 .group_by(c.cin, c.billing_npi))
        p = presumptive_lines.c
        recorded = (select(p.cin, p.billing_npi, func.min(p.first_day))
                    .where(p.cin.in_(cins)).group_by(p.cin, p.billing_npi))
        for query in (query, recorded):
            for cin, npi, first in conn.execute(query):
                key = (cin, npi or "")
                known = snap.first_ecm_line.get(key)
                if known is None or first < known:
                    snap.first_ecm_line[key] = first


_UPGRADE_LOCK = 0x45434D49  # PostgreSQL advisory lock: one process upgrades the indexes


def upgrade_indexes(engine: Engine) -> None:
    """The registry's schema upgrade for indexes (``create_all`` makes missing tables, never
    an index of a table that exists, nor alters one): an index of the history table that is
    missing or whose columns differ from its declaration is built as declared - once, on the
    first open of a registry made before the change (on a big history that open takes the
    index's build time). In one transaction (PostgreSQL: under an advisory lock, so processes
    starting together upgrade once); a failure leaves the old index (the queries are the same,
    only slower)."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    def stale(conn) -> list[Index]:
        found = {i["name"]: list(i["column_names"])
                 for i in inspect(conn).get_indexes(history.name)}
        return [index for index in history.indexes
                if found.get(index.name) != [c.name for c in index.columns]]

    with engine.connect() as conn:
        if not stale(conn):
            return
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": _UPGRADE_LOCK})
            for index in stale(conn):
                conn.execute(text(f'DROP INDEX IF EXISTS "{index.name}"'))
                index.create(conn)
    except DBAPIError:  # (e.g. a read-only database): the old index serves, more slowly
        pass


def _drop_history_indexes(conn, below: int) -> list[Index]:
    """SQLite, at the start of a bulk load: drop the history table's indexes when it holds
    fewer than ``below`` lines (they are rebuilt after the insert); returns the indexes to
    build again (the table's, as declared)."""
    if conn.execute(select(history.c.id).limit(1).offset(below)).first() is not None:
        return []
    names = [name for (name,) in conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL", (history.name,))]
    for name in names:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    return sorted(history.indexes, key=lambda i: i.name)


def _copy_history(conn, rows, source: str) -> int:
    """PostgreSQL: the rows through ``COPY ... FROM STDIN`` on the transaction's connection
    (psycopg 3), streamed."""
    columns = (*Registry.HISTORY_COLUMNS, "source")
    raw = conn.connection.driver_connection
    count = 0
    with raw.cursor() as cursor, cursor.copy(
            f"COPY {history.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row((*row, source))
            count += 1
    return count


def cs_row(row: dict, source: str) -> dict:
    """A CS authorization row of the registry from typed MIF / CS-authorization columns."""
    return {"cin": row["member_cin"], "service": row["cs_service"],
            "provider_npi": row.get("cs_provider_npi") or None,
            "start": row.get("cs_authorization_start"), "end": row.get("cs_authorization_end"),
            "source": source}


def data_sharing_row(row: dict, source: str) -> dict:
    """A data-sharing authorization row of the registry from typed RTF columns."""
    scope = row.get("data_sharing_scope") or []
    return {"cin": row["member_cin"], "authorized": bool(row["data_sharing_authorization"]),
            "authorization_date": row.get("data_sharing_authorization_date"),
            "scope": ";".join(scope if isinstance(scope, (list, tuple)) else [scope])[:200],
            "expiry": row.get("data_sharing_expiry"),
            "provider_npi": row.get("ecm_provider_npi") or None,
            "provider_tin": row.get("ecm_provider_tin") or None,
            "provider_name": row.get("ecm_provider_name") or None,
            "reported_on": row.get("rtf_production_date"), "source": source}


def diagnosis_key(codes: Iterable[str]) -> str:
    """Diagnoses as stored: ICD-10-CM without the dot, upper case, ";"-separated."""
    return ";".join(dict.fromkeys(c.replace(".", "").strip().upper() for c in codes
                                  if c and c.strip()))[:200]


def units_text(value) -> str:
    """Units as compared by the duplicate check: no exponent, no trailing zeros."""
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else (
        repr(value) if isinstance(value, float) else format(value, "f"))
    return text.rstrip("0").rstrip(".") if "." in text else text


def _chunks(values: list[str], size: int = 500):
    for start in range(0, len(values), size):
        yield values[start:start + size]


class _Marks:
    """Bind-parameter markers of a DB-API paramstyle: ``marks(3)`` → ``?, ?, ?`` (SQLite) or
    ``%s, %s, %s`` (psycopg); ``marks(n, first)``: numbered styles start after ``first``."""

    def __init__(self, paramstyle: str, binary: bool = False) -> None:
        self.style = paramstyle
        # text compared as Python compares str (SQLite's BINARY collation: UTF-8 bytes, in
        # code point order); a database's locale collation may order codes otherwise
        self.binary = binary

    def __call__(self, count: int, first: int = 0) -> str:
        style = self.style
        if style == "qmark":
            return ", ".join("?" * count)
        if style in ("format", "pyformat"):
            return ", ".join(["%s"] * count)
        if style == "numeric":
            return ", ".join(f":{first + i + 1}" for i in range(count))
        return ", ".join(f":p{first + i}" for i in range(count))  # named

    def params(self, values: list):
        if self.style == "named":
            return {f"p{i}": v for i, v in enumerate(values)}
        return values


def memory_file_engine(path: str) -> Engine:
    """An engine on the SQLite file of :meth:`Registry.in_memory_file`: the rollback journal in
    memory, no syncs (nothing there is to outlive the process), reads mapped rather than copied
    page by page."""
    from sqlalchemy import event

    engine = create_engine(f"sqlite:///{path}", future=True)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=MEMORY")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA mmap_size=1073741824")
        finally:
            cursor.close()

    return engine


MEMORY_FILE_PREFIX = "ecm-registry-"  # + the owning process id + "-" + random


def _sweep_memory_files(where: str) -> None:
    """Remove the folders :meth:`Registry.in_memory_file` made in ``where`` for processes of
    this user that no longer run (killed before their clean-up could run)."""
    import os
    import shutil

    try:
        names = os.listdir(where)
    except OSError:
        return
    uid = os.getuid()
    for name in names:
        if not name.startswith(MEMORY_FILE_PREFIX):
            continue
        pid = name[len(MEMORY_FILE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        folder = os.path.join(where, name)
        try:
            if os.lstat(folder).st_uid != uid or not os.path.isdir(folder) or \
                    os.path.islink(folder):
                continue
            os.kill(int(pid), 0)  # still running (or another user's): keep it
            continue
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, OverflowError, ValueError):
            continue


def _remove_memory_file(engine: Engine | None, folder: str, owner: int) -> None:
    """Remove the folder of :meth:`Registry.in_memory_file` (only in the process that made it:
    never in a forked worker)."""
    import os
    import shutil

    if os.getpid() != owner:
        return
    if engine is not None:
        engine.dispose()
    shutil.rmtree(folder, ignore_errors=True)


def _on_days(marks, chunk: list[str]) -> str:
    """The WHERE of a batch's history lines: its members' lines on its service dates (the
    parameters: :func:`_on_days_params`)."""
    return (f"cin IN ({marks(len(chunk))}) AND service_date >= {marks(1, len(chunk))} "
            f"AND service_date <= {marks(1, len(chunk) + 1)}")


def _on_days_params(marks, chunk: list[str], days: tuple[date, date], day):
    return marks.params([*chunk, day.text(days[0]), day.text(days[1])])


def _events_of(marks, wanted: list[str], events: tuple[frozenset, frozenset]):
    """The WHERE of the ``wanted`` members' utilization events (places of service or
    procedure codes in ``events``), and its values (before ``marks.params``)."""
    where = []
    values: list = list(wanted)
    for column, wanted_values in zip(("place_of_service", "procedure_code"), events):
        if not wanted_values:
            continue
        ordered = sorted(wanted_values)
        test = ""
        if marks.binary and len(ordered) > 2:
            # first the range the values span: most of a member's lines (office visits, ECM
            # codes) fail that one comparison before the IN list's look-up (the event read
            # 31 -> 25 ms a 10k-claim file); only where the database orders text as Python
            test = f"{column} BETWEEN {marks(1, len(values))} AND " \
                f"{marks(1, len(values) + 1)} AND "
            values.extend((ordered[0], ordered[-1]))
        where.append(f"({test}{column} IN ({marks(len(ordered), len(values))}))")
        values.extend(ordered)
    return f"cin IN ({marks(len(wanted))}) AND ({' OR '.join(where)})", values


class _DayReader:
    """Dates as the driver returns them (SQLite: ISO text; PostgreSQL: dates): ``day(value)``
    (None reads as None), memoised in :data:`DATES` (``dates``: the row loops of
    gateway/registry/_rows.py look them up there themselves)."""

    __slots__ = ("_as_text", "dates")

    def __init__(self, as_text: bool) -> None:
        self._as_text = as_text
        self.dates = DATES

    def __call__(self, value):
        return _rows.day_of(DATES, value)

    def text(self, value: date):
        """A date as a bind parameter compared with the stored dates (SQLite keeps them as
        ISO text, as SQLAlchemy's Date writes them)."""
        return value.isoformat() if self._as_text else value


# the registry's memos for the process (one home; plain dictionaries read with ``get``: see
# gateway/registry/_rows.py, whose day_of / codes_of fill them): dates as the driver returns
# them → dates, ``"a;b"`` code texts (POF codes, diagnoses) → tuples. gateway/ecm/pof.py reads
# the event rows' dates and diagnoses through them too.
DATES: dict = {}
CODE_TUPLES: dict = {}


_CODES: dict[tuple[str, type], tuple | frozenset] = {}


def _codes(text: str | None, kind: type):
    """``a;b`` → ``kind(("a", "b"))``, memoised (a registry repeats few combinations)."""
    key = (text or "", kind)
    found = _CODES.get(key)
    if found is None:
        if len(_CODES) > 4096:
            _CODES.clear()
        found = _CODES[key] = kind(c for c in (text or "").split(";") if c)
    return found
