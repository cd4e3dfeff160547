"""Benchmark: the provider directory, roster → 274 → Plan-Net Bundle and back.

A synthetic directory roster of ``--providers`` rows (default 50,000; one row per provider and
site) is written in the default directory layout (``mappings/layouts/directory/default.yaml``):
groups of 1-3 sites with 5-15 providers each, Luhn-valid NPIs, California counties, hours,
languages, taxonomies, ECM and Community Supports flags. Deterministic for a given ``--seed``.

Measured, each in a *fresh* Python process (so the peak RSS is that step's alone; imports are
excluded from the time, not from the RSS):

* ``roster→274``      directory roster CSV → X12 274 (``gateway.directory.convert``);
* ``274→plannet``     that 274 → Plan-Net Bundle (JSON, entry by entry);
* ``plannet→274``     that Bundle → 274 (the way back);
* ``274→roster``      the 274 → directory roster CSV;
* each step again at ``--providers/5``, to show how peak memory grows with the size.

The "way there" is roster→274 + 274→plannet, the "way back" plannet→274 + 274→roster; the
target is under 30 s each way. As a yardstick each worker also times a bare read of its input
(``csv.reader`` over the roster, ``str.split`` over the 274, ``json.loads`` over the Bundle,
best of 3, in the same process); the last column is how many times slower the step is.

Usage::

    python bench/bench_directory.py                     # 50,000 providers (and 10,000)
    python bench/bench_directory.py --providers 2000    # quick run

Files go to ``bench/out/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
OUT = HERE / "out"

COUNTIES = ["ALAMEDA", "LOS ANGELES", "SAN DIEGO", "ORANGE", "RIVERSIDE", "SACRAMENTO",
            "FRESNO", "KERN", "SAN FRANCISCO", "SANTA CLARA"]
TAXONOMIES = ["1041C0700X", "163W00000X", "251S00000X", "171M00000X", "207Q00000X"]
SERVICES = ["HOUSING_NAVIGATION", "HOUSING_TENANCY", "MEALS", "RESPITE", "SOBERING_CENTER"]
LAST = ["RIVERA", "CHEN", "OKAFOR", "NGUYEN", "GARCIA", "SMITH", "PATEL", "KIM", "LOPEZ"]
FIRST = ["ANA", "DAVID", "CHIDI", "LINH", "MARIA", "JOHN", "PRIYA", "JIN", "LUIS"]


def _npi(seed: int) -> str:
    from gateway.tabular.validate import luhn_npi_ok

    base = 100000000 + seed * 7
    for digit in range(10):
        if luhn_npi_ok(f"{base}{digit}"):
            return f"{base}{digit}"
    raise AssertionError


def make_roster(path: Path, providers: int, seed: int) -> None:
    from gateway.tabular import load_layout

    rng = random.Random(seed)
    headers = [c.headers[0] for c in load_layout("directory", "default").columns]
    written = 0
    group_no = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(headers)
        while written < providers:
            group_no += 1
            group_npi = _npi(10_000_000 + group_no)
            county = rng.choice(COUNTIES)
            for site_no in range(rng.randint(1, 3)):
                site = [f"S{group_no}-{site_no}", f"SITE {group_no} {site_no}",
                        f"{rng.randint(1, 9999)} MAIN ST", "", "SOMEWHERE", "CA", "94601",
                        county if rng.random() < 0.8 else rng.choice(COUNTIES),
                        "5105550100", "CLNC", "en; es", "MON 0800-1700; TUE 0800-1700",
                        "HA", "", "18", "", "251S00000X", "ECM"]
                for _ in range(rng.randint(5, 15)):
                    if written >= providers:
                        break
                    written += 1
                    cs = rng.random() < 0.4
                    row = [group_npi, f"GROUP {group_no}", "123456789", "2025-01-01",
                           "2026-12-31", "251S00000X", *site, _npi(written),
                           rng.choice(LAST), rng.choice(FIRST), "", "LCSW", "en",
                           rng.choice(TAXONOMIES), "LCM", "Y" if rng.random() < 0.8 else "N",
                           "Y" if cs else "N",
                           "; ".join(rng.sample(SERVICES, 2)) if cs else ""]
                    out.writerow(row)


# -- worker ---------------------------------------------------------------------------------
def _bare(kind: str, path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        if kind == "directory":
            with open(path, newline="", encoding="utf-8") as handle:
                for _row in csv.reader(handle):
                    pass
        elif kind == "274":
            for _seg in path.read_text(encoding="utf-8").split("~"):
                _seg.split("*")
        else:
            json.loads(path.read_text(encoding="utf-8"))
        best = min(best, time.perf_counter() - start)
    return best


def worker(step: str, source: str, target: str) -> None:
    from datetime import datetime

    from gateway.directory.convert import (
        open_directory, write_274, write_plannet, write_roster,
    )
    from gateway.x12.writer import ControlNumbers, envelope_settings

    kind, to = step.split("→")
    settings = envelope_settings("dhcs-274")
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    src = open_directory(Path(source), kind, settings)
    with open(target, "w", encoding="utf-8", newline="") as out:
        if to == "274":
            write_274(src, out, settings, ControlNumbers(1, 1), datetime(2026, 12, 1))
        elif to == "plannet":
            write_plannet(src, out)
        else:
            write_roster(src, out)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bare = _bare(kind, Path(source))
    errors = sum(1 for f in src.findings if f.is_error)
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak / 1024,
                      "imports_mb": rss_imports / 1024, "bare": bare,
                      "providers": src.stats.get("providers"), "errors": errors,
                      "size_mb": os.path.getsize(target) / 1e6}))


def run(step: str, source: Path, target: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", step, str(source),
                           str(target)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--worker", nargs=3, metavar=("STEP", "SOURCE", "TARGET"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    OUT.mkdir(exist_ok=True)
    rows = []
    for size in (args.providers, max(args.providers // 5, 1)):
        roster = OUT / f"directory-{size}.csv"
        make_roster(roster, size, args.seed)
        x274, bundle = OUT / f"directory-{size}.274", OUT / f"directory-{size}.plannet.json"
        back274, back_roster = OUT / f"directory-{size}.back.274", OUT / f"directory-{size}.back.csv"
        for step, source, target in (("directory→274", roster, x274),
                                     ("274→plannet", x274, bundle),
                                     ("plannet→274", bundle, back274),
                                     ("274→directory", back274, back_roster)):
            rows.append((size, step, run(step, source, target)))
    print(f"\nProvider directory, {args.providers:,} providers (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus)")
    print(f"{'providers':>9}  {'step':<15}{'wall s':>8}{'cpu s':>8}{'prov/s':>10}{'peak MB':>9}"
          f"{'after imports':>14}{'out MB':>8}{'errors':>7}{'x bare read':>12}")
    for size, step, r in rows:
        print(f"{size:>9,}  {step:<15}{r['wall']:>8.2f}{r['cpu']:>8.2f}"
              f"{r['providers'] / r['wall']:>10,.0f}{r['peak_mb']:>9.0f}{r['imports_mb']:>14.0f}"
              f"{r['size_mb']:>8.1f}{r['errors']:>7}{r['wall'] / r['bare']:>12.1f}")
    for size in (args.providers, max(args.providers // 5, 1)):
        there = sum(r["wall"] for s, st, r in rows if s == size and st in
                    ("directory→274", "274→plannet"))
        back = sum(r["wall"] for s, st, r in rows if s == size and st in
                   ("plannet→274", "274→directory"))
        print(f"{size:>9,} providers: roster → 274 → Plan-Net {there:.1f} s, "
              f"Plan-Net → 274 → roster {back:.1f} s (target < 30 s each way)")
    big = {st: r["peak_mb"] for s, st, r in rows if s == args.providers}
    small = {st: r["peak_mb"] for s, st, r in rows if s != args.providers}
    print("peak RSS ratio (5x the providers): " + ", ".join(
        f"{st} {big[st] / small[st]:.2f}x" for st in big))


if __name__ == "__main__":
    main()
