"""Benchmark: FHIR search, count and the overdue-referral check as a partner's resources grow.

In this process (TestClient, SQLite store under a temporary folder, demo partners and
registries), for each size in ``--sizes`` (default 100 and 1,000) the provider creates that
many referral ServiceRequests and as many Tasks (each different), waits for their routing, then
times, best of ``--repeat``:

* ``page``     -- ``GET /fhir/Task?_count=50`` (the first page and the total);
* ``count``    -- ``GET /fhir/Task?_summary=count``;
* ``filtered`` -- ``GET /fhir/Task?status=rejected&identifier=urn:bench|7``;
* ``overdue``  -- ``overdue_referrals`` (every referral is past its deadline: all listed);
* ``metrics``  -- ``GET /metrics`` (the store's gauges and ecm_gateway_referrals_overdue).

Reported: milliseconds per step and size, and the ratio of each size's time to the smallest
size's (the reference run, same process): with 10x the resources a ratio near 10 is linear.

Usage::

    python bench/bench_fhir_search.py                 # 100 and 1,000
    python bench/bench_fhir_search.py --sizes 50 200  # quick run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_fhir_routing import make_gateway, referral, task  # noqa: E402

from gateway.pipeline.referral_deadlines import overdue_referrals  # noqa: E402


def fill(gateway, size: int) -> None:
    auth = gateway.auth["harbor"]
    last = []
    for i in range(size):
        ident = [{"system": "urn:bench", "value": str(i)}]
        for resource in ({**referral(), "identifier": ident}, {**task(), "identifier": ident}):
            answer = gateway.client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                         headers=auth)
            assert answer.status_code == 201, answer.text
            last.append(answer.headers["x-submission-id"])
    for sid in last[-2:]:
        gateway.settled(sid, timeout=600)
    deadline = time.monotonic() + 600
    while gateway.store.queue_depth().get("queued") or gateway.store.queue_depth().get(
            "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def best(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def measure(size: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        gateway = make_gateway(Path(folder))
        try:
            fill(gateway, size)
            auth = gateway.auth["harbor"]
            get = gateway.client.get

            def page():
                body = get("/fhir/Task?_count=50", headers=auth).json()
                assert body["total"] == size and len(body["entry"]) == min(50, size)

            def count():
                assert get("/fhir/Task?_summary=count", headers=auth).json()["total"] == size

            def filtered():
                found = get("/fhir/Task?status=rejected&identifier=urn:bench|7",
                            headers=auth).json()
                assert found["total"] == (1 if size > 7 else 0)

            def overdue():
                assert len(overdue_referrals(gateway.store, gateway.app.state.partners)) == size

            def metrics():
                assert "ecm_gateway_referrals_overdue" in get("/metrics").text

            return {name: best(repeat, call) for name, call in (
                ("page", page), ("count", count), ("filtered", filtered),
                ("overdue", overdue), ("metrics", metrics))}
        finally:
            gateway.app.state.queue.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {size: measure(size, args.repeat) for size in args.sizes}
    reference = results[args.sizes[0]]
    print(f"{'step':<10}" + "".join(f"{f'{s} each (ms)':>18}{'ratio':>8}" for s in args.sizes))
    for step in reference:
        row = f"{step:<10}"
        for size in args.sizes:
            ms = results[size][step]
            row += f"{ms:>18.1f}{ms / reference[step]:>8.1f}"
        print(row)


if __name__ == "__main__":
    main()
