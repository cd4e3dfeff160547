"""Running a submission: the one way in (:func:`submit`), processing with retries
(:func:`process`, :func:`run_claimed`) and :func:`replay`. A run is claimed in the store under
a lease kept alive by a heartbeat (see :meth:`Store.claim`), so exactly one worker runs a
submission at a time and a killed worker's submission is taken up again. The steps themselves, one per kind, are in
:mod:`gateway.pipeline.steps`, and run from the raw payload the store kept, so a run can be
replayed at any time. A failing step is retried with backoff, then the submission goes to
``dead_letter`` with the error; ``replay`` runs a stored payload again as a new submission
linked to the original.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from gateway.pipeline.delivery import settle_redelivery
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.search import keys_of
from gateway.pipeline.status import Status
from gateway.pipeline.steps import STEPS, Outcome, StepResult
from gateway.pipeline.store import Run, Store
from gateway.settings import current as settings

RETRIES = 3
RUNS_ENDED_CHANNEL = "ecm-gateway:runs-ended"  # Redis pub/sub: a Celery worker's run of <id> ended
BACKOFF_SECONDS = 0.5
log = logging.getLogger("gateway.pipeline")


def _x12_key(payload: bytes) -> str | None:
    """Sender + ISA13 (+ first GS06/ST02) of an interchange, for resubmission detection."""
    head = payload[:4096].decode("latin-1", errors="replace")
    start = head.find("ISA")
    if start < 0 or len(head) < start + 106:
        return None
    isa = head[start:start + 106]
    sep = isa[3]
    fields = isa.split(sep)
    if len(fields) < 14:
        return None
    rest = head[start + 106:]
    gs = rest.split("GS" + sep, 1)
    gs06 = gs[1].split(sep)[5] if len(gs) > 1 and len(gs[1].split(sep)) > 5 else ""
    return f"{fields[6].strip()}:{fields[13]}:{gs06}"


def lease_length() -> timedelta:
    """A run's lease (setting ``lease_seconds``)."""
    return timedelta(seconds=settings().lease_seconds)


LEASE = timedelta(seconds=60)  # the default lease (the setting ``lease_seconds`` rules)
# FOR TESTS ONLY (the crash test): sleep this many seconds at every write a step makes (into its
# Run), so a kill lands in the middle of a run (setting ``test_slow_writes``). Never set it in
# a deployment.
TEST_SLOW_WRITES = "ECM_GATEWAY_TEST_SLOW_WRITES"
_BOOT = uuid.uuid4().hex[:8]


def worker_id() -> str:
    """``host:pid:boot:thread`` — who holds a lease; a restarted server recognises its dead
    predecessor's claims by host and pid (:func:`owner_alive`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_BOOT}:{threading.get_ident()}"


def owner_alive(owner: str) -> bool:
    """False for a lease owner on this host whose process is gone (or is an earlier life of
    this very process id, e.g. pid 1 in a restarted container); True when unsure."""
    host, _, rest = owner.partition(":")
    pid, _, rest = rest.partition(":")
    boot = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return boot == _BOOT
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _RunsEnded:
    """Runs that end in this process wake whoever awaits them (:func:`gateway.pipeline.queue.
    wait_until_done`) at once, instead of at their next look at the store."""

    def __init__(self, remember: int = 4096) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}
        self._done: dict[str, None] = {}  # the latest runs finished here, oldest first
        self._remember = remember
        self.local = False  # runs happen in this process (an embedded queue was started)

    def finished_here(self, submission_id: str) -> bool:
        """A run of ``submission_id`` finished (``done`` in the store) in this process lately."""
        with self._lock:
            return submission_id in self._done

    def watch(self, submission_id: str) -> asyncio.Future:
        """A future of the running event loop, resolved when a run of ``submission_id`` ends
        here (call :meth:`forget` when no longer waiting)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiting.setdefault(submission_id, []).append((loop, future))
        return future

    def forget(self, submission_id: str, future: asyncio.Future) -> None:
        with self._lock:
            waiting = [w for w in self._waiting.get(submission_id, []) if w[1] is not future]
            if waiting:
                self._waiting[submission_id] = waiting
            else:
                self._waiting.pop(submission_id, None)

    def wake(self, submission_id: str) -> None:
        """A run of ``submission_id`` ended in another process (a Celery worker says so):
        whoever waits looks at the store now."""
        self._resolve_waiting(submission_id)

    def ended(self, submission_id: str, finished: bool = True) -> None:
        """A run of ``submission_id`` ended here; ``finished``: it is ``done`` in the store
        (not a run that lost its lease)."""
        with self._lock:
            if finished:
                self._done[submission_id] = None
                while len(self._done) > self._remember:
                    del self._done[next(iter(self._done))]
        self._resolve_waiting(submission_id)

    def _resolve_waiting(self, submission_id: str) -> None:
        with self._lock:
            waiting = self._waiting.pop(submission_id, [])
        for loop, future in waiting:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(True)


RUNS_ENDED = _RunsEnded()


class _Leases:
    """Keeps the leases of this process's runs alive, each renewed every third of its length
    while its run lasts: ONE thread for all of them (a thread started per run cost a few
    milliseconds of every run under load)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, list] = {}  # key -> [store, submission_id, worker, lease, due]
        self._keys = iter(range(1, 2 ** 62))
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, store: Store, submission_id: str, worker: str, lease: timedelta) -> int:
        third = lease.total_seconds() / 3
        with self._lock:
            key = next(self._keys)
            self._held[key] = [store, submission_id, worker, lease, time.monotonic() + third]
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                # (a forked Celery pool process inherits the object, not the thread)
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                name="lease-heartbeat")
                self._thread.start()
        self._wake.set()  # the new lease may be due before the thread's next look
        return key

    def release(self, key: int) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _beat(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                due = [(key, list(held)) for key, held in self._held.items() if held[4] <= now]
            for key, (store, submission_id, worker, lease, _) in due:
                try:
                    kept = store.extend_lease(submission_id, worker, lease)
                except Exception as exc:  # noqa: BLE001 - retried at the next beat
                    log.warning("lease renewal failed: %s", exc.__class__.__name__,
                                extra={"submission_id": submission_id})
                    kept = True
                with self._lock:
                    if key in self._held:
                        if kept:
                            self._held[key][4] = time.monotonic() + lease.total_seconds() / 3
                        else:  # lost: the run notices at its end (Store.finish)
                            del self._held[key]
            with self._lock:
                next_due = min((held[4] for held in self._held.values()), default=None)
            wait = 1.0 if next_due is None else min(1.0, max(0.0, next_due - time.monotonic()))
            self._wake.wait(wait)


LEASES = _Leases()


class _Heartbeat:
    """A run's lease kept alive (by :data:`LEASES`) while the ``with`` block lasts."""

    def __init__(self, store: Store, submission_id: str, worker: str, lease: timedelta):
        self.args = (store, submission_id, worker, lease)
        self.key = 0

    def __enter__(self):
        self.key = LEASES.hold(*self.args)
        return self

    def __exit__(self, *exc) -> None:
        LEASES.release(self.key)


def current_outcome(store: Store, submission_id: str) -> Outcome:
    """What a finished (or still running) submission looks like, from the store."""
    found, ack, findings = store.answer(submission_id, "ack-999")
    ta1 = None
    if found["status"] == Status.REJECTED and found["kind"] == "x12":
        ta1 = store.answer(submission_id, "ack-ta1")[1]
    return Outcome(submission_id, found["status"], bool((found["summary"] or {}).get("valid")),
                   ack.decode("latin-1") if ack is not None else None, findings,
                   ack_ta1=ta1.decode("latin-1") if ta1 is not None else None,
                   error=found.get("error"))


def process(store: Store, partners: Partners, submission_id: str, sleep=None,
            worker: str | None = None, lease: timedelta | None = None) -> Outcome:
    """Claim a stored submission and run it (:func:`run_claimed`). When another worker holds
    it, or it is already done, nothing runs and its current state is returned."""
    worker = worker or worker_id()
    lease = lease or lease_length()
    state = store.claim(submission_id, worker, lease)
    if state == "missing":
        raise KeyError(submission_id)
    if state != "claimed":
        return current_outcome(store, submission_id)
    return run_claimed(store, partners, submission_id, worker, sleep=sleep, lease=lease)


def run_claimed(store: Store, partners: Partners, submission_id: str, worker: str, sleep=None,
                lease: timedelta | None = None, work=None) -> Outcome:
    """Run a submission ``worker`` has claimed through its pipeline, retrying a failing run
    with backoff (each retry starts from a clean slate); a run that keeps failing leaves the
    submission in ``dead_letter`` with the error (the raw payload stays, for replay). The run
    ends with :meth:`Store.finish`, which makes its outputs deliverable. ``work(store,
    partners, submission_id)`` replaces the pipeline (the merge of a split file)."""
    sleep = sleep or time.sleep
    lease = lease or lease_length()
    delay = settings().test_slow_writes
    with _Heartbeat(store, submission_id, worker, lease):
        found = store.submission(submission_id)
        run = Run(store, submission_id, attempts=found["attempts"] if found else 0,
                  delay=delay)
        if work is not None:
            result = work(run, partners, submission_id)
            run.write_result(result)
            outcome = result.outcome()
        else:
            outcome = _run(store, run, partners, found, sleep)
    finished = store.finish(submission_id, worker, run=run)
    if not finished:
        log.warning("lease lost before the end of the run; another worker redoes it",
                    extra={"submission_id": submission_id})
    RUNS_ENDED.ended(submission_id, finished)
    return outcome


def _run(store: Store, run: Run, partners: Partners, found: dict, sleep) -> Outcome:
    """The step of the submission's kind, retried; the :class:`StepResult` it returns is held
    in ``run`` (written in one transaction when the run finishes). ``failed`` between retries
    is written at once, for whoever looks."""
    submission_id = found["id"]
    partner = partners.partners.get(found["partner"])
    if partner is None:
        run.set_status(submission_id, Status.DEAD_LETTER, error="unknown partner")
        return Outcome(submission_id, Status.DEAD_LETTER.value, False, None, 0)
    step = STEPS[found["kind"]]
    for attempt in range(1, RETRIES + 1):
        if attempt > 1:
            run.restart()
        try:
            run.attempt(submission_id)
            result: StepResult = step(run, partners, partner, submission_id)
            if found.get("channel") == "replay":  # never deliver the same document twice
                settle_redelivery(run, found, result)
            run.write_result(result)
            return result.outcome()
        except Exception as exc:  # noqa: BLE001 - recorded, retried, then dead-lettered
            error = f"{exc.__class__.__name__} on attempt {attempt}"
            log.warning("processing failed: %s", error,
                        extra={"submission_id": submission_id, "status": Status.FAILED.value})
            if attempt == RETRIES:
                run.restart()
                run.set_status(submission_id, Status.DEAD_LETTER, error=error)
                return Outcome(submission_id, Status.DEAD_LETTER.value, False, None, 0)
            store.set_status(submission_id, Status.FAILED, error=error)
            sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def run_step(store: Store, partners: Partners, submission_id: str) -> Outcome:
    """Run a stored submission's step once, here, outside the queue and its leases, and write
    its result at once (tools and tests that re-run a step; the queue uses
    :func:`run_claimed`)."""
    found = store.submission(submission_id)
    run = Run(store, submission_id)
    result = STEPS[found["kind"]](run, partners, partners.partners[found["partner"]],
                                  submission_id)
    run.write_result(result)
    run.flush()
    return result.outcome()


class ReplayRefused(ValueError):
    """A delivered submission is replayed only with ``force`` (named, with the reason)."""


def replay(store: Store, partners: Partners, submission_id: str, actor: str,
           queue=None, force: bool = False) -> Outcome | str:
    """Process the stored raw payload of ``submission_id`` again, as a new submission linked to
    it (``parent_id``). A failed, dead-lettered or rejected submission is simply run again;
    one that already went onward (``routed``/``delivered``) only with ``force`` — and then a
    routed document identical to one its chain delivered is not delivered again, a changed one
    goes as a replacement (:func:`gateway.pipeline.delivery.settle_redelivery`). With a
    ``queue`` the new submission is handed to it and its id is returned; without, it runs here
    and its :class:`Outcome` is returned."""
    found = store.submission(submission_id)
    if found is None:
        raise KeyError(submission_id)
    if found["status"] in (Status.ROUTED, Status.DELIVERED) and not force:
        raise ReplayRefused(f"submission {submission_id} is {found['status']}: its documents "
                            f"went onward already; replay it with force to run it again "
                            f"(identical documents are not delivered twice)")
    worker = None if queue is not None else worker_id()
    kept = store.receive(partner=found["partner"], channel="replay", kind=found["kind"],
                         filename=found.get("filename"),
                         payload=store.raw_payload(submission_id), parent_id=submission_id,
                         claimed_by=worker, lease=lease_length(),
                         keys=store.search_keys_of(submission_id))
    store.audit(actor=actor, action="replay", target=submission_id,
                detail=f"new submission {kept.submission_id}"
                       + (" (forced)" if force else ""))
    if queue is not None:
        queue.enqueue(kept.submission_id)
        return kept.submission_id
    return run_claimed(store, partners, kept.submission_id, worker)


@dataclass
class Submitted:
    submission_id: str
    duplicate: bool
    status: str
    outcome: Outcome | None = None
    submission: dict | None = None  # queued: the submission as stored (Received.row)


def submit(store: Store, partners: Partners, partner: Partner, *, channel: str, kind: str,
           filename: str | None, payload: bytes, idempotency_key: str | None = None,
           queue=None, version: dict | None = None) -> Submitted:
    """The one way in, for every channel: store the raw payload (before any answer), detect a
    resubmission, audit, then hand the submission to ``queue`` (:mod:`gateway.pipeline.queue`;
    the answer's status is then ``received``) or, without a queue, process it here. A
    resubmission is answered with the original. ``version``: the submission is an update of
    a FHIR resource (see :meth:`Store.receive`; may raise :class:`VersionConflict`)."""
    worker = None if queue is not None else worker_id()  # processed here: born claimed
    kept = store.receive(partner=partner.id, channel=channel, kind=kind, filename=filename,
                         payload=payload, idempotency_key=idempotency_key,
                         x12_key=_x12_key(payload) if kind == "x12" else None,
                         claimed_by=worker, lease=lease_length(), version=version,
                         keys=keys_of(kind, filename, payload),
                         audit={"actor": partner.id, "action": "submit",
                                "detail": f"{kind} via {channel}"})
    details = {"submission_id": kept.submission_id, "partner": partner.id, "kind": kind,
               "channel": channel, "size": len(payload)}
    if kept.duplicate_of:
        original = store.submission(kept.duplicate_of)
        log.info("resubmission answered with the original", extra={
            **details, "submission_id": kept.duplicate_of, "status": original["status"]})
        return Submitted(kept.duplicate_of, True, original["status"])
    log.info("submission stored", extra=details)
    if queue is not None:
        queue.enqueue(kept.submission_id)
        return Submitted(kept.submission_id, False, Status.RECEIVED.value, submission=kept.row)
    outcome = run_claimed(store, partners, kept.submission_id, worker)
    log.info("submission processed", extra={**details, "status": outcome.status,
                                            "findings": outcome.findings})
    return Submitted(outcome.submission_id, False, outcome.status, outcome)
