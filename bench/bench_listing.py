"""Benchmark: the listing API (GET /submissions) at 100k submissions — the p99 of a filtered
page, a page deep in the list, and searches — with the same queries at 1k submissions as the
reference run in the same process (keyset paging: a page should cost the same at 100k as at
1k, so the ratio should stay near 1).

What is measured: HTTP round trips through the real app (``TestClient``: routing, the bearer
token, the query, JSON) against an embedded SQLite store filled with synthetic submissions
(bulk-inserted untimed: 3 partners, kinds x12/file/fhir, ~12% rejected, 0.5% dead letters,
spread over 60 days, one claim-id search key each). Each query runs ``--repeat`` times after
one warm-up call; the table gives p50 and p99 in milliseconds and p99(100k) / p99(1k).

Usage::

    python bench/bench_listing.py                    # 1k reference and 100k, 200 calls each
    python bench/bench_listing.py --sizes 1000,10000 --repeat 50     # quick run

Files are written to ``bench/out/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from gateway.api.app import create_app  # noqa: E402
from gateway.pipeline.partners import issue_demo_tokens  # noqa: E402
from gateway.pipeline.store import search_keys, status_history, submissions  # noqa: E402

PARTNERS = ("harbor", "golden-table", "demo-plan")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def fill(store, count: int, seed: int = 7) -> dict:
    """``count`` submissions, bulk-inserted; returns a few values to search for."""
    rng = random.Random(seed)
    rows, keys, history = [], [], []
    probes = {}
    for i in range(count):
        sid = uuid.UUID(int=rng.getrandbits(128)).hex
        at = NOW - timedelta(seconds=rng.randrange(60 * 86400))
        roll = rng.random()
        status = "dead_letter" if roll < 0.005 else "rejected" if roll < 0.125 else \
            rng.choice(("routed", "delivered", "validated"))
        kind = rng.choice(("x12", "x12", "file", "fhir"))
        partner = PARTNERS[i % 3]
        name = f"{partner}-{i:07d}.{'x12' if kind == 'x12' else 'csv'}"
        rows.append({"id": sid, "partner": partner, "channel": "api", "kind": kind,
                     "filename": name, "sha256": "0" * 64, "size": 1000 + i % 5000,
                     "status": status, "attempts": 1, "summary": {}, "created_at": at,
                     "updated_at": at, "run_state": "done"})
        keys.append({"submission_id": sid, "field": "claim", "value": f"CLM{i:09d}"})
        history.append({"submission_id": sid, "status": status, "at": at, "error": None})
        if i == count // 2:
            probes = {"claim": f"CLM{i:09d}", "file": name[:-4], "id": sid}
    with store.engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(insert(submissions), rows[start:start + 5000])
            conn.execute(insert(search_keys), keys[start:start + 5000])
            conn.execute(insert(status_history), history[start:start + 5000])
    return probes


def deep_cursor(client, headers, pages: int) -> str:
    cursor = None
    for _ in range(pages):
        body = client.get("/submissions?limit=50" + (f"&cursor={cursor}" if cursor else ""),
                          headers=headers).json()
        cursor = body["next_cursor"]
    return cursor


def timed(client, url, headers, repeat: int) -> tuple[float, float, int]:
    answer = client.get(url, headers=headers)
    assert answer.status_code == 200, answer.text
    found = len(answer.json()["submissions"])
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(url, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99, found


def run(size: int, repeat: int, out: Path) -> dict[str, tuple[float, float, int]]:
    folder = out / f"listing-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("gateway.sqlite*"):
        old.unlink()
    tokens = issue_demo_tokens(HERE.parent / "config" / "demo" / "partners.yaml",
                               folder / "partners.yaml")
    app = create_app(store=f"sqlite:///{folder / 'gateway.sqlite'}",
                     partners=folder / "partners.yaml")
    started = time.perf_counter()
    probes = fill(app.state.store, size)
    print(f"  {size:>7} submissions stored in {time.perf_counter() - started:.1f} s (untimed)",
          flush=True)
    ops = {"Authorization": f"Bearer {tokens['ops']}"}
    harbor = {"Authorization": f"Bearer {tokens['harbor']}"}
    results = {}
    with TestClient(app) as client:
        deep = deep_cursor(client, ops, min(100, size // 50 - 1))
        queries = [
            ("healthz (floor)", "/healthz", ops),
            ("operator, first page", "/submissions?limit=50", ops),
            ("operator, page 100 (cursor)", f"/submissions?limit=50&cursor={deep}", ops),
            ("operator, status=rejected", "/submissions?limit=50&status=rejected", ops),
            ("operator, dead letters", "/submissions?limit=50&status=dead_letter", ops),
            ("partner, status=rejected", "/submissions?limit=50&status=rejected", harbor),
            ("partner, kind+status+7 days", "/submissions?limit=50&kind=x12&status=rejected"
                                            "&since=2026-11-24&until=2026-11-30", harbor),
            ("search claim id", f"/submissions?q={probes['claim']}", ops),
            ("search file name start", f"/submissions?q={probes['file']}", ops),
            ("search submission id", f"/submissions?q={probes['id']}", ops),
        ]
        for name, url, headers in queries:
            if name.startswith("healthz"):
                client.get(url)
                samples = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    client.get(url)
                    samples.append((time.perf_counter() - start) * 1000)
                samples.sort()
                results[name] = (statistics.median(samples),
                                 samples[min(len(samples) - 1, int(len(samples) * 0.99))], 0)
                continue
            results[name] = timed(client, url, headers, repeat)
    app.state.store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000",
                        help="submission counts; the first is the reference")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    out = HERE / "out"
    by_size = {}
    for size in sizes:
        by_size[size] = run(size, args.repeat, out)
    reference, largest = sizes[0], sizes[-1]
    print(f"\nGET /submissions, {args.repeat} calls each (ms; ratio = p99 at {largest:,} / p99 "
          f"at {reference:,})")
    header = f"{'query':<30}" + "".join(f"{f'p50@{s:,}':>12}{f'p99@{s:,}':>12}" for s in sizes)
    print(header + f"{'rows':>6}{'ratio':>8}")
    for name in by_size[reference]:
        line = f"{name:<30}"
        for size in sizes:
            p50, p99, _ = by_size[size][name]
            line += f"{p50:>12.2f}{p99:>12.2f}"
        ratio = by_size[largest][name][1] / max(by_size[reference][name][1], 1e-9)
        print(line + f"{by_size[largest][name][2]:>6}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
