"""One pass over an X12 file: envelope checks, implementation-guide validation through pyx12,
and (for 837) the claims, all fed from the same streaming reader."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from typing import TYPE_CHECKING
from gateway.findings import Finding, Severity
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.x12.claims837 import (
    ClaimCollector, ClaimRecord, RulesSpansCollector, counted_only, rule_entries,
)
from gateway.x12.envelope import EnvelopeChecker, Interchange, envelope_profile, feed_all
from gateway.x12.reader import CHUNK_CHARS, Delimiters, X12Reader

ENGINES = ("native", "pyx12")
DEFAULT_ENGINE = "native"


def guide_validator(engine: str, delimiters: Delimiters, envelope: EnvelopeChecker,
                    catalogue: RuleCatalogue, snip: bool = True):
    """The implementation-guide validator: our native engine (default) or the pyx12 adapter
    (the test oracle, ``--engine pyx12``). pyx12 is imported only when asked for."""
    if engine == "pyx12":
        from gateway.x12.ig import GuideValidator

        return GuideValidator(delimiters, envelope, catalogue)
    if engine != "native":
        raise ValueError(f"unknown X12 engine {engine!r}; expected one of {', '.join(ENGINES)}")
    from gateway.x12.engine import NativeGuideValidator

    return NativeGuideValidator(delimiters, envelope, catalogue, snip=snip)


RULE_BATCH = 1000  # claims per registry look-up batch
# claims per batch to the ECM rules' worker near the end of the input (NEAR_END_BYTES left to
# read), if the worker is keeping up: the batch it checks after the caller is done (the tail,
# added to the wall time) is then this small, not a whole batch. Not much smaller: a batch
# costs the worker a fixed ≈ 0.25 ms (its registry reads) besides ≈ 12 µs a claim, against the
# caller's ≈ 17 µs a claim, and with batches of 50 it fell behind at each. At 10k claims,
# LAST_BATCHES 50 (from the last byte), 100 and 150 (from NEAR_END_BYTES): overhead, fastest of
# 10 interleaved runs, 4 rounds each, 19.5 / 19.1 / 17.1% (medians; the machine's noise ±3)
NEAR_END_BYTES = 2 * CHUNK_CHARS  # (the reader reads CHUNK_CHARS bytes at a time)
LAST_BATCHES = 150
# the claims read light go to the ECM rules' worker as text rows (cheapest for the caller; the
# worker views them) while it is at most this many batches behind, as views (cheapest for the
# worker) beyond: the two processes' loads balanced. One batch behind is not idle: the worker
# has the next batch queued; at 1 a worker taking as long per batch as the caller was "behind"
# half the time and half the claims went as views (caller 3.5 us a claim against 1.1)
TEXT_LAG = 2
# claims in the first batch to the ECM rules' worker: it waits idle for its first batch, and the
# caller reads a small one sooner (the worker then starts about when the caller has read 50
# claims, not 300: at 10k claims, where the worker is the longer side, its whole run shifts
# earlier by the ~4 ms the caller takes to read the other 250)
FIRST_BATCH = 50


if TYPE_CHECKING:  # the ECM rules (and the registry store behind them) load only when used
    from gateway.ecm.rules import ClaimPlace, EncounterRules


def claim_place(claim: ClaimRecord) -> "ClaimPlace":
    """Where an 837P claim's parts are, in the location scheme of the X12 findings (the paths
    are formatted when a finding asks for them: most claims have none)."""
    return _X12Place(claim)


def _set_path(transaction: tuple) -> str:
    i, g, t = transaction
    return f"ISA#{i}/GS#{g}/ST#{t}"


# the location scheme of a claim's parts (the one home: :class:`_X12Place` reads them from a
# claim, :class:`_RowPlace` from a shipped row, both through these)
def _claim_path(transaction: tuple, index: int) -> str:
    return f"{_set_path(transaction)}/2300[{index}]"


def _member_path(transaction: tuple, subscriber_index: int) -> str:
    return f"{_set_path(transaction)}/2010BA[{subscriber_index}]/NM109"


def _line_paths(transaction: tuple, line_refs) -> list[str]:
    ts = _set_path(transaction)
    return [f"{ts}/2400[{number}]/SV101-2" for _, number in line_refs]


def _label(claim_id: str) -> str:
    return f"claim {claim_id}"


class _X12Place:
    """A :class:`~gateway.ecm.rules.ClaimPlace` of an 837P claim, read on use (the location
    scheme: the ``_*_path`` functions above; :class:`_RowPlace` reads the same parts from a
    shipped row)."""

    __slots__ = ("_claim",)

    def __init__(self, claim: ClaimRecord) -> None:
        self._claim = claim

    @property
    def claim(self) -> str:
        c = self._claim
        return _claim_path(c.transaction, c.index)

    @property
    def member(self) -> str:
        c = self._claim
        return _member_path(c.transaction, c.subscriber_index)

    @property
    def lines(self) -> list[str]:
        c = self._claim
        return _line_paths(c.transaction, c.line_refs)

    @property
    def ordinal(self) -> int:
        return self._claim.start

    @property
    def line_ordinals(self) -> list[int]:
        return [ordinal for ordinal, _ in self._claim.line_refs]

    @property
    def label(self) -> str:
        return _label(self._claim.claim_id)


@dataclass
class X12Result:
    kind: str
    delimiters: Delimiters
    findings: list[Finding]
    interchanges: list[Interchange]
    claims: list[ClaimRecord] = field(default_factory=list)
    segments: int = 0
    lines: int = 0
    submitters: dict[tuple[int, int, int], tuple[str, str]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def claim_findings(self, claim: ClaimRecord) -> list[Finding]:
        return [f for f in self.findings if f.segment is not None and claim.covers(f.segment)]

    def rejected_claims(self) -> list[ClaimRecord]:
        return [c for c in self.claims if c.problem or any(
            f.is_error for f in self.claim_findings(c))]


def kind_of(interchanges: list[Interchange]) -> str:
    guides = envelope_profile().guides
    for ic in interchanges:
        for group in ic.groups:
            guide = guides.get(group.version)
            if guide:
                return guide["kind"]
            for ts in group.transactions:
                if ts.st01 == "837":
                    return "837p"
    return "x12"


def validate_x12(
    source: BinaryIO | str | bytes,
    catalogue: RuleCatalogue | None = None,
    keep_encounters: bool = False,
    on_claim: Callable[[ClaimRecord], None] | None = None,
    rules: "EncounterRules | None" = None,
    engine: str = DEFAULT_ENGINE,
    snip: bool = True,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> X12Result:
    """Validate an interchange. Raises :class:`~gateway.x12.reader.NotX12Error` when the
    input is not X12 at all. Claims are collected into the result unless ``on_claim`` takes
    them (streaming use: bounded memory for any file size). ``engine``: "native" (default) or
    "pyx12" (the reference; SNIP 1-2 only). ``snip``: run the SNIP 3-7 rule packs (native).
    ``jobs`` > 1 (a file path only): the transaction sets are shared among that many processes
    (split at ST/SE boundaries; each validates its sets against the guide and, without ECM
    rules, reads their claims); the result, and the order ``on_claim`` gets the claims in, is
    the same as with one. ``progress(bytes_read)`` is called as the file is read."""
    catalogue = catalogue or default_catalogue()
    claims: list[ClaimRecord] = []
    unreadable: list[ClaimRecord] = []  # claims the model could not take (usually few)
    rule_findings: list[Finding] = []
    pending: list[ClaimRecord] = []
    light: list[RulesSpansCollector] = []  # the collector of claims read light, if any
    sink = on_claim or claims.append
    # the rule engine's own batch size when it has one (gateway/ecm/rules.py BATCH)
    rule_batch = full_batch = getattr(rules, "batch_size", RULE_BATCH)
    starting = False  # the first (small) batch to the rules' worker is still to go

    def run_rules() -> None:
        nonlocal rule_batch, starting
        if pipe is not None:  # the rules run in a worker process (gateway/ecm/pipelined.py)
            pipe.submit(pending)  # (rows, see take)
            pending.clear()
            if starting:  # full batches after the first
                starting = False
                rule_batch = full_batch
                if light:
                    light[0].size = rule_batch
            if light:  # the claims read light go as text while the worker keeps up (it views
                # them there), as views while it lags: the two processes' loads balanced
                light[0].as_text = pipe.keeping_up(TEXT_LAG)
            return
        batch = [(c, c.encounter) for c in pending if c.encounter is not None]
        found = rules.check([(e, claim_place(c)) for c, e in batch])
        for (claim, _), findings in zip(batch, found):
            rule_findings.extend(findings)
            if not keep_encounters:
                claim.encounter = None
        for claim in pending:
            sink(claim)
        pending.clear()

    def near_end() -> None:
        # the input is all but read (NEAR_END_BYTES or less to come, and the claims of the
        # chunks read): while the worker keeps up, smaller batches from here, so that it
        # finishes soon after the caller
        nonlocal rule_batch, starting
        starting = False
        if pipe is not None and pipe.keeping_up():
            rule_batch = min(rule_batch, LAST_BATCHES)
            if light:
                light[0].size = rule_batch

    def take(claim: ClaimRecord) -> None:
        if claim.problem:
            unreadable.append(claim)
        if rules is None:
            sink(claim)
            return
        if pipe is not None:
            # with the rules in a worker, a claim waits for its batch only as a row of plain
            # values, as _RowPlace reads it (the claim itself goes on at once: kept waiting,
            # claims are what the cyclic collector would scan again and again); an encounter
            # (kept, or a claim in doubt) goes as its view
            encounter = claim.encounter
            if encounter is not None:
                if not keep_encounters:
                    claim.encounter = None
                if encounter.__class__ is not tuple:
                    encounter = view_of(encounter)
                pending.append((encounter, claim.transaction, claim.index,
                                claim.subscriber_index, claim.start, claim.claim_id,
                                claim.line_refs))
            sink(claim)
            if len(pending) >= rule_batch:
                run_rules()
            return
        pending.append(claim)
        if len(pending) >= rule_batch:
            run_rules()

    if rules is not None:
        from gateway.model.view import view_of
    parallel = jobs > 1 and isinstance(source, (str, os.PathLike))
    path = str(source) if parallel else ""
    size = _input_size(source) if rules is not None else None
    pipe = None
    if progress is not None and isinstance(source, (str, os.PathLike)):
        source = _Counting(open(source, "rb"), progress)  # noqa: SIM115 - the reader closes it
    if size and not parallel and getattr(rules, "pipelined", None) is not None:
        source = _NearEnd(source, size, near_end)
    with X12Reader(source) as reader, _rules_worker(rules, size) as pipe:
        if pipe is not None and rule_batch > FIRST_BATCH:
            starting, rule_batch = True, FIRST_BATCH
        envelope = EnvelopeChecker(reader.delimiters, reader.notes, catalogue)
        # with rules only: the light view the rules read, not the model (claims837)
        keep = keep_encounters or ("rules" if rules is not None else False)
        shared = None
        if parallel:  # the file shared among processes by byte ranges (gateway/x12/jobs.py)
            from functools import partial

            from gateway.x12.jobs import run_shared

            # claims that only go to a report's counts: the other processes send those
            spans = counted_only(on_claim) if rules is None else None
            shared = run_shared(reader, path, jobs, envelope, partial(guide_validator, engine),
                                snip, catalogue, take, keep, progress, spans, unreadable.append)
        if shared is not None:
            last, lines, guide_findings, submitters = shared
        else:  # one process (also a file that cannot be shared: a single transaction set)
            guide = guide_validator(engine, reader.delimiters, envelope, catalogue, snip=snip)
            # claims that only go to a report's counts: those it can vouch for as spans
            spans = counted_only(on_claim) if rules is None and not keep else None
            counted = counted_only(on_claim) if pipe is not None and not keep_encounters \
                else None
            if counted is not None:
                # the rules' worker takes the claims read light too: their rows (views, or
                # the segments the light reading kept, which it views: _row_entries)
                collector = RulesSpansCollector(reader.delimiters, take, counted, pending,
                                                rule_batch, run_rules)
                light.append(collector)
            else:
                collector = ClaimCollector(reader.delimiters, take, keep_encounters=keep,
                                           spans=spans)
            last, lines = feed_all(reader, envelope, (guide.feed, collector.feed),
                                   (_data_feed(guide), collector.feed_data))
            collector.finish()
            if pipe is not None:  # the last claims go to the rules' worker first
                run_rules()
            guide_findings = guide.finish()
            submitters = collector.submitters
        if rules is not None:
            run_rules()
            if pipe is not None:
                rule_findings.extend(pipe.finish())
            rule_findings[:0] = rules.notes()
        findings = envelope.finish(last) + guide_findings + rule_findings
    for claim in unreadable:
        # say why a claim cannot become an encounter, unless a finding inside it already does
        if not any(f.is_error and f.segment and claim.start <= f.segment <= claim.end
                   for f in findings):
            i, g, t = claim.transaction
            finding = catalogue.finding("X12-837-CLAIM", f"ISA#{i}/GS#{g}/ST#{t}/2300[{claim.index}]",
                                        claim.start, problem=claim.problem)
            if finding is not None:
                findings.append(finding)
    findings.sort(key=lambda f: (f.segment or 0))  # stable: same-segment order is kept
    return X12Result(kind=kind_of(envelope.interchanges), delimiters=reader.delimiters,
                     findings=findings, interchanges=envelope.interchanges, claims=claims,
                     segments=last, lines=lines, submitters=submitters)


def _data_feed(guide) -> Callable:
    """The guide validator's feed for data segments (the pyx12 adapter has only ``feed``)."""
    return getattr(guide, "feed_data", guide.feed)


def _input_size(source) -> int | None:
    """The size of an input in bytes, when known before reading it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.path.getsize(source)
        return os.fstat(source.fileno()).st_size
    except (OSError, AttributeError, ValueError, TypeError):
        return None


class _RowPlace(tuple):
    """The place of a claim the ECM rules' worker got as a row: the row itself (its view or
    encounter, then the claim's transaction, index, subscriber index, start, id and line
    references: one flat tuple a claim, one object less to ship), its parts read by position
    on use through the location scheme above (the worker asks for a claim's label once a
    claim, its member and ordinal once a finding). A tuple: made from the row in C
    (:func:`claims837.rule_entries`)."""

    __slots__ = ()

    @property
    def claim(self) -> str:
        return _claim_path(self[1], self[2])

    @property
    def member(self) -> str:
        return _member_path(self[1], self[3])

    @property
    def lines(self) -> list[str]:
        return _line_paths(self[1], self[6])

    @property
    def ordinal(self) -> int:
        return self[4]

    @property
    def line_ordinals(self) -> list[int]:
        return [ordinal for ordinal, _ in self[6]]

    @property
    def label(self) -> str:
        return _label(self[5])


def _row_entries() -> Callable[[list], list[tuple]]:
    """A run's maker of the (view, place) of each row of a batch the ECM rules' worker got
    (run there): a view and the parts of its :class:`_RowPlace`, or a light claim's text row
    (:func:`claims837.light_claim_row` views it, with the run's memo of what the segment texts
    seen so far mean: a file repeats its LX, SV1 and DTP texts from claim to claim)."""
    meanings: dict = {}

    def entries(batch: list) -> list[tuple]:
        return rule_entries(batch, _RowPlace, meanings)

    return entries


@contextmanager
def _rules_worker(rules, size: int | None):
    """The ECM rules' worker process for this validation (the rules decide whether there is
    one: ``rules.pipelined``; None: they run here); stopped if the validation fails."""
    start = getattr(rules, "pipelined", None)
    worker = start(size, _row_entries()) if start is not None else None
    if worker is None:
        yield None
        return
    with worker:
        yield worker


class _NearEnd:
    """An input (a path, bytes or a binary file) that calls ``near_end()`` once at most
    NEAR_END_BYTES of its ``size`` bytes are left to read (the reader then has those and the
    segments of the chunks it read still to hand out). Not at the last byte: the last chunk
    of a file can be a few bytes, and at 10k claims the worker's last whole batch then went
    out as the caller finished (≈ 4 ms more after it)."""

    def __init__(self, source, size: int, near_end: Callable[[], None]) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            import io

            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            source = open(source, "rb")  # noqa: SIM115 - the reader closes it
        self._raw = source
        self._left = size
        self._near_end = near_end

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self._left > 0:
            self._left -= len(data)
            if self._left <= NEAR_END_BYTES or not data:
                self._left = 0
                self._near_end()
        return data

    def close(self) -> None:
        self._raw.close()


class _Counting:
    """A binary file that reports how many bytes were read (for a progress bar)."""

    def __init__(self, raw, report: Callable[[int], None]) -> None:
        self._raw = raw
        self._report = report
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._done += len(data)
        self._report(self._done)
        return data

    def close(self) -> None:
        self._raw.close()
