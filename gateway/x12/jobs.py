"""``validate --jobs N``: the transaction sets of one X12 file shared among N processes, with
the same result as one process (:func:`gateway.x12.validate.validate_x12` calls
:func:`run_shared`). Compiled with the X12 engine's hot modules when it can be
(gateway/x12/_accelerate.py): the skimming loop runs over every segment of the file.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.findings import Finding
from gateway.rules import RuleCatalogue
from gateway.x12.claims837 import ClaimCollector, ClaimRecord
from gateway.x12.envelope import EnvelopeChecker
from gateway.x12.reader import Delimiters, X12Reader

# Every process reads the file, but only the segments of its own transaction sets (and the
# envelope segments) are turned into Segment objects and validated; the rest is skimmed (the
# segment terminators counted). This process is one of the shares: it also runs the envelope
# checks over every segment and hands the claims to ``take`` in file order. Another process's
# results come back per transaction set (the implementation-guide findings, the claims in
# compact pickled form) and are merged in transaction-set order, so the output is the same as
# with one process. Claims that cannot be handed on yet (a set before them is still being
# validated elsewhere) wait in a spool that goes to a temporary file past SPOOL_MEMORY bytes.
#
# Without ECM rules (which run on the encounters, in this process, with the registries) the
# claims are read where their set is validated; with them, this process reads all the claims
# and the other processes share the implementation-guide validation.

_CONTROL = frozenset(("ISA", "GS", "ST", "SE", "GE", "IEA"))
_CONTROL_HEADS = frozenset(("IS", "IE", "GS", "ST", "SE", "GE"))
SPOOL_MEMORY = 32 * 1024 * 1024  # claims waiting in memory before they go to a temporary file
POLL_EVERY = 4096  # segments between two looks at the other processes' results
CLAIM_BATCH = 1000  # claims sent on together


class _Owners:
    """Which share validates each transaction set: round robin over the sets, except that a set
    opened while the one before is still open (no SE) goes to the same share. Every process
    applies the same rule to the same control segments, so all agree without talking."""

    __slots__ = ("shares", "sets", "fresh", "open", "owner")

    def __init__(self, shares: int) -> None:
        self.shares = shares
        self.sets = -1  # global index of the last ST seen
        self.fresh = -1
        self.open = False
        self.owner: int | None = None  # share of the open set (None: outside any set)

    def control(self, seg_id: str) -> int | None:
        """The share a control segment belongs to (None: every share's envelope needs it)."""
        if seg_id == "ST":
            self.sets += 1
            if not self.open:
                self.fresh += 1
                self.owner = self.fresh % self.shares
            self.open = True
            return self.owner
        if seg_id == "SE":
            owner = self.owner if self.open else None
            self.open = False
            return owner
        self.open = False  # ISA, GS, GE, IEA: an open set ends here (as the guide sees it)
        return None

    def data(self) -> int:
        """The share of a data segment: the open set's; outside a set, the last set's (the
        first share before any), whose guide sees it as one process's would (pyx12 reports a
        segment between two sets; the native engine ignores it there)."""
        return self.owner if self.owner is not None else 0


class _Share:
    """One share's validation: the implementation guide and (optionally) the claims of its
    transaction sets, with findings and claims kept per set until the set is done."""

    def __init__(self, share: int | None, delimiters: Delimiters, envelope: EnvelopeChecker,
                 make_guide: Callable, snip: bool, catalogue: RuleCatalogue, claims: bool,
                 done: Callable[[int, list[Finding], list[ClaimRecord]], None],
                 part: Callable[[int, list[ClaimRecord]], None]) -> None:
        self.share = share
        self.guide = make_guide(delimiters, envelope, catalogue, snip=snip) \
            if share is not None else None
        self.collector = ClaimCollector(delimiters, self._claim, keep_encounters=False) \
            if claims else None
        self.done = done  # (set, its findings, its last claims): the set is done
        self.part = part  # (set, claims): a batch of a set's claims, the set goes on
        self.current: int | None = None  # global index of the set being validated here
        self.claims: list[ClaimRecord] = []
        self.mark = 0  # guide findings already assigned to a set

    def _claim(self, claim: ClaimRecord) -> None:
        self.claims.append(claim)
        if len(self.claims) >= CLAIM_BATCH:  # a big set's claims go on in batches
            claims, self.claims = self.claims, []
            self.part(self.current if self.current is not None else -1, claims)

    def feed(self, seg, owner: int | None, set_index: int) -> None:
        """``owner``: the share of ``seg`` (None for ISA/GS/GE/IEA and stray segments)."""
        mine = owner is not None and owner == self.share
        seg_id = seg.fields[0]
        if mine and seg_id == "ST" and set_index != self.current:
            self.flush()
            self.current = set_index
        if self.guide is not None and (mine or seg_id in ("ISA", "GS", "GE", "IEA")):
            self.guide.feed(seg)
        if self.collector is not None and (mine or seg_id in _CONTROL):
            self.collector.feed(seg)
        if mine and seg_id == "SE":
            self.flush()

    def flush(self) -> None:
        """The set being validated here is done: its findings and claims go on."""
        findings = self.guide.findings if self.guide is not None else []
        new = findings[self.mark:]
        self.mark = len(findings)
        if self.current is None and not new and not self.claims:
            return
        claims, self.claims = self.claims, []
        self.done(self.current if self.current is not None else -1, new, claims)
        self.current = None

    def finish(self) -> None:
        if self.collector is not None:
            self.collector.finish()
        self.flush()


_OWN, _CONTROL_SEGMENT, _STRAY = 0, 1, 2  # what _skim yields


def _skim(reader: X12Reader, owners: _Owners, share: int | None,
          envelope: EnvelopeChecker | None = None, tally: list[int] | None = None):
    """The segments of ``reader`` this share needs, as (segment, owner, set index, kind): the
    control segments (kind _CONTROL_SEGMENT) and the data segments of its own sets (_OWN). The
    others are only counted, so the ordinals stay right (the same rules as
    :meth:`X12Reader.__iter__`, which tests/test_x12_jobs.py holds this to).

    With ``envelope`` and ``tally`` (the process that runs the envelope checks): the data
    segments inside the envelope's open transaction set are counted into ``tally`` (segments,
    LX segments) instead of being fed to it one by one; the data segments outside one are
    yielded (_STRAY: the envelope reports them); ``tally[2]`` is the last ordinal at the end.
    The caller hands ``tally[0]`` to the envelope before feeding it any other segment."""
    from gateway.x12.reader import Segment

    delims = reader.delimiters
    term, sep = delims.segment, delims.element
    strip_chars = "\r\n" if term != "\n" else "\r"
    heads = _CONTROL_HEADS
    lx = ("LX", "LX" + sep)
    counting = tally is not None
    ordinal = 0
    carry = ""
    mine = inside = False
    for chunk in reader._chunks():
        pieces = (carry + chunk).split(term)
        carry = pieces.pop()
        for piece in pieces:
            text = piece.strip(strip_chars)
            if not text.strip():
                continue
            ordinal += 1
            if text[:2] in heads:
                seg_id = text.split(sep, 1)[0]
                if seg_id in _CONTROL:
                    owner = owners.control(seg_id)
                    mine = owners.data() == share
                    yield Segment(ordinal, text.split(sep), text), owner, owners.sets, \
                        _CONTROL_SEGMENT
                    # (after the caller fed it: the envelope's state is current)
                    inside = envelope.in_transaction if counting else owners.open
                    continue
            if counting:
                if not inside:
                    yield Segment(ordinal, text.split(sep), text), \
                        share if mine else None, owners.sets, _STRAY
                    continue
                tally[0] += 1
                if text[:3] in lx:
                    tally[1] += 1
            if mine:
                yield Segment(ordinal, text.split(sep), text), share, owners.sets, _OWN
    text = carry.strip(strip_chars)
    if text.strip():  # a trailing fragment with no terminator: the reader's last segment
        ordinal += 1
        seg_id = text.split(sep, 1)[0]
        if seg_id in _CONTROL:
            owner = owners.control(seg_id)
            yield Segment(ordinal, text.split(sep), text), owner, owners.sets, _CONTROL_SEGMENT
        elif counting and not inside:
            yield Segment(ordinal, text.split(sep), text), share if mine else None, \
                owners.sets, _STRAY
        else:
            if counting:
                tally[0] += 1
                tally[1] += text[:3] in lx
            if mine:
                yield Segment(ordinal, text.split(sep), text), share, owners.sets, _OWN
    if counting:
        tally[2] = ordinal


def _share_process(path: str, share: int, shares: int, make_guide: Callable, snip: bool,
                   catalogue: RuleCatalogue, claims: bool, results) -> None:
    """Another process's share: validates its sets and sends each set's results."""

    def done(set_index: int, findings: list[Finding], records: list[ClaimRecord]) -> None:
        results.put(("set", share, set_index, findings, _pickle(records) if records else b""))

    def part(set_index: int, records: list[ClaimRecord]) -> None:
        results.put(("part", share, set_index, _pickle(records)))

    try:
        with X12Reader(path) as reader:
            envelope = EnvelopeChecker(reader.delimiters, None, catalogue)  # paths only
            work = _Share(share, reader.delimiters, envelope, make_guide, snip, catalogue, claims,
                          done, part)
            guide, collector = work.guide, work.collector
            for seg, owner, set_index, kind in _skim(reader, _Owners(shares), share):
                if kind == _OWN:  # one of this share's data segments (the common case)
                    guide.feed(seg)
                    if collector is not None:
                        collector.feed(seg)
                    continue
                envelope.feed(seg)  # (data segments would only add to its counts)
                work.feed(seg, owner, set_index)
            work.finish()
            submitters = work.collector.submitters if work.collector is not None else {}
        results.put(("done", share, submitters))
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which stops
        # the kind of failure only: a message may quote a value from the file (member data)
        results.put(("error", share, exc.__class__.__name__))


class _Spool:
    """Pickled claim batches waiting for their turn, per set and in order: in memory up to
    SPOOL_MEMORY bytes, then in a temporary file (memory stays bounded however far one process
    gets ahead of another)."""

    def __init__(self) -> None:
        self.waiting: dict[int, list[bytes | tuple[int, int]]] = {}
        self.size = 0
        self.file = None

    def put(self, key: int, blob: bytes) -> None:
        if self.size + len(blob) <= SPOOL_MEMORY:
            self.waiting.setdefault(key, []).append(blob)
            self.size += len(blob)
            return
        if self.file is None:
            import tempfile

            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.file.seek(0, 2)
        self.waiting.setdefault(key, []).append((self.file.tell(), len(blob)))
        self.file.write(blob)

    def on_disk(self) -> bool:
        return any(isinstance(e, tuple) for entries in self.waiting.values() for e in entries)

    def take(self, key: int):
        """The batches waiting for ``key``, in the order they came."""
        for entry in self.waiting.pop(key, ()):
            if isinstance(entry, tuple):
                offset, size = entry
                self.file.seek(offset)
                yield self.file.read(size)
            else:
                self.size -= len(entry)
                yield entry

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _InOrder:
    """Hands the claims to ``take`` and collects the guide findings in transaction-set order,
    whichever process gets there first."""

    def __init__(self, take: Callable[[ClaimRecord], None]) -> None:
        self.take = take
        self.next = 0  # the first set not done yet: its claims are handed on as they come
        self.ready: dict[int, list[Finding]] = {}  # later sets done: their findings
        self.spool = _Spool()
        self.findings: list[Finding] = []
        self.stray: list[Finding] = []  # findings outside any set (none expected)
        self.stray_claims: list[ClaimRecord] = []

    def part(self, set_index: int, claims, blob: bytes = b"") -> None:
        """A batch of set ``set_index``'s claims: ``claims`` (records) or ``blob`` (pickled)."""
        if set_index < 0:
            self.stray_claims.extend(claims or _unpickle(blob))
        elif set_index == self.next:
            for claim in claims or _unpickle(blob):
                self.take(claim)
        elif claims or blob:
            if claims:
                blob = _pickle(claims)
            self.spool.put(set_index, blob)

    def done(self, set_index: int, findings: list[Finding], claims, blob: bytes = b"") -> None:
        """Set ``set_index`` is done, with its findings and last claims."""
        self.part(set_index, claims, blob)
        if set_index < 0:
            self.stray.extend(findings)
            return
        self.ready[set_index] = findings
        self.advance()

    def advance(self) -> None:
        while True:
            for batch in self.spool.take(self.next):  # (the next set's claims that waited)
                for claim in _unpickle(batch):
                    self.take(claim)
            if self.next not in self.ready:
                return
            self.findings.extend(self.ready.pop(self.next))
            self.next += 1

    def finish(self, sets: int) -> list[Finding]:
        """After every share is done: ``sets`` sets in the file (each reported by its share)."""
        while self.next < sets or any(k >= self.next for k in self.ready):
            self.ready.setdefault(self.next, [])  # (a set nobody reported: nothing to add)
            self.advance()
        for set_index in sorted(self.ready):  # (never: a set reported twice)
            self.findings.extend(self.ready.pop(set_index))
        for claim in self.stray_claims:
            self.take(claim)
        self.spool.close()
        return self.findings + self.stray


_ROW = None  # operator.attrgetter of every ClaimRecord field, in order (made on first use)


def _pickle(claims: list[ClaimRecord]) -> bytes:
    """Claims as one blob of tuples of their fields (the encounters are not among them: None
    here). marshal, not pickle: it writes and reads back plain tuples, lists, str and int
    several times quicker (the process that hands the claims on reads every other share's);
    a field of another type (none today) makes it fall back to pickle. The first byte says
    which."""
    global _ROW
    if _ROW is None:
        import dataclasses
        import operator

        _ROW = operator.attrgetter(*(f.name for f in dataclasses.fields(ClaimRecord)))
    rows = list(map(_ROW, claims))
    try:
        import marshal

        return b"M" + marshal.dumps(rows)
    except ValueError:  # an unmarshallable value
        import pickle

        return b"P" + pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


def _unpickle(blob: bytes) -> list[ClaimRecord]:
    if not blob:
        return []
    if blob[:1] == b"M":
        import marshal

        rows = marshal.loads(memoryview(blob)[1:])
    else:
        import pickle

        rows = pickle.loads(memoryview(blob)[1:])
    return [ClaimRecord(*values) for values in rows]


def run_shared(reader: X12Reader, path: str, jobs: int, envelope: EnvelopeChecker,
                make_guide: Callable, snip: bool, catalogue: RuleCatalogue,
                take: Callable[[ClaimRecord], None], keep: bool):
    """``validate --jobs N``: this process reads every segment (the envelope checks, the line
    count) and validates its share; N-1 other processes validate theirs. ``make_guide``
    (delimiters, envelope, catalogue, snip=...) makes an implementation-guide validator (a
    module-level function or a partial of one: it goes to the other processes). Returns (last
    ordinal, LX lines, implementation-guide findings in set order, submitters)."""
    import gc
    import multiprocessing
    import queue as queues

    claims_shared = not keep  # encounters and ECM rules stay in this process
    shares = jobs if claims_shared else jobs - 1
    mine = 0 if claims_shared else None  # without shared claims, this process only reads
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    results = context.Queue()
    others = [context.Process(target=_share_process, daemon=True,
                              args=(path, share, shares, make_guide, snip, catalogue,
                                    claims_shared, results))
              for share in range(shares) if share != mine]
    started = False

    def start() -> None:
        """Start the other processes: once this one has loaded what they also need (the
        compiled map and rule packs, at its first ST), so that they inherit it instead of
        loading it again."""
        nonlocal started
        started = True
        gc.freeze()  # their collector leaves the inherited objects (and so their pages) alone
        try:
            for process in others:
                process.start()
        finally:
            gc.unfreeze()

    order = _InOrder(take)
    submitters: dict = {}
    running = len(others)

    def receive(message) -> None:
        nonlocal running
        if message[0] == "part":
            _, _, set_index, blob = message
            order.part(set_index, None, blob)
        elif message[0] == "set":
            _, _, set_index, findings, blob = message
            order.done(set_index, findings, None, blob)
        elif message[0] == "done":
            submitters.update(message[2])
            running -= 1
        else:
            raise RuntimeError(f"validate --jobs: share {message[1]} failed: {message[2]}")

    try:
        delimiters = reader.delimiters
        work = guide = collector = None
        if mine is not None:
            work = _Share(mine, delimiters, envelope, make_guide, snip, catalogue, True,
                          lambda set_index, findings, claims: order.done(set_index, findings,
                                                                         claims),
                          lambda set_index, claims: order.part(set_index, claims))
            guide, collector = work.guide, work.collector
        everything = None if claims_shared else ClaimCollector(delimiters, take,
                                                               keep_encounters=keep)
        owners = _Owners(shares)
        last = lines = 0
        countdown = POLL_EVERY

        def poll() -> None:
            while True:
                try:
                    receive(results.get_nowait())
                except queues.Empty:
                    return

        if everything is None:  # the other shares' segments are only counted here
            tally = [0, 0, 0]  # data segments inside a set not yet told the envelope, LX, last
            for seg, owner, set_index, kind in _skim(reader, owners, mine, envelope, tally):
                if kind == _OWN:
                    guide.feed(seg)
                    collector.feed(seg)
                    countdown -= 1
                    if not countdown:
                        countdown = POLL_EVERY
                        poll()
                    continue
                if tally[0]:
                    envelope.count_data(tally[0])
                    tally[0] = 0
                envelope.feed(seg)
                if kind == _CONTROL_SEGMENT:
                    work.feed(seg, owner, set_index)
                    if started:
                        poll()
                    elif seg.fields[0] == "ST":  # (set 0 is this process's: its map is loaded)
                        start()
                    continue
                if seg.fields[0] == "LX":  # (a data segment outside a set)
                    lines += 1
                if owner == mine:
                    guide.feed(seg)
                    collector.feed(seg)
            if tally[0]:
                envelope.count_data(tally[0])
            lines += tally[1]
            last = tally[2]
        else:  # this process reads every claim (for the ECM rules)
            start()
            for seg in reader:
                envelope.feed(seg)
                seg_id = seg.fields[0]
                if seg_id in _CONTROL:
                    owners.control(seg_id)
                elif seg_id == "LX":
                    lines += 1
                everything.feed(seg)
                last = seg.ordinal
                countdown -= 1
                if not countdown:
                    countdown = POLL_EVERY
                    poll()
        if not started:  # no transaction set at all: the others have nothing to do
            start()
        if work is not None:
            work.finish()
            submitters.update(work.collector.submitters)
        if everything is not None:
            everything.finish()
            submitters.update(everything.submitters)
        while running:
            try:
                receive(results.get(timeout=1.0))
            except queues.Empty:
                if not any(p.is_alive() for p in others) and results.empty():
                    raise RuntimeError("validate --jobs: a share stopped without a result")
        guide_findings = order.finish(owners.sets + 1)
    finally:
        for process in others:
            if process.is_alive():
                process.terminate()
            if process.pid is not None:
                process.join()
        results.close()
    return last, lines, guide_findings, submitters
