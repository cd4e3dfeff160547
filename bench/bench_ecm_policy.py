"""Benchmark: the issue-14 ECM data paths at a plan's scale.

Steps, each in a fresh Python process (so its peak RSS is its own; inputs are generated
untimed first, into ``bench/out/``):

1. ``history``  -- a plan's claims extract of ``--history-lines`` lines (mappings/layouts/claims,
   ICD-10 diagnoses, ED visits, multi-day stays, office visits) over ``--members`` members,
   loaded with ``load_claims_extract`` (streamed, validated row by row, one transaction,
   replace-by-source) into a SQLite registry. Reference: ``csv.reader`` over the same file.
   Target: 5M lines < 120 s, bounded memory (peak RSS does not grow with the lines: compare
   with the ``--history-small`` run).
2. ``pof``      -- POF evidence for ``--members`` members (every one assigned HIGH_UTILIZER or
   SMI_SUD): ``gateway.ecm.pof.pof_evidence`` - the assignments in one query, the utilization
   lines in ONE streamed pass over the history (``Registry.utilization_lines``), then
   ``pof_shortfalls`` per member (what ``ecm-gateway report pof-evidence`` runs). Reference: the
   pass over the history alone. Target: 100k members < 30 s.
3. ``outreach`` -- the quarterly outreach report over ``--otf-rows`` OTF rows and a MIF of the
   members (``outreach_from_files``), and over ``--otf-small`` rows: flat memory means the two
   peak RSS values are about equal. Reference: ``csv.reader`` over the same OTF. Target: 1M
   rows < 30 s.

The fourth target (with the new rules the ECM rules add < 20% to validation time) is
``bench/bench_rules.py`` (its overhead ratio), run separately.

Usage::

    python bench/bench_ecm_policy.py                    # 5M lines / 100k members / 1M OTF rows
    python bench/bench_ecm_policy.py --quick            # 200k / 20k / 100k
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
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

CLAIMS_HEADER = ["Member CIN", "Claim ID", "Line Number", "Claim Type", "Service Date",
                 "Service End Date", "Procedure Code", "Modifiers", "Units",
                 "Place of Service", "Billing Provider NPI", "Rendering Provider NPI",
                 "Diagnosis Codes"]
NPIS = ["1234500001", "1234579195", "1234658387", "1999999992"]


def cin(n: int) -> str:
    return f"{90000000 + n:08d}{chr(65 + n % 26)}"


# -- inputs (untimed) ---------------------------------------------------------------------------
def make_claims(path: Path, lines: int, members: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    start = date(2025, 7, 1)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CLAIMS_HEADER)
        written, claim = 0, 0
        while written < lines:
            claim += 1
            member = cin(rnd.randrange(members))
            day = start + timedelta(days=rnd.randrange(365))
            kind = rnd.random()
            npi = NPIS[claim % len(NPIS)]
            if kind < 0.06:  # an inpatient stay of 1-4 days, one line a day
                dx = rnd.choice(["F209", "F1020", "I509", "J441"])
                for n in range(rnd.randrange(1, 5)):
                    writer.writerow([member, f"C{claim}", n + 1, "I",
                                     (day + timedelta(days=n)).isoformat(), "", "99222", "",
                                     "1", "21", npi, "", dx])
                    written += 1
            elif kind < 0.16:  # an ED visit
                writer.writerow([member, f"C{claim}", 1, "P", day.isoformat(), "", "99284", "",
                                 "1", "23", npi, "", rnd.choice(["F200", "R079", "F1010"])])
                written += 1
            else:  # an office visit with two lines
                for n in range(2):
                    writer.writerow([member, f"C{claim}", n + 1, "P", day.isoformat(), "",
                                     "99213" if n == 0 else "G9008", "U1" if n else "", "1",
                                     "11", npi, "", "Z5900;E119"])
                    written += 1


def make_mif(path: Path, members: int) -> None:
    header = (ROOT / "fixtures" / "mif" / "mif-clean.csv").open().readline().strip().split(",")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for n in range(members):
            row = dict.fromkeys(header, "")
            row.update({"Member CIN": cin(n), "Member Last Name": "Member",
                        "Member First Name": "Bench", "Member Date of Birth": "1970-01-01",
                        "Member POF": "HIGH_UTILIZER" if n % 2 else "SMI_SUD",
                        "ECM Authorization Date": "2026-06-01",
                        "ECM Benefit Start Date": "2026-06-01",
                        "ECM Provider Name": "Harbor", "ECM Provider NPI": "1234500001",
                        "ECM Provider TIN": "941200000", "MIF Reporting Period": "2026-06"})
            writer.writerow(row)


def make_otf(path: Path, rows: int, members: int, seed: int = 11) -> None:
    header = (ROOT / "fixtures" / "otf" / "otf-clean.csv").open().readline().strip().split(",")
    rnd = random.Random(seed)
    methods = ["IN_PERSON", "TELEPHONE", "TEXT", "EMAIL", "MAIL", "STREET"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for n in range(rows):
            day = date(2026, 7, 1) + timedelta(days=rnd.randrange(92))
            writer.writerow(["VHP01", "Valley", "Harbor", "1234500001", "941200000", "A B",
                             cin(rnd.randrange(members)), "FQHC", day.isoformat(),
                             methods[n % 6], "Y" if n % 3 == 0 else "N", str(15 + n % 60)])


# -- steps (each in its own process) -------------------------------------------------------------
def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_csv(path: Path) -> float:
    began = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as handle:
        for _ in csv.reader(handle):
            pass
    return time.perf_counter() - began


def step_history(args) -> dict:
    from gateway.registry.claims import load_claims_extract
    from gateway.registry.store import Registry

    db = OUT / f"registry-{args['name']}.sqlite"
    db.unlink(missing_ok=True)
    registry = Registry(f"sqlite:///{db}")
    reference = reference_csv(Path(args["claims"]))
    began, cpu = time.perf_counter(), time.process_time()
    outcome = load_claims_extract(registry, Path(args["claims"]), "plan:bench:claims:x.csv")
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert outcome.errors == 0 and outcome.loaded == outcome.rows, outcome
    return {"seconds": took, "cpu": cpu, "reference": reference, "rows": outcome.loaded,
            "peak_mb": peak_mb()}


def step_pof(args) -> dict:
    from gateway.ecm.codesets import load_codesets
    from gateway.ecm.pof import pof_evidence
    from gateway.registry.store import Registry
    from gateway.tabular import read_table

    registry = Registry(f"sqlite:///{OUT / ('registry-' + args['name'] + '.sqlite')}")
    rows = [row for _, row in read_table(Path(args["mif"]), "mif").rows]
    registry.load_members(rows, source="plan:bench:mif:2026-06")
    codes = load_codesets()
    index = (codes.event_by_place, codes.event_by_code)
    events = (frozenset(codes.event_by_place), frozenset(codes.event_by_code))
    # reference: the one pass over the history alone (what the evaluation reads)
    t = time.perf_counter()
    lines = sum(len(found) for _, found in registry.utilization_lines(events))
    reference = time.perf_counter() - t
    began, cpu = time.perf_counter(), time.process_time()
    members = gaps = 0
    for _, found in pof_evidence(registry, codes.utilization, None, index):
        members += 1
        gaps += len(found)
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"seconds": took, "cpu": cpu, "reference": reference, "rows": len(rows),
            "members_lacking": members, "gaps": gaps, "event_lines": lines,
            "peak_mb": peak_mb()}


def step_outreach(args) -> dict:
    from gateway.ecm.outreach import Quarter, outreach_from_files

    reference = reference_csv(Path(args["otf"]))
    began, cpu = time.perf_counter(), time.process_time()
    rows, files = outreach_from_files([args["otf"]], [args["mif"]], "bench", [Quarter(2026, 3)])
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert rows is not None, [f.findings[:3] for f in files]
    targeted = next(r[5] for r in rows if r[2] == "targeted_members")
    return {"seconds": took, "cpu": cpu, "reference": reference, "rows": args["otf_rows"],
            "targeted": targeted, "peak_mb": peak_mb()}


STEPS = {"history": step_history, "pof": step_pof, "outreach": step_outreach}


def run_step(step: str, **args) -> dict:
    done = subprocess.run([sys.executable, __file__, "--step", step, "--args", json.dumps(args)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history-lines", type=int, default=5_000_000)
    parser.add_argument("--history-small", type=int, default=500_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--otf-rows", type=int, default=1_000_000)
    parser.add_argument("--otf-small", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep generated inputs")
    parser.add_argument("--step")
    parser.add_argument("--args")
    opts = parser.parse_args()
    if opts.step:
        print(json.dumps(STEPS[opts.step](json.loads(opts.args))))
        return
    if opts.quick:
        opts.history_lines, opts.history_small = 200_000, 50_000
        opts.members, opts.otf_rows, opts.otf_small = 20_000, 100_000, 20_000
    started_load = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, make, size in (("claims", make_claims, opts.history_lines),
                            ("claims-small", make_claims, opts.history_small),
                            ("otf", make_otf, opts.otf_rows),
                            ("otf-small", make_otf, opts.otf_small)):
        path = OUT / f"{key}-{size}-{opts.members}.csv"
        if not (opts.reuse and path.is_file()):
            if key.startswith("claims"):
                make(path, size, opts.members)
            else:
                make(path, size, opts.members)
        files[key] = path
    mif = OUT / f"mif-{opts.members}.csv"
    if not (opts.reuse and mif.is_file()):
        make_mif(mif, opts.members)
    results = [
        ("history load", opts.history_lines, 120,
         run_step("history", claims=str(files["claims"]), name="big")),
        ("history load (small)", opts.history_small, None,
         run_step("history", claims=str(files["claims-small"]), name="small")),
        ("POF evidence", opts.members, 30,
         run_step("pof", mif=str(mif), name="big")),
        ("outreach report", opts.otf_rows, 30,
         run_step("outreach", otf=str(files["otf"]), mif=str(mif), otf_rows=opts.otf_rows)),
        ("outreach report (small)", opts.otf_small, None,
         run_step("outreach", otf=str(files["otf-small"]), mif=str(mif),
                  otf_rows=opts.otf_small)),
    ]
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(at the start: {' '.join(f'{x:.2f}' for x in started_load)}; other work on the "
          "machine inflates wall times - compare cpu s)")
    print(f"{'step':<26}{'size':>11}{'wall s':>9}{'cpu s':>8}{'ref s':>8}{'ratio':>8}"
          f"{'peak MB':>9}{'target':>9}{'ok':>5}")
    for label, size, target, r in results:
        ratio = r["seconds"] / r["reference"] if r["reference"] else float("nan")
        ok = "" if target is None else ("yes" if r["seconds"] < target else "NO")
        print(f"{label:<26}{size:>11,}{r['seconds']:>9.1f}{r['cpu']:>8.1f}"
              f"{r['reference']:>8.2f}{ratio:>8.1f}{r['peak_mb']:>9.0f}"
              f"{'' if target is None else f'< {target}s':>9}{ok:>5}")
    print("ref: csv.reader over the same file (history, outreach); the history pass alone (POF). "
          "Bounded / flat memory: compare the peak MB of a step with its (small) run.")


if __name__ == "__main__":
    main()
