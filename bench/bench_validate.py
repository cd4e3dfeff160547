"""Benchmark: our X12 validator against bare pyx12 on synthetic 837P files.

What is measured, per file size (claims) and per engine, each run in a *fresh* Python
process so that the peak resident set size is that engine's alone:

* ``ours``  -- ``gateway.x12.validate.validate_x12(path, on_claim=...)``: envelope checks,
  implementation-guide validation through pyx12 and claim collection, in one streaming
  pass. Claims go to a counting callback and are not accumulated (bounded memory).
* ``pyx12`` -- bare ``pyx12.x12n_document.x12n_document`` over the same file (999 and
  JSON error output into ``io.StringIO``), which is what the guide validation costs when
  pyx12 is driven the ordinary way.

Reported: wall seconds of the validation call (imports excluded), its CPU seconds (less
sensitive to other load on the machine), claims per second (wall), peak RSS in MB
(``ru_maxrss`` of the worker process, so it includes the interpreter and imports), and the
verdict. For every size the ratio ours claims/s / pyx12 claims/s.

By default each worker is a cold process: both engines load the pyx12 maps once, inside the
timed call. ``--warm`` first validates a 10-claim file (untimed) in the same worker, as a
long-lived server would have done: ours then reuses its cached maps, bare pyx12 re-reads them
on every call. ``--repeat N`` reports the fastest of N fresh-process runs.

Targets:

* ratio >= 1.0 against bare pyx12 -- we do more work per file than pyx12 alone, and make up
  for it by caching the loaded pyx12 maps instead of re-reading them;
* peak RSS < 150 MB for ours at 50k claims (streaming, nothing kept per claim).

Usage::

    python bench/bench_validate.py                     # sizes 1000,10000,50000
    python bench/bench_validate.py --sizes 200,1000    # quick run
    python bench/bench_validate.py --sizes 1000,10000 --warm --repeat 3

Files are written to ``bench/out/`` (git-ignored). The 50k run with bare pyx12 takes a
few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

ENGINES = ("ours", "pyx12")
RESULT_MARK = "BENCH-RESULT "
RSS_TARGET_MB = 150.0
RSS_TARGET_SIZE = 50000
RATIO_TARGET = 1.0


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def count_claims(path: Path) -> int:
    """Count CLM segments by streaming the file (delimiters taken from the ISA)."""
    with open(path, "rb") as fh:
        isa = fh.read(106)
        element, terminator = isa[3:4], isa[105:106]
        fh.seek(0)
        needle = b"CLM" + element
        count, tail = 0, b""
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            parts = (tail + chunk).split(terminator)
            tail = parts.pop()
            count += sum(1 for p in parts if p.lstrip(b"\r\n").startswith(needle))
        if tail.lstrip(b"\r\n").startswith(needle):
            count += 1
    return count


# --------------------------------------------------------------------------- workers

def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def work_ours(path: str, warm: str | None) -> dict:
    from gateway.findings import Severity
    from gateway.x12.validate import validate_x12

    if warm:  # a long-lived process: maps and profiles already loaded
        validate_x12(warm, on_claim=lambda c: None)
    seen = [0]

    def on_claim(_claim) -> None:
        seen[0] += 1

    start_rss = peak_rss_mb()
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = validate_x12(path, on_claim=on_claim)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    errors = sum(1 for f in result.findings if f.severity is Severity.ERROR)
    verdict = "valid" if result.valid else f"INVALID ({errors} errors)"
    return {"seconds": seconds, "cpu": cpu, "claims": seen[0], "verdict": verdict,
            "findings": len(result.findings), "start_rss_mb": start_rss}


def work_pyx12(path: str, warm: str | None) -> dict:
    import io
    import logging

    import pyx12.params
    import pyx12.x12n_document

    log = logging.getLogger("pyx12")
    log.setLevel(logging.CRITICAL + 1)
    log.propagate = False

    def validate(name: str) -> bool:
        params = pyx12.params.params()
        fd_ack, fd_json = io.StringIO(), io.StringIO()
        with open(name, encoding="utf-8") as fd_in:
            return pyx12.x12n_document.x12n_document(params, fd_in, fd_ack, None,
                                                     fd_json=fd_json)

    if warm:  # same warm-up as ours (pyx12 itself re-reads its maps on every call)
        validate(warm)
    claims = count_claims(Path(path))  # streamed, outside the timed region
    start_rss = peak_rss_mb()
    c0, t0 = cpu_seconds(), time.perf_counter()
    ok = validate(path)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"seconds": seconds, "cpu": cpu, "claims": claims,
            "verdict": "valid" if ok else "INVALID",
            "start_rss_mb": start_rss}


def worker(engine: str, path: str, warm: str | None) -> None:
    result = (work_ours if engine == "ours" else work_pyx12)(path, warm)
    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_json(cmd: list[str], timeout: float | None) -> dict:
    """Run a worker command in a fresh interpreter and return the JSON it reports (shared by
    every benchmark under bench/)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def run_worker(engine: str, path: Path, timeout: float | None, warm: Path | None) -> dict:
    """Run one engine on one file in a fresh interpreter and return its report."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, str(path)]
    if warm is not None:
        cmd += ["--warm-file", str(warm)]
    return run_json(cmd, timeout)


# --------------------------------------------------------------------------- report

def machine() -> str:
    try:
        from importlib.metadata import version
        pyx12_version = version("pyx12")
    except Exception:  # pragma: no cover - informational only
        pyx12_version = "?"
    cpu = platform.processor() or platform.machine()
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()} ({platform.python_implementation()}), "
            f"pyx12 {pyx12_version}")


def load_average() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        return "load average n/a"


def best_of(runs: list[dict]) -> dict:
    """The fastest run (wall time); peak RSS is the highest seen over all runs."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    best = dict(min(good, key=lambda r: r["seconds"]))
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in good)
    best["runs"] = len(good)
    return best


def rate(r: dict, key: str = "seconds") -> float | None:
    if "error" in r or not r.get(key):
        return None
    return r["claims"] / r[key]


def ratio_of(by_engine: dict[str, dict], key: str = "seconds") -> float | None:
    ours, ref = rate(by_engine.get("ours", {"error": ""}), key), \
        rate(by_engine.get("pyx12", {"error": ""}), key)
    return ours / ref if ours and ref else None


RIGHT = {0, 2, 3, 4, 5, 7}


def table_rows(results: dict[int, dict[str, dict]],
               engines: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["size", "engine", "seconds", "cpu s", "claims/s", "peak RSS MB", "verdict",
              "ratio ours/pyx12"]
    rows = []
    for size, by_engine in results.items():
        ratio = ratio_of(by_engine)
        for i, engine in enumerate(engines):
            r = by_engine.get(engine, {"error": "not run"})
            ratio_cell = (f"{ratio:.2f}x" if ratio is not None else "-") if i == 0 else ""
            if "error" in r:
                rows.append([f"{size:,}", engine, "-", "-", "-", "-", f"ERROR: {r['error']}",
                             ratio_cell])
                continue
            rows.append([f"{size:,}", engine, f"{r['seconds']:.2f}", f"{r['cpu']:.2f}",
                         f"{rate(r):,.0f}", f"{r['peak_rss_mb']:.1f}",
                         f"{r['verdict']} ({r['claims']:,} claims)", ratio_cell])
    return header, rows


def print_table(header: list[str], rows: list[list[str]], title: str,
                right: set[int] | None = None, plain: bool = False, width: int | None = None
                ) -> None:
    """A table with rich when installed (plain text otherwise, or with ``plain``); ``right``
    are the right-aligned column indexes."""
    right = RIGHT if right is None else right
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

        def fmt(cells):
            return " | ".join(c.rjust(w) if i in right else c.ljust(w)
                              for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        print(title)
        print(fmt(header))
        print("-+-".join("-" * w for w in widths))
        for row in rows:
            print(fmt(row))
        return
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*row)
    Console(width=width).print(table)


def print_targets(results: dict[int, dict[str, dict]]) -> None:
    print()
    for size, by_engine in results.items():
        ratio, cpu_ratio = ratio_of(by_engine), ratio_of(by_engine, "cpu")
        if ratio is not None:
            mark = "ok" if ratio >= RATIO_TARGET else "MISS"
            print(f"target ratio >= {RATIO_TARGET:.1f} at {size:,} claims: {ratio:.2f}x  [{mark}]"
                  f"   (on CPU time: {cpu_ratio:.2f}x)")
    for size, by_engine in results.items():
        ours = by_engine.get("ours", {})
        if size >= RSS_TARGET_SIZE and "peak_rss_mb" in ours:
            mark = "ok" if ours["peak_rss_mb"] < RSS_TARGET_MB else "MISS"
            print(f"target ours peak RSS < {RSS_TARGET_MB:.0f} MB at {size:,} claims: "
                  f"{ours['peak_rss_mb']:.1f} MB  [{mark}]")


# --------------------------------------------------------------------------- main

def show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000",
                        help="comma-separated claim counts (default: %(default)s)")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="comma-separated subset of: " + ", ".join(ENGINES))
    parser.add_argument("--repeat", type=int, default=1,
                        help="fresh-process runs per engine and size; the fastest is "
                             "reported (default: %(default)s)")
    parser.add_argument("--warm", action="store_true",
                        help="validate a small file first in each worker (untimed), as a "
                             "long-lived server would have: ours then reuses its cached maps")
    parser.add_argument("--out", type=Path, default=HERE / "out",
                        help="where the synthetic files go (default: bench/out)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true",
                        help="reuse an existing generated file of the same size and seed")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per worker run (default: no limit)")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--warm-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        engine, path = args.worker
        if engine not in ENGINES:
            parser.error(f"unknown engine {engine!r}")
        worker(engine, path, args.warm_file)
        return 0

    try:
        sizes = [int(s.strip().replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    engines = [e for e in ENGINES if e in {x.strip() for x in args.engines.split(",")}]
    if not sizes or not engines or min(sizes) < 1 or args.repeat < 1:
        parser.error("need at least one positive size, one engine and --repeat >= 1")

    from synth837 import write_file

    print(machine())
    print(load_average(), "(other load on the machine inflates wall times; see cpu s)")
    args.out.mkdir(parents=True, exist_ok=True)
    warm = None
    if args.warm:
        warm = args.out / f"synth837-warm-s{args.seed}.x12"
        write_file(warm, 10, args.seed + 1)
    results: dict[int, dict[str, dict]] = {}
    for size in sizes:
        path = args.out / f"synth837-{size}-s{args.seed}.x12"
        if not (args.reuse and path.exists()):
            t0 = time.perf_counter()
            write_file(path, size, args.seed)
            print(f"generated {show(path)} ({path.stat().st_size / 1e6:.1f} MB) "
                  f"in {time.perf_counter() - t0:.1f}s", flush=True)
        results[size] = {}
        for engine in engines:
            runs = []
            for _ in range(args.repeat):
                r = run_worker(engine, path, args.timeout, warm)
                runs.append(r)
                done = (f"{r['seconds']:.2f}s wall, {r['cpu']:.2f}s cpu, "
                        f"{r['peak_rss_mb']:.1f} MB, {r['verdict']}"
                        if "error" not in r else f"ERROR {r['error']}")
                print(f"  {size:>7,} {engine:<6} {done}", flush=True)
            results[size][engine] = best_of(runs)

    print()
    print(machine())
    print(load_average())
    title = "validate: ours vs bare pyx12" + (" (warm process)" if warm else " (cold process)")
    if args.repeat > 1:
        title += f", best of {args.repeat}"
    print_table(*table_rows(results, engines), title=title)
    print_targets(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
