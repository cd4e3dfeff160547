"""Processing off the request path. :func:`make_queue` gives one of two engines behind the same
small interface (``start()``, ``enqueue(submission_id)``, ``stop()``):

* :class:`EmbeddedQueue` (the default, no ``--queue``): worker threads inside the server
  process take submissions from the store itself (:meth:`Store.claim_next`), so the queue is
  as durable as the store; at start-up it releases the claims of a killed predecessor and
  resumes everything not finished.
* :class:`CeleryQueue` (``--queue redis://host:port/0``): each submission id is sent as the
  Celery task ``gateway.process_submission`` to a Redis broker and run by ``ecm-gateway worker``
  processes (on any machine that reaches the store). The broker is only a doorbell: the task
  claims the submission in the store, so a task delivered twice runs once, and a sweeper in
  the API process re-sends what the broker may have lost (a submission queued but not handed
  over, or running under an expired lease of a killed worker).

Either way a worker runs :func:`gateway.pipeline.process.run_claimed` (retries with backoff,
then dead letter). :func:`wait_until_done` lets the API answer a small X12 synchronously.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

from gateway.pipeline.partners import Partners
from gateway.pipeline.process import (
    RUNS_ENDED_CHANNEL,
    RUNS_ENDED,
    lease_length,
    owner_alive,
    run_claimed,
    worker_id,
)
from gateway.pipeline.store import Store
from gateway.settings import current as settings

log = logging.getLogger("gateway.queue")
IDLE_POLL_SECONDS = 0.5
REDELIVER_AFTER = timedelta(minutes=5)
# an embedded worker defers claiming while the API answers FHIR requests, at most the setting
# ``defer_seconds``; the Celery sweeper looks every ``sweep_seconds`` (gateway.settings)
QUIET_SECONDS = 0.005  # and claims only once the API stayed idle this long
SHARED_LOOK_SECONDS = 0.002  # how often the other API processes' load is looked at
CORES = os.cpu_count() or 1
SHARED_IDLE_LOOK_SECONDS = 0.02  # an idle worker's look for what other API processes queued


class _ApiLoad:
    """What the API is busy with, for the embedded workers, which share its CPU: FHIR requests
    being worked on (their validation and store write; routing them can wait, nobody waits
    for it) and waits for a run's end (an X12 client waiting for its 999, which must not wait
    for anybody's politeness). With several API processes (``serve --api-workers N``) the
    requests of them all count (:meth:`share`): a worker routing in one process would take a
    core from the requests the others answer, once they keep every core busy."""

    SLOTS = 64  # API processes sharing one load file

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._requests = 0
        self._waits = 0
        self._shared = None  # (mmap, this process's slot, the open file) once shared

    def share(self, path) -> bool:
        """Count the FHIR requests of every API process using the load file ``path``: each
        process holds one slot of it (a byte-range lock, released when the process ends)
        where it writes its own count; the workers read the sum. False when no slot was
        free (then this process counts its own requests only)."""
        import fcntl
        import mmap
        from pathlib import Path

        if self._shared is not None:
            return True
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 - held for the process's life
        size = 8 * self.SLOTS  # per slot: FHIR requests in flight, then submissions queued
        if os.fstat(handle.fileno()).st_size < size:
            handle.truncate(size)
        for slot in range(self.SLOTS):
            try:  # the lock is beyond the counts: writing them never touches it
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, size + slot)
            except OSError:
                continue
            shared = mmap.mmap(handle.fileno(), size)
            struct.pack_into("i", shared, 4 * slot, 0)  # a dead predecessor's count
            with self._changed:
                self._shared = (shared, slot, handle)
            return True
        handle.close()
        return False

    def _publish(self) -> None:
        if self._shared is not None:
            shared, slot, _ = self._shared
            struct.pack_into("i", shared, 4 * slot, self._requests)

    def queued(self) -> None:
        """This process queued a submission: the idle workers of the others look now (an
        embedded worker is woken by its own process's queue only)."""
        if self._shared is not None:
            shared, slot, _ = self._shared
            at = 4 * (self.SLOTS + slot)
            struct.pack_into("i", shared, at,
                             (struct.unpack_from("i", shared, at)[0] + 1) % 2 ** 31)

    def queued_anywhere(self) -> tuple | None:
        """What :meth:`queued` counted in every process (changes when any queued); None when
        not shared."""
        if self._shared is None:
            return None
        return struct.unpack_from(f"{self.SLOTS}i", self._shared[0], 4 * self.SLOTS)

    def _others(self) -> int:
        """FHIR requests in flight in the other API processes."""
        if self._shared is None:
            return 0
        shared, slot, _ = self._shared
        counts = struct.unpack_from(f"{self.SLOTS}i", shared)
        return sum(c for i, c in enumerate(counts) if i != slot and c > 0)

    @contextmanager
    def request(self):
        """Around a FHIR create or validation, from its arrival to its answer."""
        with self._changed:
            self._requests += 1
            self._publish()
        try:
            yield
        finally:
            with self._changed:
                self._requests -= 1
                self._publish()
                if self._requests == 0:
                    self._changed.notify_all()

    @contextmanager
    def waiting(self):
        """Around a wait for a run's end: workers claim at once meanwhile."""
        with self._changed:
            self._waits += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._waits -= 1

    def polite(self) -> bool:
        """Claiming now would slow FHIR requests, and nobody waits for a run: a request of
        this process (they share its GIL), or as many requests in the other API processes
        as the machine has cores (fewer leave a core idle for routing)."""
        return self._waits == 0 and (self._requests > 0 or self._others() >= CORES)

    def wait_quiet(self, until: float, stop: threading.Event) -> bool:
        """Wait until claiming is no longer impolite or the monotonic time ``until``;
        True when it became polite to claim (not merely late). Another process's requests
        end without a notice here: then the count is looked at every few milliseconds."""
        with self._changed:
            while self.polite() and not stop.is_set():
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining if self._shared is None
                                   else min(remaining, SHARED_LOOK_SECONDS))
        return True

    def wake_all(self) -> None:
        with self._changed:
            self._changed.notify_all()


API_LOAD = _ApiLoad()


class EmbeddedQueue:
    """``workers`` threads claiming from the store; ``enqueue`` only wakes them (the submission
    is already queued by being stored)."""

    engine = "embedded"

    def __init__(self, store: Store, partners: Partners, workers: int = 1,
                 lease: timedelta | None = None) -> None:
        self.store, self.partners, self.lease = store, partners, lease or lease_length()
        self.count = max(1, workers)
        self._wake = threading.Condition()
        self._pending = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = threading.Lock()

    def start(self) -> None:
        with self._started:
            if self._threads:
                return
            resumed = self.store.requeue_abandoned(owner_alive)
            if resumed:
                log.info("released %d claims of a stopped worker", len(resumed))
            self._stop.clear()
            RUNS_ENDED.local = True
            for n in range(self.count):
                thread = threading.Thread(target=self._work, name=f"gateway-worker-{n}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def enqueue(self, submission_id: str) -> None:
        self.start()
        with self._wake:
            self._pending += 1
            self._wake.notify()
        API_LOAD.queued()  # and the workers of the other API processes, which may be free

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        API_LOAD.wake_all()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads = []

    def _work(self) -> None:
        draining = False  # deferred as long as allowed: run until the queue is empty
        deferred_since = None
        while not self._stop.is_set():
            if not draining and API_LOAD.polite():
                # the GIL is the API's while it answers FHIR requests: routing waits
                if deferred_since is None:
                    deferred_since = time.monotonic()
                draining = not API_LOAD.wait_quiet(deferred_since + settings().defer_seconds,
                                                   self._stop)
                if not draining:  # a client's next request may be a moment away
                    self._stop.wait(QUIET_SECONDS)
                continue
            deferred_since = None
            worker = worker_id()
            try:
                submission_id = self.store.claim_next(worker, self.lease)
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable
                log.error("claiming work failed: %s", exc.__class__.__name__)
                self._stop.wait(IDLE_POLL_SECONDS)
                continue
            if submission_id is None:
                draining = False
                self._idle()
                continue
            _run_logged(self.store, self.partners, submission_id, worker, self.lease)


    def _idle(self) -> None:
        """Nothing to claim: wait for this process's next submission, another API process's
        (``serve --api-workers N``: looked at every :data:`SHARED_IDLE_LOOK_SECONDS`), or
        :data:`IDLE_POLL_SECONDS` (a submission queued by another writer of the store)."""
        seen = API_LOAD.queued_anywhere()
        until = time.monotonic() + IDLE_POLL_SECONDS
        with self._wake:
            while self._pending == 0 and not self._stop.is_set():
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                if seen is None:
                    self._wake.wait(remaining)
                    break
                self._wake.wait(min(remaining, SHARED_IDLE_LOOK_SECONDS))
                if API_LOAD.queued_anywhere() != seen:
                    break
            self._pending = 0


class CeleryQueue:
    """Sends ``gateway.process_submission`` tasks to the broker at ``url``; a sweeper thread
    re-sends what may have been lost."""

    engine = "celery"

    def __init__(self, store: Store, url: str, redeliver_after: timedelta = REDELIVER_AFTER,
                 sweep_seconds: float | None = None) -> None:
        from gateway.pipeline.worker import celery_app

        self.store, self.url = store, url
        self.app = celery_app(url)
        self.redeliver_after = redeliver_after
        self.sweep_seconds = sweep_seconds if sweep_seconds is not None else settings().sweep_seconds
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._started = threading.Lock()

    def start(self) -> None:
        with self._started:
            if self._sweeper is not None:
                return
            self._stop.clear()
            self._sweeper = threading.Thread(target=self._sweep, name="gateway-sweeper",
                                             daemon=True)
            self._sweeper.start()
            self._listener = threading.Thread(target=self._listen, name="gateway-runs-ended",
                                              daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        """Wake the API's waits when a worker says a run ended (a doorbell too: a message
        lost only delays an answer until the next look at the store)."""
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.url)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(RUNS_ENDED_CHANNEL)
                try:
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message and isinstance(message.get("data"), bytes):
                            RUNS_ENDED.wake(message["data"].decode("ascii", "replace"))
                finally:
                    pubsub.close()
                    client.close()
            except Exception as exc:  # noqa: BLE001 - the broker may be briefly unavailable
                log.warning("listening for ended runs failed: %s", exc.__class__.__name__)
                self._stop.wait(1.0)

    def enqueue(self, submission_id: str) -> None:
        self.start()
        try:
            self._send([submission_id])
        except Exception as exc:  # noqa: BLE001 - stored and queued in the store: the sweeper
            log.warning("broker unavailable, the sweeper will resend: %s",  # resends it
                        exc.__class__.__name__, extra={"submission_id": submission_id})

    def _send(self, submission_ids: list[str]) -> None:
        for submission_id in submission_ids:
            self.app.send_task("gateway.process_submission", args=[submission_id])
        self.store.mark_enqueued(submission_ids)

    def sweep_once(self) -> list[str]:
        found = self.store.overdue(self.redeliver_after)
        if found:
            log.info("re-sending %d submissions to the broker", len(found))
            self._send(found)
        return found

    def _sweep(self) -> None:
        while not self._stop.wait(self.sweep_seconds):
            try:
                self.sweep_once()
            except Exception as exc:  # noqa: BLE001 - tried again at the next sweep
                log.warning("sweep failed: %s", exc.__class__.__name__)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in (self._sweeper, self._listener):
            if thread is not None:
                thread.join(timeout=timeout)
        self._sweeper = self._listener = None


def make_queue(url: str | None, store: Store, partners: Partners, workers: int = 1):
    """``None`` or ``embedded``: :class:`EmbeddedQueue`; ``redis://…``: :class:`CeleryQueue`."""
    if url in (None, "", "embedded"):
        return EmbeddedQueue(store, partners, workers=workers)
    if url.startswith(("redis://", "rediss://")):
        return CeleryQueue(store, url)
    raise ValueError(f"unknown queue {url!r}: use redis://host:port/db or leave it out")


def _run_logged(store: Store, partners: Partners, submission_id: str, worker: str,
                lease: timedelta) -> None:
    try:
        outcome = run_claimed(store, partners, submission_id, worker, lease=lease)
        log.info("submission processed", extra={"submission_id": submission_id,
                                                "status": outcome.status,
                                                "findings": outcome.findings})
    except Exception as exc:  # noqa: BLE001 - the lease expires and the run is retried
        log.error("run crashed: %s", exc.__class__.__name__,
                  extra={"submission_id": submission_id})


async def wait_until_done(store: Store, submission_id: str, timeout: float) -> bool:
    """Wait until the submission's run is ``done`` in the store; False when ``timeout``
    seconds pass first. A run that ends in this process (the embedded queue) wakes the wait at
    once; a run in a Celery worker wakes it through the broker (:data:`RUNS_ENDED_CHANNEL`),
    and the store is looked at too, soon at first, then every 0.2 s (a lost message)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # with local runs the store is looked at rarely, in case a run ends elsewhere after all
    pause, longest = (0.2, 1.0) if RUNS_ENDED.local else (0.01, 0.2)
    ended = RUNS_ENDED.watch(submission_id)
    look = not RUNS_ENDED.local  # with local runs, the first look is at the pause's end
    with API_LOAD.waiting():  # a waiting client: embedded workers claim at once
        try:
            while True:
                if RUNS_ENDED.finished_here(submission_id):
                    return True
                if look:
                    found = await asyncio.to_thread(store.submission, submission_id)
                    if found is not None and found["run_state"] == "done":
                        return True
                look = True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                if ended.done():  # a run ended without finishing (lost lease): wait again
                    RUNS_ENDED.forget(submission_id, ended)
                    ended = RUNS_ENDED.watch(submission_id)
                await asyncio.wait([ended], timeout=min(pause, remaining))
                # woken by a run that ended here: finished_here() knows; otherwise look
                look = not (ended.done() and RUNS_ENDED.local)
                pause = min(pause * 2, longest)
        finally:
            RUNS_ENDED.forget(submission_id, ended)
