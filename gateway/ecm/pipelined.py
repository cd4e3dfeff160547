"""The ECM rules in a second process, alongside the validation that feeds them (pipelining).

The rules cost about as much CPU as the X12 validation itself (``bench/bench_rules.py``). On a
machine with a second core they need not add as much wall time: :func:`start` forks a worker
process as a validation begins; the worker opens the registries itself and sets up while the
caller validates; the caller ships it each batch of claim views (``EncounterRules.batch_size``
claims) as soon as the batch is read, goes on validating, and collects the findings, which come
back per batch in claim order. The caller merges them exactly where the in-process path puts
them, so the findings are the same (tests/test_ecm_pipelined.py runs both over the same inputs).
The CPU spent is about the same as in-process, plus the shipping; the wall time is the larger of
the two processes' times, plus the last batch.

Where it applies (decided here and only here, :func:`pipelining`):

* an input of at least ``rules_pipeline_bytes`` (setting, default 1 MiB; 0: never) - below that
  the fork and set-up cost more than they save - and a second CPU to run on;
* a process that may fork safely: the ``fork`` start method exists, the caller is the main
  thread and the only thread, and the process is not a daemonic child (which may have none).
  In practice: the command line (``validate``, ``ack``, ``convert``, ``split``) and any other
  single-threaded caller. The server's embedded worker threads (and the API process) never
  pipeline: forking a multi-threaded process can deadlock the child on a lock another thread
  held. (``spawn`` is not used instead: a fresh interpreter importing the gateway costs more than
  the rules of a file of this size.)
* registries the worker can open itself: a database by its URL (a SQLite file, PostgreSQL);
  the command line's registry, a SQLite file on the memory file system
  (:meth:`~gateway.registry.store.Registry.in_memory_file`), by its path; any other in-memory
  SQLite registry (``Registry()``) up to ``IMAGE_LIMIT`` bytes, handed over as a serialized
  image (``sqlite3.Connection.serialize``: a copy, paid by the caller). A connection is never
  used on both sides of the fork.
* an engine keeping its own within-file duplicate index (not ``use_seen_index``).

The worker's state (the within-file duplicate index, units per member-day, members whose POF
evidence was checked, presumptive first days) lives in the worker after a run; it is pulled back
(:meth:`RulesWorker.reclaim`) before the same rule engine is used again, in-process or for
another pipelined run, so several files checked with one engine behave as in-process.

A failure in the worker is raised in the caller as :class:`RulesWorkerError` (its kind only: a
message may quote member data); a worker that dies is noticed on the next exchange, never waited
for.
"""

from __future__ import annotations

import gc
import marshal
import os
import pickle
import threading
import weakref
from collections.abc import Callable

from gateway.findings import Finding

IMAGE_LIMIT = 512 * 1024 * 1024  # in-memory registries larger than this stay in-process
DEFAULT_PIPELINE_BYTES = 1024 * 1024

# messages: one byte of kind, then the body
_BATCH, _END, _STATE, _QUIT = b"B", b"E", b"S", b"Q"  # to the worker
_FINDINGS, _DONE, _ERROR = b"F", b"D", b"X"  # from it (and _STATE)
_STATE_FIELDS = ("_seen_lines", "_units_per_day", "_pof_checked", "_first_presumptive",
                 "_presumptive_days")


class RulesWorkerError(RuntimeError):
    """The ECM rules failed in their worker process, or it stopped."""


def _threshold() -> int:
    from gateway.settings import early

    return early("rules_pipeline_bytes")


def _cpus() -> int:
    """The CPUs this process may run on (one: a second process would only take turns)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fork_safe() -> bool:
    """Whether this process may fork a worker: the ``fork`` start method exists, the caller is
    the main thread and the only thread (a fork copies no other thread, but whatever locks they
    held stay held in the child), and the process is not a daemonic child (no children)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods() and \
        threading.current_thread() is threading.main_thread() and \
        threading.active_count() == 1 and not multiprocessing.current_process().daemon


def pipelining(rules: EncounterRules, size: int | None) -> bool:
    """Whether a validation of ``size`` bytes runs ``rules`` in a worker process (the one
    place that decides: see the module docstring)."""
    threshold = _threshold()
    if not threshold or size is None or size < threshold:
        return False
    if _cpus() < 2 or not rules._seen_own or not fork_safe():
        return False
    return rules.registry is None or _locator(rules.registry, probe=True) is not None


def _locator(registry, probe: bool = False):
    """How the worker opens ``registry``: ("url", url); ("memory-file", path) for
    :meth:`~gateway.registry.store.Registry.in_memory_file` (the command line's);
    ("image", bytes) for another in-memory SQLite database (None when
    larger than IMAGE_LIMIT); ``probe``: the image's size is checked, the image not made."""
    if getattr(registry, "memory_file", None):  # (the worker opens the same file)
        return "memory-file", registry.memory_file
    engine = registry.engine
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return "url", url.render_as_string(hide_password=False)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file::memory:") \
            and "mode=memory" not in str(url):
        return "url", url.render_as_string(hide_password=False)
    raw = engine.raw_connection()  # this thread's connection: the in-memory database's
    try:
        connection = raw.driver_connection
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        if pages * page_size > IMAGE_LIMIT:
            return None
        if probe:
            return "image", b""
        return "image", connection.serialize()
    finally:
        raw.close()


def _reopen(locator):
    """The worker's own registry, from :func:`_locator`'s answer."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    from gateway.registry.store import Registry

    # (the caller's Registry set the database up: its schema is not checked again here)
    kind, value = locator
    if kind == "url":
        return Registry(value, schema=False)
    if kind == "memory-file":
        from gateway.registry.store import memory_file_engine

        return Registry(engine=memory_file_engine(value), schema=False)
    import sqlite3

    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.deserialize(value)
    engine = create_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)
    return Registry(engine=engine, schema=False)


def start(rules: EncounterRules, size: int | None,
          entries_of: Callable[[list], list]) -> RulesWorker | None:
    """A worker running ``rules`` for one validation of ``size`` bytes, or None when
    :func:`pipelining` says no. ``entries_of(rows)``: the ``(view, ClaimPlace)`` pairs
    :meth:`~gateway.ecm.rules.EncounterRules.check` takes, from the rows of a batch the caller
    submits, one a claim (runs in the worker)."""
    rules.reclaim()
    if not pipelining(rules, size):
        return None
    import multiprocessing

    from gateway.gcpause import collector_paused  # noqa: F401 - (the worker's, loaded once)

    context = multiprocessing.get_context("fork")
    # (in a list the parent empties once the worker has its copy: an image is not kept here)
    locator = [_locator(rules.registry) if rules.registry is not None else None]
    inbox, to_worker = context.Pipe(duplex=False)  # (the worker reads, the caller writes)
    from_worker, outbox = context.Pipe(duplex=False)  # (the caller reads, the worker writes)
    process = context.Process(target=_serve_on_thread, daemon=True, name="ecm-rules",
                              args=(rules, locator, entries_of, inbox, outbox,
                                    (to_worker, from_worker)))
    # Every object is frozen (left out of the collector's scans) from before the fork until the
    # run ends, on both sides: a collection marks each object it scans, and each page it marks
    # would be copied (the pages are shared after the fork until either side writes them).
    gc.freeze()
    try:
        process.start()
    except BaseException:
        gc.unfreeze()
        raise
    locator.clear()
    inbox.close()
    outbox.close()
    for connection in (to_worker, from_worker):
        _widen(connection)
    return RulesWorker(rules, process, to_worker, from_worker)


PIPE_BYTES = 1024 * 1024  # a pipe's buffer: a batch is written without waiting for the reader


def _widen(connection) -> None:
    """A larger buffer for the pipe behind ``connection`` (Linux; elsewhere as it is): the
    caller's writes then rarely wait for the worker to be scheduled, and the worker's for the
    caller."""
    import fcntl

    try:
        fcntl.fcntl(connection.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:  # (above the system's pipe-max-size, or not a pipe)
        pass


# -- the worker ---------------------------------------------------------------------------------
COLLECT_EVERY = 200  # batches between two full collections in the worker
_KEEP: list = []  # the parent's objects the worker must never close (e.g. its registry)


def _serve_on_thread(*args) -> None:
    """The worker process: :func:`_serve` on a thread of its own, the process's main thread
    waiting for it. glibc's malloc gives a new thread an arena of its own, in fresh memory;
    the main thread's arena is the heap the worker shares with the caller since the fork,
    where each free and malloc links and unlinks free chunks all over it, and each page that
    writes is a copy-on-write fault, each free chunk it walks a cache miss. At 10k claims the
    worker's copy-on-write faults went from 3,330 to 1,716 (its fresh-page faults from 2,638
    to 3,569) and its CPU from 218 to 212 ms (medians of 32 runs on a loaded machine; user
    196 -> 186, system 24.8 -> 23.6). (A daemon: a main thread stopped by a signal does not
    wait for it; the caller stops a worker it no longer needs.)"""
    serving = threading.Thread(target=_serve, args=args, name="ecm-rules", daemon=True)
    serving.start()
    serving.join()


def _serve(rules: EncounterRules, locator, entries_of, inbox, outbox, callers_ends) -> None:
    """The worker: batches in, findings out, until told to stop (or the caller goes)."""
    import queue

    finding_rows = rules.finding_rows  # (compiled with the rules: no import of them here)

    for end in callers_ends:  # (inherited: with them open here, the caller's exit is no EOF)
        end.close()
    _KEEP.append(rules.registry)  # its connections are the parent's: left alone here
    try:
        if locator[0] is not None:
            rules.registry = _reopen(locator.pop())
            rules.warm_up()  # (while the caller reads the first batch)
        waiting: queue.SimpleQueue = queue.SimpleQueue()

        def read() -> None:  # the inbox is always drained: the caller never blocks sending
            try:
                while True:
                    waiting.put(inbox.recv_bytes())
            except (EOFError, OSError):
                waiting.put(None)

        threading.Thread(target=read, daemon=True).start()
        # No cyclic collection between batches either (the rules pause it while they run): the
        # objects a batch makes (its claims, snapshot, findings) are freed by reference
        # counting; a full collection every COLLECT_EVERY batches bounds what a cycle would keep.
        gc.disable()
        batches = 0
        messages: dict = {}  # the findings' messages sent so far (finding_rows: by number)
        while True:
            message = waiting.get()
            if message is None or message == _QUIT:
                return
            kind = message[:1]
            if kind == _BATCH:
                batches += 1
                if not batches % COLLECT_EVERY:
                    gc.collect()
                batch = _unpack(memoryview(message)[1:])
                found = rules.check(entries_of(batch))
                outbox.send_bytes(_pack(finding_rows(found, messages), _FINDINGS))
            elif kind == _END:
                outbox.send_bytes(_DONE)
            elif kind == _STATE:
                outbox.send_bytes(_STATE + pickle.dumps(
                    tuple(getattr(rules, name) for name in _STATE_FIELDS),
                    protocol=pickle.HIGHEST_PROTOCOL))
                return
    except BaseException as exc:  # noqa: BLE001 - told to the caller, which raises
        try:  # the kind of failure only: a message may quote a value (member data)
            outbox.send_bytes(_ERROR + exc.__class__.__name__.encode())
        except (OSError, ValueError):
            pass


def _pack(rows: list, kind: bytes = b"") -> bytes:
    """marshal (several times quicker than pickle for plain tuples of str/int/None: findings,
    text rows), pickle for a value marshal cannot write (a view's dates); the first byte
    (after ``kind``, a message's) says which. (One copy of the body: the prefix is joined
    first; a copy of a batch is fresh memory, whose pages fault in a forked process.)"""
    try:
        return kind + b"M" + marshal.dumps(rows)
    except ValueError:
        return kind + b"P" + pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(body) -> list:
    if body[:1] == b"M":
        return marshal.loads(body[1:])
    return pickle.loads(body[1:])


# -- the caller's side --------------------------------------------------------------------------
class RulesWorker:
    """The caller's handle on a worker: :meth:`submit` each batch, :meth:`finish` for the
    findings in order. A context manager: leaving it by an exception stops the worker."""

    def __init__(self, rules: EncounterRules, process, to_worker, from_worker) -> None:
        self.rules = rules
        self.process = process
        self.to_worker = to_worker
        self.from_worker = from_worker
        self.batch_size = rules.batch_size
        self.findings: list[Finding] = []
        # the findings as they came (marshal'd rows, one body a batch), made Finding objects
        # while the caller waits for the last batch (:meth:`finish`), not while it validates
        self._bodies: list = []
        self.sent = 0  # batches submitted
        self.done = 0  # batches whose findings came back
        self._frozen = True  # (start froze the collector's objects)
        # the findings' rows made findings again (compiled with the rules), their messages
        # as they came (a message sent before comes as its number in this list)
        self._findings_of_rows = rules.findings_of_rows
        self._messages: list[str] = []
        self._finalizer = weakref.finalize(self, _stop, process, to_worker, from_worker,
                                           os.getpid())

    def _thaw(self) -> None:
        if self._frozen:
            self._frozen = False
            gc.unfreeze()

    def __enter__(self) -> RulesWorker:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:  # the validation failed: the worker's work is of no use
            if self._finalizer.alive and self.process.is_alive():  # (not stopped already)
                self.process.kill()
            self.close()

    def submit(self, batch: list[tuple]) -> None:
        """One batch of claims in claim order, each a tuple of which ``entries_of`` (see
        :func:`start`) makes the claim's view and place, in the worker."""
        if not batch:
            return
        self._take(block=False)
        self._send(_pack(batch, _BATCH) if batch[0][0].__class__ is str else
                   _BATCH + b"P" + pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        self.sent += 1

    def keeping_up(self, lag: int = 1) -> bool:
        """Whether the worker has checked every batch but the last ``lag`` submitted (as of the
        last look at what it sent back): with ``lag`` 1, it is working on the last one (or
        idle); with more, it has that many batches' work queued, none of it waiting on the
        caller."""
        return self.sent - self.done <= lag

    def finish(self) -> list[Finding]:
        """Every finding of the run, in claim order. The worker then waits, holding the
        engine's state, until the engine is used again (:meth:`reclaim`) or closed."""
        self._send(_END)
        try:
            while True:  # (what came meanwhile is made into findings while the worker works)
                if self._bodies and not self.from_worker.poll():
                    self._unpack_one()
                elif self._take(block=True) == _DONE:
                    break
            while self._bodies:
                self._unpack_one()
        finally:
            self._thaw()
        self.rules._worker = self
        return self.findings

    def _unpack_one(self) -> None:
        """The findings of the oldest batch not made into findings yet."""
        self._findings_of_rows(_unpack(self._bodies.pop(0)), self.findings, self._messages)

    def reclaim(self) -> None:
        """The engine's state back from the worker, which then ends."""
        self.rules._worker = None
        self._send(_STATE)
        while True:
            message = self._receive()
            if message[:1] == _STATE:
                for name, value in zip(_STATE_FIELDS, pickle.loads(memoryview(message)[1:])):
                    setattr(self.rules, name, value)
                break
            self._handle(message)
        self.close()

    def close(self) -> None:
        """Stop the worker (the engine's state from its run is lost)."""
        if self.rules._worker is self:
            self.rules._worker = None
        self._thaw()
        self._finalizer()

    # -- exchanges ------------------------------------------------------------------------------
    def _send(self, message: bytes) -> None:
        try:
            self.to_worker.send_bytes(message)
        except OSError:
            self._failed()

    def _take(self, block: bool) -> bytes | None:
        """Handle what the worker sent (all that is waiting; with ``block``, at least one
        message); the kind of the last one."""
        last = None
        while block or self.from_worker.poll():
            message = self._receive() if block else self._read()
            last = self._handle(message)
            block = False
        return last

    def _handle(self, message: bytes) -> bytes:
        kind = message[:1]
        if kind == _FINDINGS:
            self._bodies.append(memoryview(message)[1:])
            self.done += 1
        elif kind == _ERROR:
            self.close()
            raise RulesWorkerError(
                f"the ECM rules failed in their worker process ({bytes(message[1:]).decode()})")
        return kind

    def _read(self) -> bytes:
        try:
            return self.from_worker.recv_bytes()
        except (EOFError, OSError):
            self._failed()

    def _receive(self) -> bytes:
        """The next message, waiting for it; a worker that stopped is an error, not a hang."""
        from multiprocessing.connection import wait

        while True:
            ready = wait([self.from_worker, self.process.sentinel], timeout=5.0)
            if self.from_worker in ready:
                return self._read()
            if self.process.sentinel in ready or not self.process.is_alive():
                self._failed()

    def _failed(self):
        self.process.join(1.0)
        code = self.process.exitcode
        self.close()
        raise RulesWorkerError("the ECM rules worker process stopped"
                               + (f" (exit code {code})" if code is not None else ""))


def _stop(process, to_worker, from_worker, owner: int) -> None:
    if os.getpid() != owner:  # (a copy of the handle in a process forked since: not its worker)
        return
    try:  # (not only the end of the pipe: a process forked meanwhile may hold its other end)
        to_worker.send_bytes(_QUIT)
    except (OSError, ValueError):
        pass
    for connection in (to_worker, from_worker):
        try:
            connection.close()
        except OSError:
            pass
    if process.is_alive():
        process.join(0.5)  # (it ends on the message, or the closed pipe)
    if process.is_alive():
        process.kill()
    if process.pid is not None:
        process.join()
    process.close()  # (the two descriptors of its sentinel pipe, else held until collected)
