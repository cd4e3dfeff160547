"""What routing costs a FHIR submission: the same CarePlan (fixtures/fhir/mappings/careplan-ecm.json,
a Harbor member of the demo plan) submitted through the real pipeline (``submit``: store, validate,
store the resource, then route: RTF row + 837P for the plan) with the demo partners and registries,
and again with routing switched off (the resource stored only), in the same process. Each run
gets a fresh CarePlan id, so no submission is a duplicate. ``submit`` without a queue runs the
submission's step at once: what the queue's worker spends on each FHIR create after the API has
answered it (the API itself only validates and keeps the payload: ``bench/bench_fhir.py``).

    python bench/bench_fhir_routing.py --runs 100

Prints p50/p99 per submission and the ratio against the run without routing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def world(folder: Path):
    from gateway.pipeline.partners import Partners, issue_demo_tokens
    from gateway.pipeline.registries import load_demo_registries
    from gateway.pipeline.store import Store

    root = Path(__file__).resolve().parent.parent
    issue_demo_tokens(root / "config" / "demo" / "partners.yaml", folder / "partners.yaml")
    partners = Partners.load(folder / "partners.yaml")
    store = Store(f"sqlite:///{folder / 'gateway.sqlite'}")
    load_demo_registries(store, partners)
    return store, partners


def timed(store, partners, body: dict, runs: int, label: str) -> list[float]:
    from gateway.pipeline.process import submit

    harbor = partners.partners["harbor"]
    times = []
    for i in range(runs):
        payload = json.dumps({**body, "id": f"bench-{label}-{i}-{time.time_ns()}"}).encode()
        start = time.perf_counter()
        done = submit(store, partners, harbor, channel="api", kind="fhir",
                      filename="CarePlan.json", payload=payload)
        times.append(time.perf_counter() - start)
        assert done.status == ("routed" if label == "routed" else "validated"), done.status
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("ECM_GATEWAY_VAR", tempfile.mkdtemp(prefix="bench-var-"))
    from gateway.fhir import intake

    root = Path(__file__).resolve().parent.parent
    body = json.loads((root / "fixtures" / "fhir" / "mappings" / "careplan-ecm.json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-fhir-routing-") as folder:
        store, partners = world(Path(folder))
        timed(store, partners, body, 5, "routed")  # warm up (mapping specs, code sets)
        routed = timed(store, partners, body, args.runs, "routed")
        original = intake.Router.add
        intake.Router.add = lambda self, resource, sent_id=None: None
        try:
            stored = timed(store, partners, body, args.runs, "stored")
        finally:
            intake.Router.add = original

    def row(label: str, times: list[float]) -> str:
        p50 = statistics.median(times) * 1000
        p99 = times[max(0, int(len(times) * 0.99) - 1)] * 1000
        ratio = statistics.median(times) / statistics.median(stored)
        return f"| {label:<34} | {p50:8.1f} | {p99:8.1f} | {ratio:5.2f} |"

    print(f"CarePlan submissions, {args.runs} each, sequential, one process")
    print("| run                                | p50 (ms) | p99 (ms) | ratio |")
    print("|------------------------------------|---------:|---------:|------:|")
    print(row("stored only (reference)", stored))
    print(row("stored + routed (RTF row + 837P)", routed))


if __name__ == "__main__":
    main()
