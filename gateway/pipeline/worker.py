"""The Celery side of the scale-out engine: the task ``gateway.process_submission`` and the
``ecm-gateway worker`` process that runs it.

A worker builds its own :class:`Store` and :class:`Partners` from its configuration
(``ECM_GATEWAY_STORE``, ``ECM_GATEWAY_PARTNERS``; ``ECM_GATEWAY_QUEUE`` is the broker), once
per worker process. Tasks are acknowledged late and rejected when their worker process dies
(``acks_late``, ``reject_on_worker_lost``), so a killed worker's task is delivered again; the
store-level claim (:meth:`Store.claim`) makes a task delivered twice run once: a copy that
finds the submission ``done`` does nothing, one that finds another worker's live lease comes
back when that lease would have expired.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import Celery

from gateway.settings import current as settings

log = logging.getLogger("gateway.worker")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
TASK = "gateway.process_submission"
_apps: dict[str, Celery] = {}
_context: dict[str, object] = {}


def celery_app(broker: str | None = None) -> Celery:
    """The Celery application for ``broker`` (default ``ECM_GATEWAY_QUEUE``); one per URL."""
    broker = broker or settings().queue or DEFAULT_BROKER
    if broker in _apps:
        return _apps[broker]
    app = Celery("ecm_gateway", broker=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_serializer="json", accept_content=["json"], task_ignore_result=True,
        task_default_queue="ecm-gateway", broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False, broker_transport_options={"visibility_timeout": 3600})
    app.task(name=TASK, bind=True, max_retries=None)(process_submission)
    _apps[broker] = app
    return app


def _store_and_partners():
    """This worker process's store and partners (built on first use, after the fork)."""
    pid = os.getpid()
    if _context.get("pid") != pid:
        from gateway.pipeline.partners import Partners
        from gateway.pipeline.store import Store

        found = settings()
        if found.partners is None:
            raise RuntimeError("the worker needs the partners setting (ECM_GATEWAY_PARTNERS)")
        _context.update(pid=pid, store=Store(found.store or None),
                        partners=Partners.load(Path(found.partners)))
    return _context["store"], _context["partners"]


def process_submission(task, submission_id: str) -> str:
    """Claim and run one submission; returns its state after the attempt. A large X12 file is
    split into parts instead (:mod:`gateway.pipeline.split`), each sent as a task of its own;
    the task of a part that finishes asks for the merge of its file, which the last one gets."""
    from gateway.pipeline.process import lease_length, run_claimed, worker_id
    from gateway.pipeline.split import merge_parts, split_submission

    store, partners = _store_and_partners()
    worker = worker_id()
    lease = lease_length()
    state = store.claim(submission_id, worker, lease)
    if state == "busy":  # another worker's live lease: look again when it would have expired
        raise task.retry(countdown=lease.total_seconds() + 1)
    if state == "waiting":
        if not store.claim_merge(submission_id, worker, lease):
            return "waiting"  # parts still running: the last one asks again
        outcome = run_claimed(store, partners, submission_id, worker, work=merge_parts)
        _announce_end(submission_id)
        log.info("parts merged", extra={"submission_id": submission_id,
                                        "status": outcome.status})
        return outcome.status
    if state != "claimed":
        return state
    parts = split_submission(store, submission_id, worker)
    if parts:
        for part in parts:
            task.app.send_task(TASK, args=[part])
        store.mark_enqueued(parts)
        task.app.send_task(TASK, args=[submission_id])  # merges at once if parts were done
        return "waiting"
    outcome = run_claimed(store, partners, submission_id, worker)
    _announce_end(submission_id)
    found = store.submission(submission_id)
    if found["channel"] == "split" and found["parent_id"]:
        task.app.send_task(TASK, args=[found["parent_id"]])
    log.info("submission processed", extra={"submission_id": submission_id,
                                            "status": outcome.status,
                                            "findings": outcome.findings})
    return outcome.status


def _announce_end(submission_id: str) -> None:
    """Tell the API processes a run ended (they answer a waiting client at once instead of at
    their next look at the store); best effort."""
    pid = os.getpid()
    try:
        if _context.get("redis_pid") != pid:
            import redis

            _context.update(redis_pid=pid, redis=redis.Redis.from_url(
                settings().queue or DEFAULT_BROKER))
        from gateway.pipeline.process import RUNS_ENDED_CHANNEL

        _context["redis"].publish(RUNS_ENDED_CHANNEL, submission_id)
    except Exception as exc:  # noqa: BLE001 - the API still sees the run in the store
        log.warning("could not announce the end of a run: %s", exc.__class__.__name__,
                    extra={"submission_id": submission_id})


def run_worker(store: str | None, queue: str, partners: Path, concurrency: int = 1,
               name: str | None = None) -> None:
    """Run a Celery worker for the gateway (blocks). The settings (queue, partners, store) go
    through the environment so the pool's child processes read the same settings object."""
    os.environ["ECM_GATEWAY_QUEUE"] = queue
    os.environ["ECM_GATEWAY_PARTNERS"] = str(Path(partners).resolve())
    if store:
        os.environ["ECM_GATEWAY_STORE"] = store
    app = celery_app(queue)
    app.worker_main(["worker", "--loglevel=INFO", "--pool=prefork",
                     f"--concurrency={max(1, concurrency)}", "--without-gossip",
                     "--without-mingle", "--without-heartbeat", "-Q", "ecm-gateway",
                     "-n", name or f"ecm-gateway-{os.getpid()}@%h"])
