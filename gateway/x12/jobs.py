"""``validate --jobs N``: one X12 file shared among N processes by byte ranges, with the same
result as one process (:func:`gateway.x12.validate.validate_x12` calls :func:`run_shared`).
Compiled with the X12 engine's hot modules when it can be (gateway/x12/_accelerate.py).

How the file is shared
----------------------
1. A planning process, started first (it needs no guide: it is done, or nearly, when this
   process has its guide ready and has read up to the first ST, where it starts the others,
   which inherit the compiled map), runs :func:`plan_shares` and tells every process the cuts
   through pipes. (Where there is a fork, the processes are bare forks, :class:`_Forked`:
   multiprocessing is not even imported; else multiprocessing's spawned processes.) It skims the file's bytes in C (compiled, a loop over the bytes,
   :func:`_scan_regular`; else one regular expression that stops only at a segment
   terminator; terminators counted in C) for the control segments
   (ISA, GS, ST, SE, GE, IEA) and the blank pieces the reader skips, so it knows the segment
   ordinal of every control segment without reading the others. It picks the ``ST`` segments
   where the file is cut: the ones nearest to equal shares of the bytes, among those that open
   a transaction set cleanly (inside an open group, the set before closed by its SE), never the
   first one. Each cut carries what a process starting there must know: its byte offset, the
   ordinal of its ST, the ISA and GS it sits under, and how many interchanges, groups and sets
   came before it (for the locations ``ISA#i/GS#g/ST#t`` and the claims' keys).
2. This process validates the first share (from the ISA to the first cut) exactly as one
   process would (the envelope checks, the implementation guide, the claims); every other
   process reads ONLY its own byte range (whole transaction sets) and validates it against
   the guide, reading its claims. It sends back, through a temporary file: its guide findings,
   its claims (compact, marshalled, when this process hands them on), its control segments and
   the segments outside a set (with their ordinals: the data segments between are only
   counted), the number of LX segments and its last ordinal.
3. This process then replays each later share's control segments into the one envelope
   checker (so the envelope findings, GE01/IEA01/SE01 counts and duplicate control numbers are
   those of one process), appends its guide findings and hands its claims on, share by share
   in file order.

A file that cannot be cut (one transaction set, or delimiters that are not ASCII) is validated
by this process alone. With ECM rules (or encounters kept), this process reads the claims of
the whole file itself (the rules need the encounters and the registries) and the other
processes share the guide validation.
"""

from __future__ import annotations

import codecs
import importlib.machinery
import os
import re
import struct
from collections.abc import Callable
from functools import partial
from itertools import islice

from gateway.findings import Finding
from gateway.rules import RuleCatalogue
from gateway.x12.claims837 import ClaimCollector, ClaimRecord, counted_only  # noqa: F401
from gateway.x12.envelope import EnvelopeChecker, Group, Interchange, TransactionSet, feed_all
from gateway.x12.reader import Delimiters, Segment, X12Reader

SKIM_BLOCK = 64 * 1024  # bytes read at a time by the skim (memory stays bounded; a larger
# block reads further past the last cut and copies more, and from 128 KB each block is memory
# the system maps afresh: at 100k claims, compiled, 1 MB cost 35 ms, 64 KB 26 and 16 KB 27)
RANGE_BLOCK = 64 * 1024  # bytes read at a time by a share (1 MB: ≈ 20% slower at 100k)
CLAIM_BATCH = 2000  # claims written to the share's result file together
FIRST_WEIGHT = 1.03  # this process's share of the bytes, against 1.0 for each other process:
# the other waits for the skim up to its cut (compiled ≈ 1.1 ms a MB, 2.7% of validating the
# same bytes, less the planner's head start), this one reads back its results (≈ 0.3%); 1.08
# while the skim cost ≈ 3.6 ms a MB in the other process (1M claims, 1.08: the cut at 52.0%,
# this process ended 0.37 s after the other)
FIRST_WEIGHT_CLAIMS = 1.0  # the same when every claim record comes back (read back here)
POLL_SEGMENTS = 8192  # segments between two looks for the plan, until it comes
WAIT_BELOW = 1024 * 1024  # a smaller file: wait for the plan (a matter of a millisecond or
# two) rather than read on (this process could pass the first cut before it comes)
FIRST_WEIGHT_READING = 0.5  # the same when this process reads every claim (ECM rules)
_BOM = b"\xef\xbb\xbf"
# this module runs compiled (gateway/x12/_accelerate.py): the skim's byte loop is quick
_COMPILED = __file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
# every character str.isspace() is true for: a piece of them alone is no segment
_SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + \
    "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"


class Cut:
    """Where a share starts: the byte ``offset`` of the piece holding its first ST (just after
    the terminator before it), that ST's ``ordinal``, the ``isa`` and ``gs`` segments above it
    as (ordinal, text), how many ``interchanges`` (ISA included), ``groups`` in the interchange
    (GS included) and ``sets`` in the group came before as the envelope counts them, and
    ``tx``: the claims' (ISA, GS, ST) counters before the ST (as ClaimCollector counts)."""

    __slots__ = ("offset", "ordinal", "isa", "gs", "interchanges", "groups", "sets", "tx")

    def __init__(self, offset, ordinal, isa, gs, interchanges, groups, sets, tx) -> None:
        self.offset = offset
        self.ordinal = ordinal
        self.isa = isa
        self.gs = gs
        self.interchanges = interchanges
        self.groups = groups
        self.sets = sets
        self.tx = tx

    def __reduce__(self):  # (the spawn start method sends it to the other process)
        return Cut, (self.offset, self.ordinal, self.isa, self.gs, self.interchanges,
                     self.groups, self.sets, self.tx)

    def __repr__(self) -> str:
        return f"<Cut at byte {self.offset}, segment {self.ordinal}>"


def data_start(path: str, preamble: int) -> int:
    """The byte offset of the ISA, as the reader found it (after a BOM and a preamble)."""
    with open(path, "rb") as file:
        head = file.read(len(_BOM))
    return (len(_BOM) if head == _BOM else 0) + preamble


def _strip_chars(delimiters: Delimiters) -> str:
    return "\r\n" if delimiters.segment != "\n" else "\r"


def _skim_patterns(delimiters: Delimiters, encoding: str):
    """Regular expressions that match at a segment terminator followed by a control segment
    (group 1: its id) or by a blank piece (nothing but white space up to the next terminator:
    the reader skips it, so it has no ordinal): (one for ASCII white space, quick; one for any
    white space in ``encoding``, for a block that may hold some; the byte sequences that start
    a non-ASCII white space character). None when the delimiters cannot be found as single
    bytes."""
    term, sep = delimiters.segment, delimiters.element
    if len(term) != 1 or len(sep) != 1 or not term.isascii() or not sep.isascii() or \
            sep in "\r\n" or sep == term:
        return None
    t = re.escape(term.encode())
    lead = "".join(c for c in _strip_chars(delimiters) if c != term)
    lead = b"[" + b"".join(re.escape(c.encode()) for c in lead) + b"]"
    ascii_spaces = b"[" + b"".join(re.escape(c.encode()) for c in _SPACES
                                   if c.isascii() and c != term) + b"]"
    others = []
    for char in _SPACES:
        if not char.isascii():
            try:
                others.append(char.encode(encoding))
            except UnicodeEncodeError:
                continue
    control = t + b"(?:" + lead + b"*(ISA|IEA|GS|GE|ST|SE)(?=" + re.escape(sep.encode()) + \
        b"|" + lead + b"*(?:" + t + b"|\\Z))|"
    quick = re.compile(control + ascii_spaces + b"*(?=" + t + b"))")
    space = b"(?:" + ascii_spaces + b"".join(b"|" + re.escape(o) for o in others) + b")"
    full = re.compile(control + space + b"*(?=" + t + b"))")
    return quick, full, tuple(sorted({o[:2] for o in others}))


def _regular_pattern(delimiters: Delimiters, encoding: str, lead: bytes):
    """The quickest skim, for a file whose every terminator is followed by ``lead`` (say a
    newline) and then by a character that starts a segment (not white space, not a
    terminator): a regular expression with a literal prefix that matches a terminator followed
    by a control segment (group 1: its id) or, group 1 None, by anything else than that
    regular layout (from there the general expressions of :func:`_skim_patterns` go on); and
    the arguments of :func:`_scan_regular`, which finds where it matches without it."""
    term, sep = delimiters.segment, delimiters.element
    t = re.escape(term.encode())
    strip = [c.encode() for c in _strip_chars(delimiters) if c != term]
    lead_class = b"[" + b"".join(re.escape(c) for c in strip) + b"]"
    starts = {c.encode() for c in _SPACES if c.isascii()} | {term.encode()}
    for char in _SPACES:
        if not char.isascii():
            try:
                starts.add(char.encode(encoding)[:1])
            except UnicodeEncodeError:
                continue
    not_start = b"[^" + b"".join(re.escape(c) for c in sorted(starts)) + b"]"
    pattern = re.compile(t + re.escape(lead) + b"(ISA|IEA|GS|GE|ST|SE)(?=" +
                         re.escape(sep.encode()) + b"|" + lead_class + b"*(?:" + t +
                         b"|\\Z))|" + t + b"(?!" + re.escape(lead) + not_start + b")")
    scan = (ord(term), lead, ord(sep), bytes(bytes([b]) in strip for b in range(256)),
            bytes(bytes([b]) in starts for b in range(256)))
    return pattern, scan


def _scan_regular(buf, pos, limit, term, lead, sep, strip, starts):  # (typed: jobs.pxd)
    """Where ``_regular_pattern``'s expression first matches in ``buf[pos:limit]`` (as its
    ``search(buf, pos, limit)``: at a terminator followed by ``lead`` and a control segment id
    that ends there, or at a terminator not followed by ``lead`` and a byte that starts a
    segment), or -1: the same answer by a loop over the bytes, which the compiled build runs
    in C (≈ 3× quicker than the expression, which tries its pattern at every terminator).
    ``strip`` and ``starts``: 256 bytes, 1 for a byte of the lead's class (stripped around a
    segment), of ``starts`` (white space, the terminator, a non-ASCII white space's first
    byte). tests/test_x12_jobs_plan.py holds it to the expression."""
    data = buf  # (compiled: pointers to the bytes)
    lead_bytes = lead
    strip_of = strip
    starts_of = starts
    n_lead = len(lead)
    i = pos
    while i < limit:
        if data[i] != term:
            i += 1
            continue
        k = i + 1
        m = 0
        while m < n_lead and k < limit and data[k] == lead_bytes[m]:
            k += 1
            m += 1
        if m < n_lead or k >= limit or starts_of[data[k]]:
            return i  # not the regular layout
        c = data[k]
        e = k
        if c == 73:  # I: ISA, IEA
            if k + 2 < limit and data[k + 2] == 65 and (data[k + 1] == 83 or data[k + 1] == 69):
                e = k + 3
        elif c == 71:  # G: GS, GE
            if k + 1 < limit and (data[k + 1] == 83 or data[k + 1] == 69):
                e = k + 2
        elif c == 83:  # S: ST, SE
            if k + 1 < limit and (data[k + 1] == 84 or data[k + 1] == 69):
                e = k + 2
        if e > k:  # a control segment id: it ends at an element separator or the segment's end
            if e >= limit or data[e] == sep:
                return i
            while e < limit and strip_of[data[e]]:
                e += 1
            if e >= limit or data[e] == term:
                return i
        i = k
    return -1


def _count_byte(buf, start, end, byte):  # (typed: jobs.pxd)
    """How many bytes ``byte`` ``buf[start:end]`` holds: ``buf.count``, which the compiled
    build runs as a loop in C that the compiler vectorises (≈ 4× quicker)."""
    data = buf  # (compiled: a pointer to the bytes)
    found = 0
    for i in range(start, end):
        found += data[i] == byte
    return found


def _bytes_count(sub: bytes, buf: bytes, start: int, end: int) -> int:
    return buf.count(sub, start, end)


def _matches(buf: bytes, limit: int, regular, general):
    """The matches of the skim in ``buf`` up to ``limit``: ``regular``'s where the layout is
    regular; from a terminator where it is not, ``general``'s next match (group 1 None: a blank
    piece), and ``regular``'s again after it. (The first block's ISA follows the terminator put
    before it with no lead: without going back, the whole file was skimmed by ``general``.)
    ``regular``: what :func:`_regular_pattern` returns. Compiled, :func:`_scan_regular` finds
    where the expression matches, which then reads the match there."""
    pattern, scan = regular
    pos = 0
    if _COMPILED:
        while True:
            at = _scan_regular(buf, pos, limit, *scan)
            if at < 0:
                return
            match = pattern.match(buf, at, limit)
            if match is None or match.group(1) is None:  # (None: never, the tests hold)
                match = general.search(buf, at, limit)
                if match is None:
                    return
            yield match
            pos = match.end()
    while True:
        for match in pattern.finditer(buf, pos, limit):
            if match.group(1) is None:  # a terminator not followed as the others are
                match = general.search(buf, match.start(), limit)
                if match is None:
                    return
                yield match
                pos = match.end()
                break
            yield match
        else:
            return


def plan_shares(path: str, delimiters: Delimiters, encoding: str, start: int, jobs: int,
                first_weight: float = FIRST_WEIGHT) -> list[Cut]:
    """Where to cut the file at ``path`` (its ISA at byte ``start``) into at most ``jobs``
    shares of about equal bytes (the first weighted by ``first_weight``): the cuts in order, or
    [] when it cannot be cut (one transaction set, odd delimiters). Reads up to the last cut."""
    patterns = _skim_patterns(delimiters, encoding)
    if patterns is None or jobs < 2:
        return []
    quick, full, wide = patterns
    regular = None
    leads = {c.encode() for c in _strip_chars(delimiters) if c != delimiters.segment}
    size = os.path.getsize(path)
    span = size - start
    total = first_weight + jobs - 1
    targets = [start + span * (first_weight + k) / total for k in range(jobs - 1)]
    term = delimiters.segment.encode()
    if _COMPILED:  # (a loop in C, quicker than bytes.count)
        count = partial(_count_byte, byte=term[0])
    else:
        count = partial(_bytes_count, term)
    strip_chars = _strip_chars(delimiters)
    cuts: list[Cut] = []
    # the envelope's view (gateway/x12/envelope.py): interchange, group, set open; counts
    ic = group = ts = False
    interchanges = groups = sets = 0
    isa = gs = None
    raw = [0, 0, 0]  # ClaimCollector's (ISA, GS, ST) counters
    before: Cut | None = None  # the last clean ST before the next target
    first = True  # the first clean ST is never a cut (the first share holds at least a set)
    target = 0
    tcount = -1  # terminators before the current position (the leading one is ours)
    blanks = 0
    with open(path, "rb") as file:
        file.seek(start)
        carry = term  # a terminator before the ISA: every control segment follows one
        base = start - 1  # the file offset of carry[0]
        while True:
            block = file.read(SKIM_BLOCK)
            buf = carry + block if block else carry
            if block:
                last_t = buf.rfind(term)
                limit = last_t + 1
            else:
                limit = len(buf)
            pos = 0
            if regular is None:  # the lead after the ISA's terminator: the usual layout
                after = buf.find(term, 1) + 1
                lead = after
                while after and lead < len(buf) and buf[lead:lead + 1] in leads:
                    lead += 1
                regular = _regular_pattern(delimiters, encoding, buf[after:lead])
            pattern = quick
            if not buf.isascii() and any(w in buf for w in wide):
                pattern = full  # (it may hold a piece of non-ASCII white space alone)
            for match in _matches(buf, limit, regular, pattern):
                at = match.start()
                tcount += count(buf, pos, at + 1)
                pos = at + 1
                seg_id = match.group(1)
                if seg_id is None:
                    blanks += 1
                    continue
                ordinal = tcount - blanks + 1
                if seg_id == b"ST":
                    if group and not ts:  # a clean start: a place to cut
                        here = base + at + 1
                        cut = Cut(here, ordinal, isa, gs, interchanges, groups, sets,
                                  tuple(raw))
                        if first:
                            first = False
                        else:
                            while target < len(targets) and here >= targets[target]:
                                goal = targets[target]
                                fit = [c for c in (before, cut) if c is not None and
                                       (not cuts or c.offset > cuts[-1].offset)]
                                if fit:  # the nearer of the two around the goal
                                    cuts.append(min(fit, key=lambda c: abs(c.offset - goal)))
                                target += 1
                            if target == len(targets):
                                return cuts
                            before = cut
                    raw[2] += 1
                    if group:
                        ts = True
                        sets += 1
                elif seg_id == b"SE":
                    ts = False
                elif seg_id in (b"ISA", b"GS"):
                    text_at = match.start(1)
                    end = buf.find(term, text_at)
                    text = buf[text_at:end if end >= 0 else len(buf)].decode(
                        encoding, "replace").strip(strip_chars)
                    if seg_id == b"ISA":
                        ic, group, ts = True, False, False
                        interchanges += 1
                        groups = 0
                        isa = (ordinal, text)
                        raw = [raw[0] + 1, 0, 0]
                    else:
                        raw = [raw[0], raw[1] + 1, 0]
                        if ic:
                            group, ts = True, False
                            groups += 1
                            sets = 0
                            gs = (ordinal, text)
                elif seg_id == b"GE":
                    group = ts = False
                else:  # IEA
                    ic = group = ts = False
            if not block:
                break
            tcount += count(buf, pos, last_t)
            base += last_t
            carry = buf[last_t:]
    if before is not None and target < len(targets) and \
            (not cuts or before.offset > cuts[-1].offset):
        cuts.append(before)
    return cuts


def range_segments(path: str, start: int, end: int | None, ordinal: int,
                   delimiters: Delimiters, encoding: str):
    """The segments of bytes ``start``..``end`` (None: the end of the file) of ``path``, the
    first numbered ``ordinal`` + 1: what :meth:`X12Reader.__iter__` yields for them (the same
    rules; tests/test_x12_jobs.py holds this to it). ``start`` follows a segment terminator."""
    term: str = delimiters.segment
    sep: str = delimiters.element
    strip_chars: str = _strip_chars(delimiters)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    carry: str = ""
    pieces: list
    piece: str
    text: str
    seg: Segment
    with open(path, "rb") as file:
        file.seek(start)
        left = -1 if end is None else end - start
        while True:
            if left == 0:
                block = b""
            else:
                block = file.read(RANGE_BLOCK if left < 0 else min(RANGE_BLOCK, left))
                if left > 0:
                    left -= len(block)
            chunk = decoder.decode(block, final=not block)
            pieces = (carry + chunk).split(term)
            carry = pieces.pop()
            for piece in pieces:
                text = piece.strip(strip_chars)
                # (as the reader: the first character first, inline when compiled)
                if not text or text[0].isspace() and text.isspace():
                    continue
                ordinal += 1
                seg = Segment.__new__(Segment)  # (no call to __init__ when compiled)
                seg.ordinal = ordinal
                seg.fields = text.split(sep)
                seg.raw = text
                yield seg
            if not block:
                break
    text = carry.strip(strip_chars)
    if text.strip():
        ordinal += 1
        yield Segment(ordinal, text.split(sep), text)


class _Recording(EnvelopeChecker):
    """The envelope checker of a share after the first: it keeps the paths and the state the
    guide reads (its findings are not used), and records every segment it is fed (the control
    segments, and data segments outside a set) for the first process's envelope."""

    def __init__(self, delimiters: Delimiters, catalogue: RuleCatalogue, cut: Cut) -> None:
        super().__init__(delimiters, None, catalogue)
        sep = delimiters.element
        # as many interchanges, groups and sets before as the real envelope has seen
        self.interchanges = [Interchange(index=i + 1, isa=["ISA"], start=0, end=0)
                             for i in range(cut.interchanges - 1)]
        ordinal, text = cut.isa
        self.feed(Segment(ordinal, text.split(sep), text))
        self.interchange.groups = [Group(index=g + 1, gs=["GS"], start=0, end=0)
                                   for g in range(cut.groups - 1)]
        ordinal, text = cut.gs
        self.feed(Segment(ordinal, text.split(sep), text))
        self._group.transactions = [TransactionSet(t + 1, "", "", "", 0, 0)
                                    for t in range(cut.sets)]
        self.events: list[tuple[int, str]] = []

    def feed(self, seg: Segment) -> None:
        events = getattr(self, "events", None)
        if events is not None:
            events.append((seg.ordinal, seg.raw))
        super().feed(seg)


def _data_feed(guide) -> Callable:
    """The guide validator's feed for data segments (``feed_all``'s ``data_feeds``; the pyx12
    adapter has only ``feed``)."""
    return getattr(guide, "feed_data", guide.feed)


def _frame(out, kind: bytes, payload: bytes) -> None:
    out.write(kind + struct.pack("<Q", len(payload)))
    out.write(payload)


def _frames(path: str):
    with open(path, "rb") as file:
        while True:
            head = file.read(9)
            if len(head) < 9:
                return
            size = struct.unpack("<Q", head[1:])[0]
            yield head[:1], file.read(size)


def _planner(path: str, jobs: int, start: int, first_weight: float, delimiters: Delimiters,
             encoding: str, tells: list) -> None:
    """The planning process, started first (while this one gets its guide ready and reads up
    to the first ST, before the others are started): plans the cuts and sends them through
    each of ``tells`` (connections: to this process and to each other one). When it fails, it
    sends nothing: they all read the end of their pipe, and this process reads the file
    alone."""
    try:
        cuts = plan_shares(path, delimiters, encoding, start, jobs, first_weight)
    except Exception:  # noqa: BLE001 - told nothing, the first process reads it all alone
        return
    for tell in tells:
        tell.send(cuts)
        tell.close()


class _PlanPipe:
    """The read end of a pipe the planner, a bare fork, writes the plan to (pickled, then the
    end of the pipe): what this module uses of a multiprocessing connection."""

    __slots__ = ("fd", "poller")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.poller = None

    def poll(self) -> bool:
        if self.poller is None:  # (select.poll, not select.select: any descriptor number)
            import select

            self.poller = select.poll()
            self.poller.register(self.fd, select.POLLIN)
        return bool(self.poller.poll(0))  # (data, or the end: POLLHUP)

    def recv(self):
        import pickle

        chunks = []
        while True:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            raise EOFError  # (the planner failed: it wrote nothing)
        return pickle.loads(b"".join(chunks))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fork_planner(path: str, jobs: int, start: int, first_weight: float,
                  delimiters: Delimiters, encoding: str) -> tuple[int, list[_PlanPipe]]:
    """Start the planner as a bare fork (no multiprocessing: it starts before that is even
    imported): its pid and a pipe from it for this process and each other one (``jobs``)."""
    import gc

    pipes = [os.pipe() for _ in range(jobs)]
    gc.freeze()  # (as for the others: its collector leaves the inherited pages alone)
    try:
        pid = os.fork()
    finally:
        gc.unfreeze()
    if pid == 0:  # the planner: never returns
        code = 1
        try:
            import pickle

            for r, _ in pipes:
                os.close(r)
            cuts = plan_shares(path, delimiters, encoding, start, jobs, first_weight)
            blob = pickle.dumps(cuts, protocol=pickle.HIGHEST_PROTOCOL)
            for _, w in pipes:
                view = memoryview(blob)
                while view:
                    view = view[os.write(w, view):]
                os.close(w)
            code = 0
        except BaseException:  # noqa: BLE001 - told nothing, the first process reads it all
            pass
        finally:
            os._exit(code)
    for _, w in pipes:
        os.close(w)
    return pid, [_PlanPipe(r) for r, _ in pipes]


def _end_planner(pid: int) -> None:
    """Reap the bare-fork planner (killed first if it is still planning)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            import signal

            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class _Forked:
    """A bare fork that runs ``target(*args)`` and exits: what this module uses of a
    ``multiprocessing.Process`` (start, is_alive, terminate, join, pid), without importing
    multiprocessing (≈ 5–10 ms at the start of a run, before the first ST) nor its start-up
    in the new process."""

    __slots__ = ("target", "args", "pid", "status")

    def __init__(self, target: Callable, args: tuple) -> None:
        self.target = target
        self.args = args
        self.pid = None
        self.status = None  # (the wait status once reaped)

    def start(self) -> None:
        pid = os.fork()
        if pid == 0:  # the new process: never returns
            code = 1
            try:
                self.target(*self.args)
                code = 0
            except BaseException:  # noqa: BLE001 - (a share tells its failure in its file)
                pass
            finally:
                os._exit(code)
        self.pid = pid

    def is_alive(self) -> bool:
        if self.pid is None or self.status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.status = status
        return False

    def terminate(self) -> None:
        import signal

        os.kill(self.pid, signal.SIGTERM)

    def join(self) -> None:
        if self.pid is not None and self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]


def _planned_share(path: str, share: int, delimiters: Delimiters, encoding: str,
                   make_guide: Callable, snip: bool, catalogue: RuleCatalogue, claims: bool,
                   out_path: str, digest: type | None, hear) -> None:
    """Another process: waits for the plan (``hear``, a connection from the planner) and
    validates share ``share`` (1-based after the first process's), if there is one."""
    try:
        cuts = hear.recv()
    except EOFError:  # no plan: the first process reads it all alone
        return
    hear.close()
    if share > len(cuts):
        return  # (fewer places to cut than processes: nothing to do)
    end = cuts[share].offset if share < len(cuts) else None
    _share_process(path, cuts[share - 1], end, delimiters, encoding, make_guide, snip,
                   catalogue, claims, out_path, digest)


def _share_process(path: str, cut: Cut, end: int | None, delimiters: Delimiters,
                   encoding: str, make_guide: Callable, snip: bool, catalogue: RuleCatalogue,
                   claims: bool, out_path: str, digest: type | None = None) -> None:
    """A share after the first: validates bytes ``cut.offset``..``end`` and writes its results
    to ``out_path`` (frames: C claims, E the rest; X the kind of failure). ``digest`` (the
    class :class:`~gateway.x12.acks.ClaimSpans`): the claims as spans (what a report counts)
    and the records of the unreadable ones only, instead of every record."""
    import pickle

    with open(out_path, "wb") as out:
        try:
            envelope = _Recording(delimiters, catalogue, cut)
            guide = make_guide(delimiters, envelope, catalogue, snip=snip)
            sep = delimiters.element
            context = [Segment(o, t.split(sep), t) for o, t in (cut.isa, cut.gs)]
            for seg in context:
                guide.feed(seg)
            mark = len(guide.findings)
            feeds = (guide.feed,)
            data_feeds = (_data_feed(guide),)
            collector = None
            if claims:
                batch: list[ClaimRecord] = []

                def keep(claim: ClaimRecord) -> None:
                    batch.append(claim)
                    if len(batch) >= CLAIM_BATCH:
                        _frame(out, b"C", _pickle(batch))
                        batch.clear()

                spans = None
                if digest is not None:
                    spans = digest()
                    add = spans.add

                    def keep(claim: ClaimRecord) -> None:  # noqa: F811 - the digest instead
                        add(claim)
                        if claim.problem:
                            batch.append(claim)

                collector = ClaimCollector(delimiters, keep, keep_encounters=False, spans=spans)
                for seg in context:
                    collector.feed(seg)
                collector._tx = cut.tx
                feeds = (guide.feed, collector.feed)
                data_feeds = (_data_feed(guide), collector.feed_data)
            envelope.events = []
            last, lines = feed_all(
                range_segments(path, cut.offset, end, cut.ordinal - 1, delimiters, encoding),
                envelope, feeds, data_feeds)
            submitters = {}
            if collector is not None:
                collector.finish()
                if digest is not None:
                    _frame(out, b"S", pickle.dumps((spans, _pickle(batch)),
                                                   protocol=pickle.HIGHEST_PROTOCOL))
                elif batch:
                    _frame(out, b"C", _pickle(batch))
                submitters = collector.submitters
            findings = guide.finish()[mark:]
            _frame(out, b"E", pickle.dumps((findings, envelope.events, last, lines, submitters),
                                           protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException as exc:  # noqa: BLE001 - told to the first process, which stops
            # the kind of failure only: a message may quote a value from the file (member data)
            _frame(out, b"X", exc.__class__.__name__.encode())


_ROW = None  # operator.attrgetter of every ClaimRecord field, in order (made on first use)


def _pickle(claims: list[ClaimRecord]) -> bytes:
    """Claims as one blob of tuples of their fields (the encounters are not among them: None
    here). marshal, not pickle: it writes and reads back plain tuples, lists, str and int
    several times quicker (the first process reads every other share's); a field of another
    type (none today) makes it fall back to pickle. The first byte says which."""
    global _ROW
    if _ROW is None:
        import dataclasses
        import operator

        _ROW = operator.attrgetter(*(f.name for f in dataclasses.fields(ClaimRecord)))
    rows = list(map(_ROW, claims))
    try:
        import marshal

        return b"M" + marshal.dumps(rows, 2)  # (version 2: no references, quicker both ways)
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


def merge_spans(into, other) -> None:
    """Append the claims of :class:`~gateway.x12.acks.ClaimSpans` ``other`` to ``into``, as if
    ``into.add`` had been given each of them (its set keys numbered in ``into``)."""
    from array import array

    index = into._key_index
    mapping = []
    for key in other.keys:
        found = index.get(key)
        if found is None:
            found = index[key] = len(into.keys)
            into.keys.append(key)
        mapping.append(found)
    into.ranges.extend(other.ranges)
    into.transactions.extend(array("i", map(mapping.__getitem__, other.transactions)))
    into.problems.extend(other.problems)


def run_shared(reader: X12Reader, path: str, jobs: int, envelope: EnvelopeChecker,
               make_guide: Callable, snip: bool, catalogue: RuleCatalogue,
               take: Callable[[ClaimRecord], None], keep,
               progress: Callable[[int], None] | None = None, spans=None,
               unreadable: Callable[[ClaimRecord], None] | None = None):
    """``validate --jobs N`` on the file at ``path`` (``reader`` open on it, not yet read):
    returns (last ordinal, LX lines, implementation-guide findings in file order, submitters),
    or None when the file cannot be shared (the caller validates it in one process).
    ``make_guide`` (delimiters, envelope, catalogue, snip=...) makes an implementation-guide
    validator (a module-level function or a partial of one: it goes to the other processes).
    ``spans``: when the claims go only to this :class:`~gateway.x12.acks.ClaimSpans` (``take``
    adds each to it and gives an unreadable one to ``unreadable``), the other processes send
    their spans and their unreadable claims instead of every claim."""
    import gc
    import pickle

    delimiters = reader.delimiters
    encoding = reader.notes.encoding
    start = data_start(path, reader.notes.preamble_chars)
    claims_shared = not keep  # encounters and ECM rules stay in this process
    if _skim_patterns(delimiters, encoding) is None:
        return None  # (delimiters that are not single ASCII bytes: one process)
    if not claims_shared:
        weight = FIRST_WEIGHT_READING
    else:
        weight = FIRST_WEIGHT if spans is not None else FIRST_WEIGHT_CLAIMS
    outputs = []
    others = []
    planner = None
    planner_pid = 0
    hears: list = []  # the plan's pipes: to this process, then to each other one
    try:
        # the plan first, in a process of its own: it needs no guide, and the skim is done (or
        # nearly) when the others start at the first ST, not begun. Where there is a fork, the
        # planner and the others are bare forks (no multiprocessing: ≈ 5-10 ms sooner at the
        # first ST); else multiprocessing's spawned processes
        import tempfile

        forks = hasattr(os, "fork")
        context = None
        if forks:
            planner_pid, hears = _fork_planner(path, jobs, start, weight, delimiters,
                                               encoding)
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            pipes = [context.Pipe(duplex=False) for _ in range(jobs)]
            hears = [r for r, _ in pipes]
            planner = context.Process(target=_planner, daemon=True, name="validate-plan",
                                      args=(path, jobs, start, weight, delimiters, encoding,
                                            [w for _, w in pipes]))
            planner.start()
            for _, w in pipes:
                w.close()
        hear = hears[0]
        for share in range(1, jobs):
            handle, out_path = tempfile.mkstemp(prefix="ecm-jobs-", suffix=".bin")
            os.close(handle)
            outputs.append(out_path)
            args = (path, share, delimiters, encoding, make_guide, snip, catalogue,
                    claims_shared, out_path, type(spans) if spans is not None else None,
                    hears[share])
            others.append(_Forked(_planned_share, args) if forks else context.Process(
                target=_planned_share, daemon=True, name=f"validate-share-{share}", args=args))
        guide = make_guide(delimiters, envelope, catalogue, snip=snip)
        collector = ClaimCollector(delimiters, take, keep_encounters=keep,
                                   spans=spans if claims_shared else None)
        feeds = (guide.feed, collector.feed)
        data_feeds = (_data_feed(guide), collector.feed_data)
        segments = iter(reader)
        # by hand up to the first ST (its guide then has the map and rule packs loaded, which
        # the other processes inherit instead of loading them again), then in bulk
        last = lines = 0
        for seg in segments:
            envelope.feed(seg)
            for feed in feeds:
                feed(seg)
            lines += seg.fields[0] == "LX"
            last = seg.ordinal
            if seg.fields[0] == "ST":
                break
        gc.freeze()  # their collector leaves the inherited objects (and their pages) alone
        try:
            for process in others:
                process.start()
        finally:
            gc.unfreeze()
        for other in hears[1:]:
            other.close()
        # on, a slice at a time, until the planner tells where the cuts are
        cuts = None
        ended = False
        wait = os.path.getsize(path) < WAIT_BELOW
        while cuts is None:
            if wait or hear.poll():
                try:
                    cuts = hear.recv()
                except EOFError:  # it failed to plan: this process reads it all
                    cuts = []
                break
            done, more = feed_all(islice(segments, POLL_SEGMENTS), envelope, feeds,
                                  data_feeds)
            if not done:
                ended = True
                break
            last = done
            lines += more
        if ended or not cuts or last >= cuts[0].ordinal:
            # one process after all: no place to cut (one transaction set), or this one got
            # there first (a small file): the others' work is not used
            cuts = []
            done, more = feed_all(segments, envelope, feeds, data_feeds)
            last = done or last
            lines += more
        else:
            done, more = feed_all(islice(segments, cuts[0].ordinal - 1 - last), envelope,
                                  feeds, data_feeds)
            last = done or last
            lines += more
        ends = [c.offset for c in cuts[1:]] + [None]
        guide_findings: list[Finding] = list(guide.findings)
        if claims_shared:
            collector.finish()
        submitters = dict(collector.submitters)
        sep = delimiters.element
        for share, (cut, end, process, out_path) in enumerate(
                zip(cuts, ends, others, outputs), 1):
            if not claims_shared:  # this process reads the claims of the whole file
                for seg in range_segments(path, cut.offset, end, cut.ordinal - 1, delimiters,
                                          encoding):
                    collector.feed(seg)
            process.join()
            result = None
            for kind, payload in _frames(out_path):
                if kind == b"C":
                    for claim in _unpickle(payload):
                        take(claim)
                elif kind == b"S":  # what take would have done with the claims
                    digest, problems = pickle.loads(payload)
                    merge_spans(spans, digest)
                    for claim in _unpickle(problems):
                        unreadable(claim)
                elif kind == b"E":
                    result = pickle.loads(payload)
                elif kind == b"X":
                    raise RuntimeError(f"validate --jobs: share {share} failed: "
                                       f"{payload.decode()}")
            if result is None:
                raise RuntimeError(f"validate --jobs: share {share} stopped without a result")
            findings, events, share_last, share_lines, share_submitters = result
            previous = cut.ordinal - 1
            for ordinal, text in events:  # the envelope sees what one process's would
                if ordinal - previous > 1:
                    envelope.count_data(ordinal - previous - 1)
                envelope.feed(Segment(ordinal, text.split(sep), text))
                previous = ordinal
            if share_last > previous:
                envelope.count_data(share_last - previous)
            guide_findings.extend(findings)
            submitters.update(share_submitters)
            lines += share_lines
            last = share_last
            if progress is not None:
                progress(end if end is not None else os.path.getsize(path))
        collector.finish()
        if not claims_shared:
            submitters.update(collector.submitters)
        guide.finish()
    finally:
        for connection in hears:
            connection.close()  # (those still open)
        if planner_pid:
            _end_planner(planner_pid)
        for process in ([planner] if planner is not None else []) + others:
            if process.is_alive():
                process.terminate()
            if process.pid is not None:
                process.join()
        for out_path in outputs:
            try:
                os.unlink(out_path)
            except OSError:
                pass
    return last, lines, guide_findings, submitters
