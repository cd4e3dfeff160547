"""What the server's ECM registries cost a submission: a plan's synthetic 837P processed by the
server step (validate, acknowledge, route to the state, write history) against an empty store
(no registries: no ECM rules, as before) and against a store holding the plan's MIF, roster and
history, in the same process; then a provider's history extract from that store.

    python bench/bench_server_ecm.py --claims 2000 --members 20000

Prints a table with claims/s and the ratio against the run without registries.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def partners_for(billing_npi: str):
    from gateway.pipeline.partners import Partner, Partners, Route

    return Partners(partners={
        "bench-plan": Partner(id="bench-plan", name="Bench Plan", role="plan",
                              payer_ids=("DEMOPLAN",)),
        "bench-provider": Partner(id="bench-provider", name="Bench Provider", role="provider",
                                  npis=(billing_npi,)),
        "state": Partner(id="state", name="State", role="state", envelope="dhcs-encounters"),
    }, routes=[Route("837p", "plan", "state"), Route("ack", "*", "sender"),
               Route("history", "gateway", "provider")])


def run_step(store, partners, payload: bytes) -> tuple[float, dict]:
    from gateway.pipeline.steps import STEPS

    kept = store.receive(partner="bench-plan", channel="bench", kind="x12", filename=None,
                         payload=payload)
    started = time.perf_counter()
    STEPS["x12"](store, partners, partners.partners["bench-plan"], kept.submission_id)
    seconds = time.perf_counter() - started
    return seconds, store.submission(kept.submission_id)["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--members", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-server-ecm-"))
    os.environ["ECM_GATEWAY_VAR"] = str(folder / "var")

    from bench_rules import member_rows, roster_rows
    from synth837 import encounters, write_file

    from gateway.pipeline.steps.extract import history_rows
    from gateway.pipeline.registries import (
        load_plan_members,
        load_plan_providers,
        server_registry,
    )
    from gateway.pipeline.store import Store

    claims_file = folder / "claims.x12"
    write_file(claims_file, args.claims, args.seed)
    payload = claims_file.read_bytes()
    billing = Counter(e.billing_provider.npi for e in encounters(args.claims, args.seed))
    partners = partners_for(billing.most_common(1)[0][0])

    run_step(Store(f"sqlite:///{folder / 'warm.sqlite'}"), partners, payload)  # maps parsed
    bare = Store(f"sqlite:///{folder / 'bare.sqlite'}")
    seconds_bare, summary_bare = run_step(bare, partners, payload)

    loaded = Store(f"sqlite:///{folder / 'loaded.sqlite'}")
    registry = server_registry(loaded)
    rows, _ = member_rows(args.claims, args.members, args.seed)
    started = time.perf_counter()
    load_plan_members(registry, "bench-plan", rows)
    load_plan_providers(registry, "bench-plan", roster_rows(args.claims, args.seed))
    load_seconds = time.perf_counter() - started
    seconds_rules, summary_rules = run_step(loaded, partners, payload)

    started = time.perf_counter()
    extract = history_rows(registry, partners.partners["bench-provider"])
    extract_seconds = time.perf_counter() - started

    print(f"{args.claims:,} claims, {args.members:,} members in the MIF "
          f"(loaded in {load_seconds:.2f} s), "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    print()
    print("| run | claims | accepted | seconds | claims/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, seconds, summary in (
            ("server step, no registries (reference)", seconds_bare, summary_bare),
            ("server step, plan registries + history write", seconds_rules, summary_rules)):
        print(f"| {label} | {summary['claims']:,} | {summary['accepted_claims']:,} | "
              f"{seconds:.2f} | {summary['claims'] / seconds:,.0f} | "
              f"{seconds / seconds_bare:.2f}× |")
    print(f"| history extract, largest provider ({len(extract):,} lines) | | | "
          f"{extract_seconds:.3f} | | |")


if __name__ == "__main__":
    main()
