"""Benchmark: provider invoices (CSV and XLSX) validated and converted to 837P.

A synthetic invoice of ``--rows`` rows (default 100,000) is written in the default invoice
layout (``mappings/invoice/layouts/default.yaml``), once as CSV and once as XLSX (openpyxl
write-only mode, dates as real dates): about ten billing providers (Luhn-valid NPIs), about
30,000 members (CIN-shaped ids; scaled with ``--rows``), 1-6 rows per invoice + member, ECM
lines (G9008 / G9012 with U1, U2 or U8, some with GQ) and Community Supports meals (S5170 U6,
some over a date range), service dates in September 2026, charges partly written like
"$1,050.00", and about 1% of the rows with a defect (bad CIN, NPI with a wrong check digit, an
empty required cell, an unparsable date). Generation is deterministic for a given ``--seed``.

What is measured, each in a *fresh* Python process so that the peak resident set size is that
measurement's alone (imports are excluded from the time, not from the RSS):

* ``csv``  -- ``gateway.reports.validate_invoice(path, received=2026-10-15)`` (layout
  validation, grouping into claims, ECM code-set rules) then
  ``gateway.conversion.canonical_to_837p`` of the accepted claims into a file;
* ``xlsx`` -- the same over the XLSX copy;
* ``csv`` at ``--rows/10`` -- the same as ``csv`` on a tenth of the rows, to show whether peak
  memory grows with the row count.

Reported: wall seconds of validate + convert (and each part), CPU seconds, rows per second,
peak RSS (``ru_maxrss`` of the worker, so interpreter and imports included) and the RSS after
imports, accepted / rejected rows, claims and the 837P size. As a yardstick every worker also
times a plain ``csv.reader`` loop over the same CSV (after the measurement, best of 3); the last
column is how many times slower the whole pipeline is than that bare reading.

Targets:

* 100,000 CSV rows in under 30 s on one core (3,333 rows/s);
* flat memory: peak RSS at ``--rows`` no more than 1.25x the peak at ``--rows/10``.

Usage::

    python bench/bench_invoice.py                    # 100,000 rows (and 10,000)
    python bench/bench_invoice.py --rows 2000        # quick run
    python bench/bench_invoice.py --profile          # also cProfile the CSV run

Files go to ``bench/out/`` (git-ignored). Writing the 100k-row XLSX takes about half a minute.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_validate import print_table as show_table  # noqa: E402
from bench_validate import best_of as shared_best_of  # noqa: E402
from bench_validate import load_average, run_json  # noqa: E402

RESULT_MARK = "BENCH-RESULT "
RECEIVED = date(2026, 10, 15)
TIME_TARGET_ROWS = 100_000
TIME_TARGET_SECONDS = 30.0
RSS_GROWTH_TARGET = 1.25  # peak RSS at N rows / peak RSS at N/10 rows


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- synthetic data

HEADER = ["Invoice Number", "Invoice Date", "Billing Provider Name", "Billing Provider NPI",
          "Billing Provider TIN", "Billing Provider Address", "Billing Provider City",
          "Billing Provider State", "Billing Provider ZIP", "Rendering Provider NPI",
          "Member CIN", "Member Last Name", "Member First Name", "Member Date of Birth",
          "Service Date", "Service End Date", "HCPCS Code", "Modifier 1", "Modifier 2",
          "Modifier 3", "Modifier 4", "Units", "Charge", "Place of Service",
          "Authorization Number", "Diagnosis Code", "Notes"]
COL = {name: i for i, name in enumerate(HEADER)}

ORGS = [("Harbor Community Health Center", "100 Main St", "Sacramento", "958141234"),
        ("Golden Table Meals", "55 Market St", "Fresno", "937211022"),
        ("Valley Care Partners", "2200 Oak Ave", "Oakland", "94612"),
        ("Bridge Health Services", "18 Pine St", "Stockton", "952023301"),
        ("Hope Street Outreach", "731 Elm Way", "Modesto", "95354"),
        ("Unity Care Coordination", "4 Cedar Blvd", "San Jose", "951131810"),
        ("Mission Community Supports", "901 Mission St", "San Francisco", "94103"),
        ("Central Valley ECM Group", "3400 Tulare St", "Fresno", "937210044"),
        ("Delta Family Services", "77 Weber Ave", "Stockton", "95202"),
        ("Sierra Nutrition Partners", "1500 J St", "Sacramento", "95814")]
LAST = ["Garcia", "Nguyen", "Smith", "Lopez", "Kim", "Johnson", "Martinez", "Tran", "Wilson",
        "Hernandez", "Patel", "Chen", "Davis", "Reyes", "Morales", "Young", "Alvarez", "Ibarra"]
FIRST = ["Alex", "Maria", "Jordan", "Linh", "Sam", "Rosa", "Devon", "Ana", "Chris", "Mei",
         "Jamie", "Luis", "Taylor", "Nora", "Omar", "Iris", "Marisol", "Teodoro"]
# (code, modifiers, rate per unit, unit choices, places of service)
ECM = [("G9008", ["U1"], "125.00", (1, 2, 3, 4, 6, 8, 10), ("11", "12", "99")),
       ("G9012", ["U1"], "125.00", (1, 2, 3, 4), ("11", "12", "99")),
       ("G9008", ["U2"], "125.00", (1, 2, 4), ("11", "12")),
       ("G9012", ["U8"], "25.00", (1, 2), ("12", "99")),
       ("G9012", ["U8", "GQ"], "25.00", (1, 2), ("12",)),
       ("G9008", ["U1", "GQ"], "125.00", (1, 2, 3), ("12",))]
MEALS = ("S5170", ["U6"], "12.50", (7, 14), ("12",))
DIAGNOSES = ["Z5900", "Z590", "F329", "F1020", "Z658", "I10", "E119"]
NOTES = ["phone outreach", "home visit", "care plan review", "meals delivered weekly",
         "follow-up after discharge"]
DEFECTS = ("cin", "npi", "empty", "date")
CIN_LETTERS = "ABCDEFGHJKLMNPRSTUVWXY"


def luhn_npi(stem: int) -> str:
    """A 10-digit NPI whose last digit is the Luhn check digit over prefix 80840 (as
    ``bench/synth837.py`` does)."""
    from synth837 import luhn_npi as synth_luhn_npi

    return synth_luhn_npi(stem)


def cin(n: int) -> str:
    """A CIN-shaped member id: 8 digits and a capital letter (as ``synth837.cin``)."""
    return f"{90000000 + n % 9999999:08d}{CIN_LETTERS[n % 22]}"


def money_text(amount: float, rng: random.Random) -> str | float:
    """Charges as providers type them: "$1,050.00", "1050.00", "1050" or (XLSX) a number."""
    style = rng.random()
    if style < 0.25:
        return f"${amount:,.2f}"
    if style < 0.35:
        return f"{amount:,.2f}"
    if style < 0.45 and amount == int(amount):
        return str(int(amount))
    return amount  # a number: CSV writes "1050.0" -> formatted below, XLSX a numeric cell


def invoice_rows(rows: int, seed: int):
    """Yield ``rows`` data rows (lists of str / date / int / float / None, header order) and
    count the defects planted in ``invoice_rows.planted``."""
    rng = random.Random(seed)
    providers = []
    for i, (name, street, city, postal) in enumerate(ORGS):
        providers.append({
            "name": name, "npi": luhn_npi(100000000 + i * 7919), "tin": f"94-{1200000 + i * 13:07d}"
            if i % 2 == 0 else f"{941200000 + i * 13:09d}",
            "street": street, "city": city, "zip": postal, "meals": "Meals" in name
            or "Nutrition" in name, "invoice_seq": 0, "invoice_groups": 0,
            "rendering": [luhn_npi(200000000 + i * 1013 + k * 31) for k in range(8)]})
    member_count = max(10, round(rows * 0.3))
    members: dict[int, tuple] = {}
    used: set[tuple] = set()  # (cin, npi, day, code, modifiers, units): no accidental duplicates
    planted = {d: 0 for d in DEFECTS}
    made = 0
    while made < rows:
        provider = providers[rng.randrange(len(providers))]
        if provider["invoice_groups"] == 0:  # a new invoice of ~100-400 member groups
            provider["invoice_seq"] += 1
            provider["invoice_groups"] = rng.randint(100, 400)
            provider["invoice"] = f"INV-{providers.index(provider) + 1:02d}-" \
                                  f"{provider['invoice_seq']:05d}"
            provider["invoice_date"] = date(2026, 10, rng.randint(1, 10))
        provider["invoice_groups"] -= 1
        number = rng.randrange(member_count)
        member = members.get(number)
        if member is None:
            member = members[number] = (
                cin(number * 7 + seed), rng.choice(LAST), rng.choice(FIRST),
                date(1940, 1, 1) + timedelta(days=rng.randrange(0, 23000)))
        auth = f"AUTH-{rng.randrange(10000, 99999)}" if rng.random() < 0.4 else None
        diagnosis = rng.choice(DIAGNOSES) if rng.random() < 0.3 else None
        rendering = rng.choice(provider["rendering"]) if rng.random() < 0.3 else None
        for _ in range(min(rng.randint(1, 6), rows - made)):
            meals = provider["meals"] and rng.random() < 0.8
            code, modifiers, rate, unit_choices, places = MEALS if meals else rng.choice(ECM)
            units = rng.choice(unit_choices)
            for _attempt in range(20):
                start = date(2026, 9, 1) + timedelta(days=rng.randrange(0, 30 - (
                    units - 1 if meals else 0)))
                key = (member[0], provider["npi"], start, code, tuple(modifiers), units)
                if key not in used:
                    break
            used.add(key)
            end = start + timedelta(days=units - 1) if meals and units > 1 else None
            charge = money_text(float(rate) * units, rng)
            row = [provider["invoice"], provider["invoice_date"], provider["name"],
                   provider["npi"], provider["tin"], provider["street"], provider["city"], "CA",
                   provider["zip"], rendering, member[0], member[1], member[2], member[3], start,
                   end, code, modifiers[0], modifiers[1] if len(modifiers) > 1 else None,
                   None, None, units, charge, rng.choice(places), auth, diagnosis,
                   rng.choice(NOTES) if rng.random() < 0.1 else None]
            if rng.random() < 0.01:
                defect = rng.choice(DEFECTS)
                planted[defect] += 1
                if defect == "cin":
                    row[COL["Member CIN"]] = rng.choice(
                        (member[0][:8], member[0][:7] + member[0][8], "9" + member[0][:8],
                         member[0][:8] + "0"))
                elif defect == "npi":
                    npi = provider["npi"] if rng.random() < 0.5 or not rendering else rendering
                    column = "Billing Provider NPI" if npi == provider["npi"] \
                        else "Rendering Provider NPI"
                    row[COL[column]] = npi[:9] + str((int(npi[9]) + rng.randint(1, 9)) % 10)
                elif defect == "empty":
                    row[COL[rng.choice(("Member Last Name", "Units", "Charge", "HCPCS Code",
                                        "Place of Service", "Member Date of Birth",
                                        "Billing Provider TIN"))]] = None
                else:
                    row[COL[rng.choice(("Service Date", "Member Date of Birth"))]] = rng.choice(
                        ("2026-09-31", "2026-13-04", "Sept 5 2026", "09/xx/2026", "2026.09.05"))
            made += 1
            yield row
    invoice_rows.planted = planted  # type: ignore[attr-defined]


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_invoices(csv_path: Path, xlsx_path: Path | None, rows: int, seed: int) -> dict:
    """Write the CSV (and the XLSX, same rows) in one pass; returns the planted defects."""
    from openpyxl import Workbook

    book = sheet = None
    if xlsx_path is not None:
        book = Workbook(write_only=True)
        sheet = book.create_sheet("Invoice")
        sheet.append(HEADER)
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for row in invoice_rows(rows, seed):
            writer.writerow([csv_cell(v) for v in row])
            if sheet is not None:
                sheet.append(row)
    if book is not None:
        book.save(xlsx_path)
    planted = dict(invoice_rows.planted)  # type: ignore[attr-defined]
    (csv_path.with_suffix(".defects.json")).write_text(json.dumps(planted))
    return planted


# --------------------------------------------------------------------------- workers

def bare_csv_rows_per_second(path: str, repeat: int = 3) -> tuple[int, float]:
    """Rows/s of a plain csv.reader loop over the file (best of ``repeat``): the yardstick."""
    best, count = None, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        with open(path, encoding="utf-8", newline="") as handle:
            count = -1  # the header row
            for _row in csv.reader(handle):
                count += 1
        seconds = time.perf_counter() - t0
        best = seconds if best is None else min(best, seconds)
    return count, count / best if best else 0.0


def pipeline(path: str, out: str) -> dict:
    from gateway.reports import validate_invoice
    from gateway.x12.write837 import Encounter837Writer
    from gateway.x12.writer import ControlNumbers, envelope_settings

    gc_time = [0.0, 0.0, 0]  # seconds in the cyclic collector, start of a pass, full passes

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]
            gc_time[2] += info.get("generation") == 2

    start_rss = peak_rss_mb()
    gc.callbacks.append(on_gc)
    c0, t0 = cpu_seconds(), time.perf_counter()
    settings = envelope_settings("plan-default")
    # the CLI's way: accepted claims stream into the 837P writer as they are settled
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = Encounter837Writer(handle, settings, ControlNumbers(1, 1),
                                    datetime(2026, 10, 15, 9, 30))
        report = validate_invoice(Path(path), received=RECEIVED, on_encounter=writer.write)
        result = report.invoice
        t1 = time.perf_counter()
        stats = writer.close()
    t2 = time.perf_counter()
    cpu = cpu_seconds() - c0
    gc.callbacks.remove(on_gc)
    return {"seconds": t2 - t0, "validate_s": t1 - t0, "convert_s": t2 - t1, "cpu": cpu,
            "gc_s": gc_time[0], "gc_full": gc_time[2],
            "rows": len(result.rows), "accepted": result.accepted_rows,
            "rejected": result.rejected_rows, "claims": result.claims,
            "lines": stats.lines, "x12_bytes": os.path.getsize(out), "start_rss_mb": start_rss,
            "rules": _rule_counts(report.findings)}


def _rule_counts(findings) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.rule] = counts.get(f.rule, 0) + 1
    return dict(sorted(counts.items()))


def worker(path: str, csv_path: str, out: str) -> None:
    import gateway.conversion  # noqa: F401  imports outside the timed region
    import gateway.reports  # noqa: F401

    result = pipeline(path, out)
    result["peak_rss_mb"] = peak_rss_mb()  # before the yardstick (which is tiny anyway)
    result["bare_rows"], result["bare_rows_per_s"] = bare_csv_rows_per_second(csv_path)
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def profile_worker(path: str, out: str, top: int) -> None:
    import cProfile
    import io
    import pstats

    import gateway.conversion  # noqa: F401
    import gateway.reports  # noqa: F401

    profiler = cProfile.Profile()
    profiler.enable()
    result = pipeline(path, out)
    profiler.disable()
    print(f"profiled run: {result['rows']:,} rows in {result['seconds']:.2f}s under cProfile "
          f"(validate {result['validate_s']:.2f}s, 837P {result['convert_s']:.2f}s)")
    for order in ("cumulative", "tottime"):
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.strip_dirs().sort_stats(order).print_stats(top)
        text = buffer.getvalue()
        body = text[text.find("   ncalls"):] if "   ncalls" in text else text
        print(f"\n--- top {top} by {order} ---")
        print(body.rstrip())


def run_worker(path: Path, csv_path: Path, out: Path, timeout: float | None) -> dict:
    """One measurement in a fresh interpreter."""
    return run_json([sys.executable, str(Path(__file__).resolve()), "--worker", str(path),
                     str(csv_path), str(out)], timeout)


# --------------------------------------------------------------------------- report

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        from importlib.metadata import version
        openpyxl_version = version("openpyxl")
    except Exception:  # pragma: no cover - informational only
        openpyxl_version = "?"
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()} ({platform.python_implementation()}), "
            f"openpyxl {openpyxl_version}")


def best_of(runs: list[dict]) -> dict:
    best = shared_best_of(runs)
    good = [r for r in runs if "error" not in r]
    if good:
        best["bare_rows_per_s"] = max(r["bare_rows_per_s"] for r in good)
    return best


RIGHT = set(range(2, 16))


def table_rows(results: list[tuple[str, int, dict]]) -> tuple[list[str], list[list[str]]]:
    header = ["format", "file", "rows", "seconds", "validate s", "837P s", "cpu s", "gc s",
              "rows/s",
              "peak RSS MB", "base RSS MB", "accepted", "rejected", "claims", "837P MB",
              "csv.reader rows/s", "x slower"]
    rows = []
    for fmt, size, r in results:
        name = f"{size:,} rows"
        if "error" in r:
            rows.append([fmt, name, f"{size:,}"] + ["-"] * 13 + [f"ERROR: {r['error']}"])
            continue
        rate = r["rows"] / r["seconds"] if r["seconds"] else 0.0
        slower = r["bare_rows_per_s"] / rate if rate else 0.0
        rows.append([fmt, name, f"{r['rows']:,}", f"{r['seconds']:.2f}", f"{r['validate_s']:.2f}",
                     f"{r['convert_s']:.2f}", f"{r['cpu']:.2f}", f"{r['gc_s']:.2f}",
                     f"{rate:,.0f}",
                     f"{r['peak_rss_mb']:.1f}", f"{r['start_rss_mb']:.1f}",
                     f"{r['accepted']:,}", f"{r['rejected']:,}", f"{r['claims']:,}",
                     f"{r['x12_bytes'] / 1e6:.1f}", f"{r['bare_rows_per_s']:,.0f}",
                     f"{slower:.0f}x"])
    return header, rows


def print_table(header: list[str], rows: list[list[str]], title: str) -> None:
    """Plain text (the table is wide; it should paste as is)."""
    show_table(header, rows, title, right=RIGHT, plain=True)


def print_targets(main: dict, small: dict | None, rows: int, small_rows: int) -> None:
    print()
    if "error" not in main:
        rate = main["rows"] / main["seconds"]
        target_rate = TIME_TARGET_ROWS / TIME_TARGET_SECONDS
        projected = TIME_TARGET_ROWS / rate
        cpu_projected = TIME_TARGET_ROWS / (main["rows"] / main["cpu"]) if main["cpu"] else 0
        mark = "ok" if projected < TIME_TARGET_SECONDS else "MISS"
        how = "measured" if main["rows"] == TIME_TARGET_ROWS else \
            f"extrapolated linearly from {main['rows']:,} rows: optimistic, the collector's " \
            "share grows with the row count"
        print(f"target {TIME_TARGET_ROWS:,} CSV rows < {TIME_TARGET_SECONDS:.0f} s "
              f"(>= {target_rate:,.0f} rows/s): {projected:.1f} s wall, {cpu_projected:.1f} s cpu "
              f"({how}; {rate:,.0f} rows/s)  [{mark}]")
    if small and "error" not in small and "error" not in main:
        growth = main["peak_rss_mb"] / small["peak_rss_mb"]
        above_main = main["peak_rss_mb"] - main["start_rss_mb"]
        above_small = small["peak_rss_mb"] - small["start_rss_mb"]
        per_row = (above_main - above_small) / max(1, rows - small_rows) * 1024
        mark = "ok" if growth <= RSS_GROWTH_TARGET else "MISS"
        print(f"target flat memory (peak RSS at {rows:,} rows <= {RSS_GROWTH_TARGET:.2f}x the "
              f"peak at {small_rows:,}): {main['peak_rss_mb']:.1f} MB vs "
              f"{small['peak_rss_mb']:.1f} MB = {growth:.2f}x  [{mark}]")
        print(f"  above the post-import RSS: {above_small:.1f} MB at {small_rows:,} rows, "
              f"{above_main:.1f} MB at {rows:,} rows -> about {per_row:.1f} KB per extra row")


# --------------------------------------------------------------------------- main

def show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def ensure_files(out: Path, rows: int, seed: int, reuse: bool, xlsx: bool) -> tuple[Path, Path]:
    csv_path = out / f"invoice-{rows}-s{seed}.csv"
    xlsx_path = out / f"invoice-{rows}-s{seed}.xlsx"
    if reuse and csv_path.exists() and (xlsx_path.exists() or not xlsx):
        print(f"reusing {show(csv_path)}" + (f" and {show(xlsx_path)}" if xlsx else ""))
        return csv_path, xlsx_path
    t0 = time.perf_counter()
    planted = write_invoices(csv_path, xlsx_path if xlsx else None, rows, seed)
    sizes = f"{csv_path.stat().st_size / 1e6:.1f} MB"
    if xlsx:
        sizes += f", {show(xlsx_path)} {xlsx_path.stat().st_size / 1e6:.1f} MB"
    print(f"generated {show(csv_path)} ({sizes}) in {time.perf_counter() - t0:.1f}s; "
          f"planted defects: {', '.join(f'{k} {v}' for k, v in planted.items())} "
          f"({sum(planted.values()) / rows:.1%} of rows)", flush=True)
    return csv_path, xlsx_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000,
                        help="data rows of the invoice (default: %(default)s); the CSV is also "
                             "run at a tenth of that for the memory comparison")
    parser.add_argument("--repeat", type=int, default=1,
                        help="fresh-process runs per measurement; the fastest is reported")
    parser.add_argument("--formats", default="csv,xlsx", help="csv, xlsx or both")
    parser.add_argument("--no-small", action="store_true",
                        help="skip the CSV run at --rows/10")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, cProfile one CSV run at --rows (top functions by "
                             "cumulative time and by own time)")
    parser.add_argument("--top", type=int, default=20, help="functions shown by --profile")
    parser.add_argument("--out", type=Path, default=HERE / "out",
                        help="where the files go (default: bench/out)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true",
                        help="reuse existing generated files of the same size and seed")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per worker run (default: no limit)")
    parser.add_argument("--worker", nargs=3, metavar=("PATH", "CSV", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", nargs=2, metavar=("PATH", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(*args.worker)
        return 0
    if args.profile_worker:
        profile_worker(*args.profile_worker, top=args.top)
        return 0

    formats = [f for f in ("csv", "xlsx") if f in {x.strip() for x in args.formats.split(",")}]
    if args.rows < 10 or args.repeat < 1 or not formats:
        parser.error("need --rows >= 10, --repeat >= 1 and csv and/or xlsx in --formats")
    small_rows = args.rows // 10

    print(machine())
    print(load_average(), "(other load on the machine inflates wall times; see cpu s)")
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, xlsx_path = ensure_files(args.out, args.rows, args.seed, args.reuse,
                                       "xlsx" in formats)
    plan: list[tuple[str, int, Path, Path]] = [
        (fmt, args.rows, csv_path if fmt == "csv" else xlsx_path, csv_path) for fmt in formats]
    if not args.no_small:
        small_csv, _ = ensure_files(args.out, small_rows, args.seed, args.reuse, False)
        plan.append(("csv", small_rows, small_csv, small_csv))

    results: list[tuple[str, int, dict]] = []
    for fmt, size, path, reference in plan:
        runs = []
        for _ in range(args.repeat):
            out = args.out / f"{path.stem}-{fmt}.837p.x12"
            r = run_worker(path, reference, out, args.timeout)
            runs.append(r)
            done = (f"{r['seconds']:.2f}s wall (validate {r['validate_s']:.2f}s, 837P "
                    f"{r['convert_s']:.2f}s), {r['cpu']:.2f}s cpu, {r['peak_rss_mb']:.1f} MB, "
                    f"{r['claims']:,} claims -> {show(out)}"
                    if "error" not in r else f"ERROR {r['error']}")
            print(f"  {fmt:<4} {size:>9,} rows  {done}", flush=True)
            if "error" not in r:
                r["planted"] = sum(json.loads(
                    reference.with_suffix(".defects.json").read_text()).values())
                print(f"        findings by rule: "
                      f"{', '.join(f'{k} {v}' for k, v in r['rules'].items()) or 'none'}")
        results.append((fmt, size, best_of(runs)))

    print()
    print(machine())
    print(load_average())
    title = "invoice -> 837P: validate_invoice + canonical_to_837p, each in a fresh process"
    if args.repeat > 1:
        title += f", best of {args.repeat}"
    print_table(*table_rows(results), title=title)
    print("x slower = csv.reader rows/s over the same CSV (same process, best of 3) / pipeline "
          "rows/s; peak RSS includes interpreter and imports (base RSS = after imports); "
          "gc s = time in the cyclic garbage collector")
    for fmt, size, r in results:
        if "planted" in r:
            print(f"{fmt} {size:,} rows: {r['planted']:,} rows generated with a defect, "
                  f"{r['rejected']:,} rows rejected"
                  + ("" if r["planted"] == r["rejected"] else "  (differ: see findings by rule)"))
    main_csv = next((r for f, s, r in results if f == "csv" and s == args.rows), None)
    small = next((r for f, s, r in results if f == "csv" and s == small_rows), None)
    if main_csv is not None:
        print_targets(main_csv, small, args.rows, small_rows)

    if args.profile:
        print(f"\ncProfile of the CSV pipeline at {args.rows:,} rows (fresh process):",
              flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--profile-worker",
               str(csv_path), str(args.out / f"{csv_path.stem}-profile.837p.x12"),
               "--top", str(args.top)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        print(proc.stdout.rstrip())
        if proc.returncode:
            print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                  f"exit {proc.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
