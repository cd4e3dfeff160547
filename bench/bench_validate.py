"""Benchmark: our X12 engine against bare pyx12 and a bare ``str.split`` pass, same files,
one run.

Per file size (claims) and per engine, each run in a *fresh* Python process so the peak
resident set size is that engine's alone:

* ``pyx12``   -- bare ``pyx12.x12n_document.x12n_document`` (999 and JSON error output into
  ``io.StringIO``): the reference implementation;
* ``ours-j1`` -- ``gateway.reports.validate_file(path)``, what ``ecm-gateway validate`` runs:
  envelope, native implementation-guide engine (SNIP 1-2), SNIP 3-7 rule packs, claim reading
  and claim verdicts, streaming (claims counted, not kept);
  ours-j1 runs the compiled hot path when ``make install-dev`` built it (the verdict column
  says "compiled" or "pure Python"; see gateway/x12/_accelerate.py);
* ``ours-py`` -- ours-j1 forced to pure Python (``ECM_GATEWAY_X12_PURE=1``): the fallback's speed;
* ``ours-j2`` -- the same with ``jobs=2`` (``validate --jobs 2``);
* ``split``   -- read the file in chunks and split it into segments and elements with
  ``str.split``: the ceiling for any pure-Python reader.

Reported: wall seconds, CPU seconds (all processes, less sensitive to other load on the
machine), claims/s (on wall and on CPU), peak RSS in MB (the worker and its children), and for
every size the ratios ours-j1/pyx12, ours-j1/split and ours-j2/ours-j1. Also the CLI start-up:
``ecm-gateway validate`` on a 10-claim file in a fresh process (imports + compiled maps +
work), best of 5.

Targets (issue 11): ours-j1 >= 30x pyx12 on one core; ours-j1 >= 20% of the split ceiling;
peak RSS < 100 MB (for a 1M-claim file: ``--sizes 1000000 --engines ours-j1``); near-linear
gain with --jobs 2; CLI start-up < 0.3 s.

Usage::

    python bench/bench_validate.py                          # sizes 10000,100000
    python bench/bench_validate.py --sizes 1000 --pyx12-max 1000   # quick run
    python bench/bench_validate.py --sizes 1000000 --engines ours-j1 --reuse   # RSS at 1M

pyx12 runs only up to ``--pyx12-max`` claims (default 10000: at ~450 claims/s the 100k file
takes minutes); the ratios at a larger size use the pyx12 claims/s measured at the largest size
it ran. Files are written to ``bench/out/`` (git-ignored).
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

ENGINES = ("pyx12", "ours-j1", "ours-py", "ours-j2", "split")
RESULT_MARK = "BENCH-RESULT "
RSS_TARGET_MB = 100.0
RATIO_TARGET = 30.0
SPLIT_TARGET = 0.20
STARTUP_TARGET = 0.3


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


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def work_ours(path: str, warm: str | None, jobs: int = 1) -> dict:
    from gateway.reports import validate_file

    if warm:  # a long-lived process: maps and profiles already loaded
        validate_file(Path(warm), jobs=jobs)
    start_rss = peak_rss_mb()
    c0, k0, t0 = cpu_seconds(), children_cpu(), time.perf_counter()
    report = validate_file(Path(path), jobs=jobs)
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0 + children_cpu() - k0
    errors = sum(1 for f in report.findings if f.severity.value == "error")
    verdict = "valid" if report.valid else f"INVALID ({errors} errors)"
    from gateway.x12._accelerate import compiled

    verdict += ", compiled" if compiled("gateway.x12.engine.validator") else ", pure Python"
    return {"seconds": seconds, "cpu": cpu, "claims": report.stats.get("claims", 0),
            "verdict": verdict, "findings": len(report.findings), "start_rss_mb": start_rss}


def work_split(path: str, warm: str | None) -> dict:
    start_rss = peak_rss_mb()
    c0, t0 = cpu_seconds(), time.perf_counter()
    claims = segments = 0
    with open(path, "rb") as fh:
        head = fh.read(106).decode("latin-1")
        element, terminator = head[3], head[105]
        fh.seek(0)
        carry = ""
        while True:
            block = fh.read(1 << 16)
            if not block:
                break
            pieces = (carry + block.decode("utf-8")).split(terminator)
            carry = pieces.pop()
            for piece in pieces:
                fields = piece.strip("\r\n").split(element)
                segments += 1
                if fields[0] == "CLM":
                    claims += 1
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"seconds": seconds, "cpu": cpu, "claims": claims, "verdict": f"{segments:,} segments",
            "start_rss_mb": start_rss}


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
    if engine == "ours-py":
        os.environ["ECM_GATEWAY_X12_PURE"] = "1"  # read when gateway.x12 is first imported
        result = work_ours(path, warm, 1)
    elif engine.startswith("ours-j"):
        result = work_ours(path, warm, int(engine[len("ours-j"):]))
    elif engine == "split":
        result = work_split(path, warm)
    else:
        result = work_pyx12(path, warm)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_rss_mb"] = max(peak_rss_mb(), children)
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
    if not r or "error" in r or not r.get(key):
        return None
    return r["claims"] / r[key]


def pyx12_rate(results: dict[int, dict[str, dict]], size: int, key: str) -> float | None:
    """pyx12 claims/s at this size, else at the largest size it ran (it is linear)."""
    found = rate(results[size].get("pyx12", {}), key)
    if found:
        return found
    ran = [s for s in results if rate(results[s].get("pyx12", {}), key)]
    return rate(results[max(ran)]["pyx12"], key) if ran else None


def ratios(results: dict[int, dict[str, dict]], size: int, key: str = "seconds") -> dict:
    by = results[size]
    j1, j2, split = (rate(by.get(e, {}), key) for e in ("ours-j1", "ours-j2", "split"))
    ref = pyx12_rate(results, size, key)
    py = rate(by.get("ours-py", {}), key)
    return {"pyx12": j1 / ref if j1 and ref else None,
            "py": py / ref if py and ref else None,
            "split": j1 / split if j1 and split else None,
            "jobs2": j2 / j1 if j1 and j2 else None}


RIGHT = {0, 2, 3, 4, 5, 6}


def table_rows(results: dict[int, dict[str, dict]],
               engines: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["size", "engine", "seconds", "cpu s", "claims/s", "claims/s cpu",
              "peak RSS MB", "verdict"]
    rows = []
    for size, by_engine in results.items():
        for engine in engines:
            r = by_engine.get(engine, {"error": "not run"})
            if "error" in r:
                rows.append([f"{size:,}", engine, "-", "-", "-", "-", "-", r["error"]])
                continue
            rows.append([f"{size:,}", engine, f"{r['seconds']:.2f}", f"{r['cpu']:.2f}",
                         f"{rate(r):,.0f}", f"{rate(r, 'cpu'):,.0f}", f"{r['peak_rss_mb']:.1f}",
                         f"{r['verdict']} ({r['claims']:,} claims)"])
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


def print_targets(results: dict[int, dict[str, dict]], startup: float | None) -> None:
    print()

    def show(value, target, fmt, better="higher"):
        if value is None:
            return "-"
        ok = value >= target if better == "higher" else value < target
        return f"{fmt.format(value)}  [{'ok' if ok else 'MISS'}]"

    for size in results:
        wall, cpu = ratios(results, size), ratios(results, size, "cpu")
        gain = f"{wall['jobs2']:.2f}x" if wall["jobs2"] else "-"
        gain_cpu = f"{cpu['jobs2']:.2f}x" if cpu["jobs2"] else "-"
        print(f"{size:,} claims: ours-j1/pyx12 {show(wall['pyx12'], RATIO_TARGET, '{:.1f}x')}"
              f" (cpu {show(cpu['pyx12'], RATIO_TARGET, '{:.1f}x')}, target >= "
              f"{RATIO_TARGET:.0f}x); ours-j1/split {show(wall['split'], SPLIT_TARGET, '{:.0%}')}"
              f" (cpu {show(cpu['split'], SPLIT_TARGET, '{:.0%}')}, target >= "
              f"{SPLIT_TARGET:.0%}); --jobs 2 gain on wall {gain} (cpu used {gain_cpu})")
        if wall["py"]:
            print(f"  ours-py (pure Python)/pyx12 {wall['py']:.1f}x (cpu {cpu['py']:.1f}x)")
        for engine in ("ours-j1", "ours-j2"):
            r = results[size].get(engine, {})
            if "peak_rss_mb" in r:
                print(f"  {engine} peak RSS {show(r['peak_rss_mb'], RSS_TARGET_MB, '{:.1f} MB', 'lower')}"
                      f" (target < {RSS_TARGET_MB:.0f} MB)")
    if startup is not None:
        print(f"CLI start-up (ecm-gateway validate, 10 claims, fresh process): "
              f"{show(startup, STARTUP_TARGET, '{:.3f} s', 'lower')} (target < {STARTUP_TARGET} s)")


def measure_startup(path: Path, runs: int = 5) -> float:
    best = None
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gateway.cli", "validate", str(path)],
                       capture_output=True, cwd=ROOT, check=False)
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
    return best


# --------------------------------------------------------------------------- main

def show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000",
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
    parser.add_argument("--pyx12-max", type=int, default=10000,
                        help="largest size pyx12 runs at (default: %(default)s)")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timing")
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
            if engine == "pyx12" and size > args.pyx12_max:
                continue
            runs = []
            for _ in range(args.repeat):
                r = run_worker(engine, path, args.timeout, warm)
                runs.append(r)
                done = (f"{r['seconds']:.2f}s wall, {r['cpu']:.2f}s cpu, "
                        f"{r['peak_rss_mb']:.1f} MB, {r['verdict']}"
                        if "error" not in r else f"ERROR {r['error']}")
                print(f"  {size:>9,} {engine:<7} {done}", flush=True)
            results[size][engine] = best_of(runs)

    print()
    print(machine())
    print(load_average())
    startup = None
    if not args.no_startup:
        tiny = args.out / f"synth837-10-s{args.seed}.x12"
        write_file(tiny, 10, args.seed)
        startup = measure_startup(tiny)
    title = "validate: ours vs bare pyx12 and str.split" + (
        " (warm process)" if warm else " (cold process)")
    if args.repeat > 1:
        title += f", best of {args.repeat}"
    print_table(*table_rows(results, engines), title=title)
    print_targets(results, startup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
