"""Benchmark: submissions per second and latency of the whole gateway, over HTTP.

``--count`` submissions (default 1,000) of a small 837P (the first claim of
``fixtures/837p/ecm-clean.x12``, each copy with its own ISA13 so none is a resubmission) are
POSTed to ``/x12`` by
``--clients`` concurrent clients (default 10), each waiting for the synchronous answer (the
999), against two deployments started here on loopback:

* ``embedded`` — ``ecm-gateway serve`` with its default SQLite store and one worker thread
  (the reference);
* ``scale-out`` — ``ecm-gateway serve --store postgresql://… --queue redis://…`` and two
  ``ecm-gateway worker`` processes (a throwaway PostgreSQL cluster and a Redis server, started
  here; skipped when their binaries are missing).

Reported per mode: wall seconds, submissions/s, p50 / p99 / max request latency, answers by
HTTP status (202 = still processing when the synchronous wait ran out), and the ratio of
submissions/s against the embedded run. Each mode is then checked: every submission stored,
finished and acknowledged exactly once (one 999 each), no 5xx.

Usage::

    python bench/bench_load.py                 # 1,000 submissions, 10 clients, both modes
    python bench/bench_load.py --count 200 --modes embedded
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from servers import (  # noqa: E402
    SMALL_837, Gateway, Unavailable, postgres, redis_server, start_worker, wait_for,
    write_partners, x12_variant,
)

from gateway.pipeline.store import Store  # noqa: E402


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    ids: list[str] = field(default_factory=list)
    acks: int = 0
    errors: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0

    @property
    def rate(self) -> float:
        return len(self.ids) / self.seconds if self.seconds else 0.0


def run_load(base: str, token: str, count: int, clients: int, first_number: int = 1
             ) -> LoadResult:
    """POST ``count`` distinct small 837Ps from ``clients`` threads (one HTTP connection each)."""
    result = LoadResult()
    lock = threading.Lock()
    numbers = iter(range(first_number, first_number + count))
    headers = {"Authorization": f"Bearer {token}"}

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120, headers=headers) as http:
            while True:
                with lock:
                    number = next(numbers, None)
                if number is None:
                    return
                started = time.perf_counter()
                try:
                    answer = http.post("/x12", content=x12_variant(number, SMALL_837))
                except httpx.HTTPError as exc:
                    with lock:
                        result.errors.append(f"{number}: {exc.__class__.__name__}")
                    continue
                took = time.perf_counter() - started
                body = answer.json() if answer.headers.get("content-type", "").startswith(
                    "application/json") else {}
                with lock:
                    result.latencies.append(took)
                    result.statuses[answer.status_code] += 1
                    if "submission_id" in body:
                        result.ids.append(body["submission_id"])
                    if "ST*999*" in body.get("ack_999", ""):
                        result.acks += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


def check_complete(store: Store, partner: str, result: LoadResult, count: int,
                   timeout: float = 120) -> dict:
    """Wait for every submission to finish; count what the store holds for ``partner``."""
    wait_for(lambda: store.queue_depth()["queued"] + store.queue_depth()["running"] == 0,
             timeout)
    # the clients' interchanges only: the partner file's scheduled history extract may run
    # for the same provider during a long load run
    stored = [s for s in store.submissions_for(partner, limit=count * 2)
              if s["kind"] == "x12"]
    statuses = collections.Counter((s["status"], s["run_state"]) for s in stored)
    acks = collections.Counter(d["role"] for d in store.mailbox(partner))
    return {"stored": len(stored), "distinct_ids": len(set(result.ids)), "statuses": statuses,
            "ack_999": acks["ack-999"], "ack_277ca": acks["ack-277ca"]}


def embedded(folder: Path, count: int, clients: int) -> tuple[LoadResult, dict]:
    partners, tokens = write_partners(folder)
    url = f"sqlite:///{folder / 'gateway.sqlite'}"
    env = {"ECM_GATEWAY_VAR": str(folder / "var")}
    server = Gateway(url, partners, folder / "server.log", env)
    try:
        result = run_load(server.base, tokens["valley"], count, clients)
        store = Store(url)
        try:
            return result, check_complete(store, "valley", result, count)
        finally:
            store.close()
    finally:
        server.stop()


def scale_out(folder: Path, count: int, clients: int, workers: int = 2
              ) -> tuple[LoadResult, dict, list[int]]:
    """PostgreSQL + Redis + ``workers`` Celery workers; also returns how many submissions each
    worker processed (from its log)."""
    partners, tokens = write_partners(folder)
    env = {"ECM_GATEWAY_VAR": str(folder / "var")}
    with ExitStack() as stack:
        url = stack.enter_context(postgres())
        broker = stack.enter_context(redis_server())
        logs = [folder / f"worker-{n}.log" for n in range(workers)]
        procs = [start_worker(url, broker, partners, log, env, name=f"w{n}@loadtest")
                 for n, log in enumerate(logs)]
        stack.callback(lambda: [p.stop() for p in procs])
        server = Gateway(url, partners, folder / "server.log", env, queue=broker)
        stack.callback(server.stop)
        result = run_load(server.base, tokens["valley"], count, clients)
        store = Store(url)
        stack.callback(store.close)
        summary = check_complete(store, "valley", result, count)
        per_worker = [log.read_text().count('"message": "submission processed"') for log in logs]
        return result, summary, per_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--modes", default="embedded,scale-out")
    args = parser.parse_args(argv)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    from bench_validate import load_average, machine, print_table

    print(machine())
    print(load_average())
    rows, notes, reference = [], [], None
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-load-{mode}-") as tmp:
            try:
                if mode == "embedded":
                    result, summary = embedded(Path(tmp), args.count, args.clients)
                    extra = ""
                else:
                    result, summary, per_worker = scale_out(Path(tmp), args.count, args.clients)
                    extra = f" (per worker {per_worker})"
            except Unavailable as exc:
                rows.append([mode, "-", "-", "-", "-", "-", "-", f"skipped: {exc}", "-"])
                continue
        reference = reference or (result.rate if mode == "embedded" else None)
        ratio = f"{result.rate / reference:.2f}x" if reference else "-"
        ok = (summary["stored"] == summary["distinct_ids"] == args.count
              and summary["ack_999"] == args.count and not result.errors
              and not any(code >= 500 for code in result.statuses))
        rows.append([mode, f"{result.seconds:.1f}", f"{result.rate:.1f}",
                     f"{result.percentile(50) * 1000:.0f}",
                     f"{result.percentile(99) * 1000:.0f}",
                     f"{max(result.latencies, default=0) * 1000:.0f}",
                     " ".join(f"{k}:{v}" for k, v in sorted(result.statuses.items())),
                     "ok" if ok else "FAILED", ratio])
        notes.append(f"{mode}: store {dict(summary['statuses'])}, 999s {summary['ack_999']}, "
                     f"277CAs {summary['ack_277ca']}, client errors {len(result.errors)}"
                     f"{extra}")
    print_table(["mode", "seconds", "subm/s", "p50 ms", "p99 ms", "max ms", "answers",
                 "check", "ratio"], rows,
                title=f"{args.count:,} submissions from {args.clients} clients "
                      "(ratio: subm/s against embedded)", right={1, 2, 3, 4, 5, 8}, width=110)
    print("check = every submission stored, finished and acknowledged once, no 5xx")
    for note in notes:
        print(note)
    print(load_average())
    return 0


if __name__ == "__main__":
    sys.exit(main())
