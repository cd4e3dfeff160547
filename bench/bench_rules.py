"""Benchmark: the ECM business-rule layer (registries + ``EncounterRules``) on a synthetic 837P.

What is measured, each step in a *fresh* Python process (so the peak RSS is that step's own;
it includes the interpreter, the imports and the step's input, which is built untimed):

1. ``members``  -- MIF load for ``--members`` assigned members. When ``gateway.tabular``
   exports ``read_table`` and ``mappings/layouts/mif/default.yaml`` exists, a MIF CSV in that
   layout (its headers and date format) is written first (untimed) and the timed parts are
   ``read_table(path, "mif")`` and ``Registry.load_members`` on its typed rows. Otherwise
   ``Registry.load_members`` is timed on dict rows built in memory, and the table says so.
   The members include every CIN of the claim file, with an ECM benefit period covering the
   service dates (September 2026) and the claim's billing NPI as assigned provider, so the
   rules run their full path; the rest is padding. About 5% have another program (mostly
   "wrap" programs), POF codes include the utilization ones (so the POF evidence check runs).
2. ``history``  -- a roster with every billing NPI flagged ``ecm=True`` (plus padding), then
   ``--history`` encounter-history lines over the 12 months before the claims (ECM lines,
   office visits, ED visits with place of service 23, inpatient/SNF stays; 60% on the
   members of the claim file; ~0.2% of the claim lines are already in the history, so
   ECM-DUP-002 fires now and then). Rows are pre-built as tuples; the timed part is
   ``Registry.load_history`` (dicts made on the fly).
   Both go into one SQLite file under ``bench/out/`` that the later workers open with
   ``Registry("sqlite:///...")``.
3. ``rules``    -- ``EncounterRules(registry).check(batch)`` over all claims in batches of
   ``gateway.ecm.rules.BATCH`` (300), encounters from ``bench/synth837.encounters`` with
   ClaimPlaces shaped like ``validate.claim_place``; the time spent in
   ``Registry.snapshot`` is reported too.
4. ``validate`` / ``validate+rules`` -- ``gateway.reports.validate_file(path)`` (what
   ``ecm-gateway validate`` calls) without and with ``rules=EncounterRules(registry)``, the
   registry held in memory as the command line holds it (copied from the SQLite file,
   untimed). With rules the file is as the command line checks it: the rules run in a worker
   process alongside the validation where the input is large enough (gateway/ecm/pipelined.py;
   the registry goes to it as an image). ``validate+rules-in-process`` is the same call with
   the rules in this process (``rules_pipeline_bytes`` 0): the A/B in the same run. Overhead
   ratio = with / without - 1, on wall time (the target) and on CPU time (this process + its
   children: the worker's CPU counts; pipelining saves wall time, not CPU). In between,
   ``validate+encounters`` (``validate_x12`` with ``keep_encounters=True``, no rules) is the
   cost of building the canonical encounters, which the rules do not need.

The rules and validate workers first run the same call untimed on a 10-claim file (pyx12 maps,
code sets, rule catalogue and compiled SQL loaded, as in a long-lived server; ``--cold`` turns
that off). With ``--repeat N`` the steps run interleaved N times and the fastest run of each is
reported (this machine's load varies; compare the cpu s column too). The ``rules`` worker holds
all encounters in memory (built untimed), so its peak RSS is not the rules' own.

Target: the rules add < 20% to the validation time. When that is missed (or with
``--profile``) ``EncounterRules.check`` is run once more under cProfile and the top functions
are printed.

Usage::

    python bench/bench_rules.py                                      # 50k / 100k / 1M
    python bench/bench_rules.py --claims 2000 --members 5000 --history 20000   # quick run
    python bench/bench_rules.py --reuse --repeat 3      # reuse file + registry, best of 3

Files are written to ``bench/out/`` (git-ignored). The full run takes several minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_validate import (  # noqa: E402
    best_of, children_cpu, cpu_seconds, load_average, machine, peak_rss_mb, run_json, show,
)
from bench_validate import print_table as show_table  # noqa: E402

RESULT_MARK = "BENCH-RESULT "
OVERHEAD_TARGET = 0.20
SERVICE_MONTH = date(2026, 9, 1)  # synth837.encounters() default start
HISTORY_FROM = date(2025, 9, 1)  # 12 months before the claims
HISTORY_DAYS = (SERVICE_MONTH - HISTORY_FROM).days
DUP_RATE = 0.002  # share of claim lines already in the history
PROGRAM_RATE = 0.05
CLAIM_MEMBER_HISTORY_SHARE = 0.6
STEPS = ("members", "history", "rules", "validate", "validate+encounters", "validate+rules",
         "validate+rules-in-process", "profile")

POF = [("HOMELESS", 35), ("HIGH_UTILIZER", 25), ("SMI_SUD", 20), ("LTC_RISK", 8),
       ("INCARCERATION", 5), ("NF_TRANSITION", 4), ("BIRTH_EQUITY", 3)]
# other programs: mostly wrap (info finding), a few either/or and excluded periods that mostly
# ended before the service month
PROGRAMS = [("CBAS", 30), ("COUNTY_TCM", 20), ("DMC_ODS", 15), ("SMHS_TCM", 10), ("BCM", 10),
            ("MSSP", 8), ("HOSPICE", 7)]
LAST = ["GARCIA", "NGUYEN", "SMITH", "LOPEZ", "KIM", "JOHNSON", "MARTINEZ", "TRAN"]
FIRST = ["ALEX", "MARIA", "JORDAN", "LINH", "SAM", "ROSA", "DEVON", "ANA"]
ED_CODES = ["99281", "99282", "99283", "99284", "99285"]
ECM_HISTORY = [("G9008", "U1"), ("G9012", "U1"), ("G9008", "U2"), ("G9012", "U8"),
               ("G9012", "GQ:U8"), ("G9008", "GQ:U1")]
HISTORY_KEYS = ("cin", "billing_npi", "rendering_npi", "service_date", "procedure_code",
                "modifiers", "units", "place_of_service", "claim_id", "line_number")


def weighted(rng: random.Random, table: list[tuple[str, int]]) -> str:
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]


# --------------------------------------------------------------------------- synthetic data

def claim_members(claims: int, seed: int) -> tuple[dict[str, str], list[str]]:
    """CIN -> billing NPI of the member's first claim, and all billing NPIs, of the claim file."""
    from synth837 import encounters

    members: dict[str, str] = {}
    npis: dict[str, None] = {}
    for e in encounters(claims, seed):
        members.setdefault(e.member.cin, e.billing_provider.npi)
        npis.setdefault(e.billing_provider.npi, None)
    return members, list(npis)


def pad_cins(existing: dict[str, str], total: int) -> list[str]:
    from synth837 import cin

    found, n = [], 1
    while len(existing) + len(found) < total:
        c = cin(10_000_000 - n)  # far from the claim file's member numbers
        if c not in existing:
            found.append(c)
        n += 1
    return found


def member_rows(claims: int, members: int, seed: int) -> tuple[list[dict], dict]:
    """Typed MIF rows (canonical fields of the MIF layout) and a summary."""
    from synth837 import luhn_npi

    in_file, npis = claim_members(claims, seed)
    padding = pad_cins(in_file, members)
    extra_npis = [luhn_npi(300000000 + i * 104729) for i in range(max(5, len(npis) // 4))]
    rng = random.Random(seed * 1000 + 1)
    rows = []
    everyone = [(c, npi) for c, npi in in_file.items()] + \
        [(c, rng.choice(npis + extra_npis)) for c in padding]
    for cin, npi in everyone:
        authorized = HISTORY_FROM + timedelta(days=rng.randrange(0, HISTORY_DAYS - 10))
        assigned = authorized + timedelta(days=rng.randrange(0, 6))
        start = assigned.replace(day=1) + timedelta(days=32)
        start = start.replace(day=1)  # first of the next month, before September 2026
        end = None if rng.random() < 0.6 else date(2026 + rng.randrange(1, 3), 12, 31)
        pof = [weighted(rng, POF)]
        if rng.random() < 0.15:
            second = weighted(rng, POF)
            if second not in pof:
                pof.append(second)
        row = {
            "member_cin": cin, "member_last_name": rng.choice(LAST),
            "member_first_name": rng.choice(FIRST),
            "member_birth_date": date(1945, 1, 1) + timedelta(days=rng.randrange(0, 25000)),
            "pof_codes": pof, "authorization_date": authorized, "assignment_date": assigned,
            "ecm_benefit_start": start, "ecm_benefit_end": end,
            "ecm_provider_npi": npi, "ecm_provider_tin": tin_of(npi),
            "ecm_provider_name": f"CARE ORG {npi[-4:]}",
            "lead_care_manager_name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "other_program": None, "other_program_start": None, "other_program_end": None,
        }
        if rng.random() < PROGRAM_RATE:
            program = weighted(rng, PROGRAMS)
            p_start = HISTORY_FROM + timedelta(days=rng.randrange(0, 300))
            ongoing = program in ("CBAS", "COUNTY_TCM", "DMC_ODS", "SMHS_TCM")
            row.update(other_program=program, other_program_start=p_start,
                       other_program_end=None if ongoing and rng.random() < 0.7
                       else min(p_start + timedelta(days=rng.randrange(30, 180)),
                                SERVICE_MONTH - timedelta(days=1)))
        rows.append(row)
    summary = {"rows": len(rows), "claim_members": len(in_file), "padding": len(padding),
               "billing_npis": len(npis)}
    return rows, summary


def tin_of(npi: str) -> str:
    return f"{94 * 10_000_000 + int(npi[:7]) % 10_000_000:09d}"


def roster_rows(claims: int, seed: int) -> list[dict]:
    from synth837 import luhn_npi

    _, npis = claim_members(claims, seed)
    rows = [{"provider_npi": npi, "provider_tin": tin_of(npi), "provider_name": f"ORG {npi}",
             "ecm": True, "cs": False, "active_from": date(2024, 1, 1), "active_to": None}
            for npi in npis]
    rng = random.Random(seed * 1000 + 2)
    for i in range(max(20, len(npis) * 4)):  # other ECM / CS providers of the plan
        npi = luhn_npi(400000000 + i * 7907)
        cs = rng.random() < 0.5
        rows.append({"provider_npi": npi, "provider_tin": tin_of(npi),
                     "provider_name": f"ORG {npi}", "ecm": not cs or rng.random() < 0.3,
                     "cs": cs, "cs_services": ["MEALS", "HOUSING_NAVIGATION"] if cs else [],
                     "active_from": date(2023, 7, 1), "active_to": None})
    return rows


def history_tuples(claims: int, members: int, history: int, seed: int) -> list[tuple]:
    """History lines as tuples in HISTORY_KEYS order."""
    from synth837 import encounters, luhn_npi

    from gateway.registry.store import modifier_key

    in_file, npis = claim_members(claims, seed)
    padding = pad_cins(in_file, members)
    claim_cins = list(in_file)
    rng = random.Random(seed * 1000 + 3)
    assigned = dict(in_file)
    everyone = npis + [luhn_npi(300000000 + i * 104729) for i in range(max(5, len(npis) // 4))]
    other_npis = [luhn_npi(500000000 + i * 3571) for i in range(200)]
    rows: list[tuple] = []
    # claim lines already accepted (resubmissions): exact copies
    for e in encounters(claims, seed):
        for line in e.claim.lines:
            if rng.random() < DUP_RATE and len(rows) < history:
                rows.append((e.member.cin, e.billing_provider.npi, None, line.service_date,
                             line.procedure_code, modifier_key(line.modifiers), line.units,
                             e.claim.place_of_service, f"PRIOR{e.claim.id}",
                             line.line_number))
    days = [HISTORY_FROM + timedelta(days=d) for d in range(HISTORY_DAYS)]
    units = [Decimal(1), Decimal(2), Decimal(4)]
    n = len(rows)
    while len(rows) < history:
        n += 1
        if rng.random() < CLAIM_MEMBER_HISTORY_SHARE or not padding:
            cin = claim_cins[rng.randrange(len(claim_cins))]
            npi = assigned[cin]
        else:
            cin = padding[rng.randrange(len(padding))]
            npi = everyone[int(cin[:8]) % len(everyone)]
        day = days[rng.randrange(HISTORY_DAYS)]
        r = rng.random()
        if r < 0.78:  # ECM services by the assigned provider
            code, mods = ECM_HISTORY[rng.randrange(len(ECM_HISTORY))]
            pos, billing, unit = ("11", "12")[rng.randrange(2)], npi, units[rng.randrange(3)]
        elif r < 0.88:  # office visits
            code, mods, pos = "99213", "", "11"
            billing, unit = other_npis[rng.randrange(200)], units[0]
        elif r < 0.95:  # ED visits
            code, mods, pos = ED_CODES[rng.randrange(5)], "", "23"
            billing, unit = other_npis[rng.randrange(200)], units[0]
        elif r < 0.98:  # inpatient stays
            code, mods, pos = "99222", "", "21"
            billing, unit = other_npis[rng.randrange(200)], units[0]
        else:  # short-term SNF
            code, mods, pos = "99305", "", "31"
            billing, unit = other_npis[rng.randrange(200)], units[0]
        rows.append((cin, billing, None, day, code, mods, unit, pos, f"H{seed:02d}{n:09d}",
                     1 + rng.randrange(3)))
    return rows


# --------------------------------------------------------------------------- MIF as CSV

def tabular_available() -> tuple[bool, str]:
    try:
        from gateway.tabular import read_table  # noqa: F401
    except ImportError as exc:
        return False, f"gateway.tabular.read_table not importable ({exc})"
    from gateway.tabular.layouts import layouts_dir

    layout = layouts_dir() / "mif" / "default.yaml"
    if not layout.is_file():
        return False, f"{show(layout)} missing"
    return True, "read_table + default MIF layout"


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def mif_cell(column, value, layout) -> str:
    """A canonical value written the way the layout column reads it."""
    if value is None or value == []:
        return ""
    kind = column.type
    opts = column.options
    if kind == "date":
        return value.strftime(_first(opts.get("format") or layout.date_formats))
    if kind == "month":
        return f"{value.year:04d}-{value.month:02d}"
    if kind == "list":
        sep = _first(opts.get("separator") or ";")
        return sep.join(str(v) for v in value)
    if kind == "bool":
        return str(_first(opts.get("true") or "Y") if value else _first(opts.get("false") or "N"))
    return str(value)


def filler(column, row: dict) -> object:
    """A plausible value for a required column the generator does not know."""
    from gateway.tabular.layouts import load_codeset

    kind, opts = column.type, column.options
    if kind in ("code", "list"):
        if opts.get("codeset"):
            code = next(iter(load_codeset(opts["codeset"]).codes))
        elif opts.get("values"):
            code = str(opts["values"][0])
        else:
            code = "X"
        return [code] if kind == "list" else code
    if kind == "month":  # e.g. the MIF reporting period: the month before the claims
        return SERVICE_MONTH - timedelta(days=1)
    if kind == "date":
        return row.get("assignment_date") or SERVICE_MONTH
    return {"int": 1, "minutes": 30, "bool": True, "cin": row["member_cin"],
            "npi": row["ecm_provider_npi"], "tin": row["ecm_provider_tin"],
            "phone": "9165550100", "email": "care@example.org", "zip": "95814"}.get(kind, "X")


def write_mif_csv(path: Path, rows: list[dict]) -> list[str]:
    """Write the rows as a MIF CSV in the default layout; returns the fields left empty."""
    from gateway.tabular.layouts import load_layout

    layout = load_layout("mif", "default")
    header: list[str] = []
    for col in layout.columns:
        if col.type == "flags":
            header += [f.headers[0] for f in col.flags]
        else:
            header.append(col.headers[0])
    unknown = sorted(c.field for c in layout.columns
                     if c.field not in rows[0] and not c.required)
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            cells = []
            for col in layout.columns:
                value = row.get(col.field)
                if value is None and col.field not in row and col.required:
                    value = filler(col, row)
                if col.type == "flags":
                    codes = value or []
                    yes, no = _first(col.options.get("true") or "Y"), \
                        _first(col.options.get("false") or "N")
                    cells += [yes if f.code in codes else no for f in col.flags]
                else:
                    cells.append(mif_cell(col, value, layout))
            writer.writerow(cells)
    return unknown


def mif_csv_path(out: Path, args) -> Path:
    return out / f"mif-c{args['claims']}-m{args['members']}-s{args['seed']}.csv"


# --------------------------------------------------------------------------- workers

def registry_at(db: str):
    from gateway.registry.store import Registry

    return Registry(f"sqlite:///{db}")


def timed(fn, *a, **kw):
    c0, t0 = cpu_seconds(), time.perf_counter()
    value = fn(*a, **kw)
    return value, time.perf_counter() - t0, cpu_seconds() - c0


def work_members(args: dict) -> dict:
    db = Path(args["db"])
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    registry = registry_at(str(db))
    result: dict = {"parts": []}
    if args.get("csv"):
        from gateway.tabular import read_table

        def read():
            table = read_table(Path(args["csv"]), "mif")
            return table, [row for _, row in table.rows]

        (table, rows), seconds, cpu = timed(read)
        rejected = getattr(table, "rows_rejected", 0)
        errors = [f.message for f in getattr(table, "findings", [])
                  if getattr(f, "is_error", False)][:3]
        result["parts"].append({"step": "MIF read_table (CSV)", "rows": len(rows),
                                "seconds": seconds, "cpu": cpu,
                                "note": f"{rejected} rows rejected" + (
                                    f": {'; '.join(errors)}" if errors else "")})
        result["read_rss_mb"] = peak_rss_mb()
        note = "typed rows from read_table"
    else:
        rows, _ = member_rows(args["claims"], args["members"], args["seed"])
        note = "dict rows built in memory (read_table not available)"
    loaded, seconds, cpu = timed(registry.load_members, rows, source="bench-mif")
    result["parts"].append({"step": "Registry.load_members", "rows": len(rows),
                            "seconds": seconds, "cpu": cpu,
                            "note": f"{note}; {loaded:,} assignments"})
    return result


def work_history(args: dict) -> dict:
    registry = registry_at(args["db"])
    roster = roster_rows(args["claims"], args["seed"])
    loaded, r_seconds, r_cpu = timed(registry.load_providers, roster, source="bench-roster")
    tuples = history_tuples(args["claims"], args["members"], args["history"], args["seed"])
    ed = sum(1 for t in tuples if t[7] == "23")
    dup = sum(1 for t in tuples if t[8].startswith("PRIOR"))
    rows = (dict(zip(HISTORY_KEYS, t)) for t in tuples)
    count, seconds, cpu = timed(registry.load_history, rows, source="bench-history")
    return {"parts": [
        {"step": "Registry.load_providers", "rows": loaded, "seconds": r_seconds, "cpu": r_cpu,
         "note": "roster: every billing NPI ecm=True, plus padding"},
        {"step": "Registry.load_history", "rows": count, "seconds": seconds, "cpu": cpu,
         "note": f"12 months, {ed:,} ED visits (POS 23), {dup:,} copies of claim lines"},
    ], "db_mb": Path(args["db"]).stat().st_size / 1e6}


def rule_batches(claims: int, seed: int) -> list[list]:
    """(Encounter, ClaimPlace) batches shaped like validate_x12's."""
    from synth837 import encounters

    from gateway.ecm.rules import BATCH, ClaimPlace

    batches, batch = [], []
    ordinal = 9
    subscriber = 0
    last_cin = None
    for index, e in enumerate(encounters(claims, seed), 1):
        if e.member.cin != last_cin:
            subscriber += 1
            ordinal += 6  # HL, SBR, NM1, N3, N4, DMG
            last_cin = e.member.cin
        ts = "ISA#1/GS#1/ST#1"
        start = ordinal
        ordinal += 4  # CLM, REF, HI, NM1 (rendering)
        refs = []
        for line in e.claim.lines:
            refs.append((ordinal + 1, line.line_number))
            ordinal += 3  # LX, SV1, DTP
        batch.append((e, ClaimPlace(
            claim=f"{ts}/2300[{index}]", member=f"{ts}/2010BA[{subscriber}]/NM109",
            lines=[f"{ts}/2400[{n}]/SV101-2" for _, n in refs], ordinal=start,
            line_ordinals=[o for o, _ in refs], label=f"claim {e.claim.id}")))
        if len(batch) >= BATCH:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def work_rules(args: dict, profile: bool = False) -> dict:
    from gateway.ecm.rules import EncounterRules

    registry = registry_at(args["db"])
    batches = rule_batches(args["claims"], args["seed"])
    claims = sum(len(b) for b in batches)
    if args.get("warm"):  # a long-lived process: code sets, catalogue, SQL compiled
        EncounterRules(registry).check(rule_batches(10, args["seed"] + 1)[0])
    rules, setup, _ = timed(EncounterRules, registry)
    snapshot_seconds = [0.0]
    real_snapshot = registry.snapshot

    def snapshot(cins, npis, **narrowing):
        t0 = time.perf_counter()
        try:
            return real_snapshot(cins, npis, **narrowing)
        finally:
            snapshot_seconds[0] += time.perf_counter() - t0

    registry.snapshot = snapshot  # instance attribute: times the registry reads
    findings: Counter = Counter()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    c0, t0 = cpu_seconds(), time.perf_counter()
    for batch in batches:
        for found in rules.check(batch):
            for f in found:
                findings[f.rule] += 1
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    result = {"seconds": seconds, "cpu": cpu, "claims": claims, "setup": setup,
              "snapshot_seconds": snapshot_seconds[0], "findings": dict(findings),
              "lines": sum(len(e.claim.lines) for b in batches for e, _ in b)}
    if profiler is not None:
        profiler.disable()
        result["profile"] = profile_table(profiler)
    return result


def profile_table(profiler, top: int = 18) -> dict:
    import pstats

    stats = pstats.Stats(profiler)
    entries = []
    for (filename, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
        path = Path(filename)
        try:
            where = str(path.relative_to(ROOT))
        except ValueError:
            where = path.name if filename.startswith("/") else filename
        if ".venv" in filename:
            parts = path.parts
            where = "/".join(parts[parts.index("site-packages") + 1:]) \
                if "site-packages" in parts else path.name
        entries.append({"function": f"{where}:{line}({name})", "ncalls": nc, "tottime": tt,
                        "cumtime": ct})
    total = sum(e["tottime"] for e in entries)
    by_tot = sorted(entries, key=lambda e: -e["tottime"])[:top]
    ours = sorted((e for e in entries if e["function"].startswith("gateway/")),
                  key=lambda e: -e["cumtime"])[:top]
    return {"total": total, "tottime": by_tot, "cumtime": ours}


def memory_registry(db: str, plain: bool = False):
    """The registry as the command line holds it: in memory (``Registry.in_memory_file()``;
    ``plain``: ``Registry()``), here copied from the SQLite file the load steps wrote
    (untimed)."""
    import sqlite3

    from gateway.registry.store import Registry

    from gateway.registry.store import upgrade_indexes

    registry = Registry() if plain else Registry.in_memory_file()
    raw = registry.engine.raw_connection()
    try:
        source = sqlite3.connect(db)
        source.backup(raw.driver_connection)
        source.close()
    finally:
        raw.close()
    upgrade_indexes(registry.engine)  # (a copy of a file written by an older schema)
    return registry


def work_validate(args: dict, with_rules: bool, keep_encounters: bool = False,
                  in_process: bool = False) -> dict:
    """``validate_file`` (what ``ecm-gateway validate`` calls) with the command line's registry
    (in memory) - or ``validate_x12`` with ``keep_encounters`` (no rules). ``in_process``: the
    rules in this process (``rules_pipeline_bytes`` 0), else as the command line runs them
    (in a worker process, gateway/ecm/pipelined.py, where the input is large enough). CPU is this
    process's plus its children's (the worker, reaped before it is read)."""
    import os

    from gateway.findings import Severity
    from gateway.x12.validate import validate_x12

    if in_process:
        os.environ["ECM_GATEWAY_RULES_PIPELINE_BYTES"] = "0"
    from gateway.reports import validate_file

    rules, setup = None, 0.0
    if with_rules:
        from gateway.ecm.rules import EncounterRules

        registry = memory_registry(args["db"])
        if args.get("warm"):
            validate_file(Path(args["warm"]), rules=EncounterRules(registry))
        rules, setup, _ = timed(EncounterRules, registry)
    elif args.get("warm"):  # pyx12 maps and profiles loaded, as in a long-lived server
        if keep_encounters:
            validate_x12(args["warm"], on_claim=lambda c: None, keep_encounters=True)
        else:
            validate_file(Path(args["warm"]))
    seen = [0]

    def on_claim(_claim) -> None:
        seen[0] += 1

    start_rss = peak_rss_mb()
    c0, k0, t0 = cpu_seconds(), children_cpu(), time.perf_counter()
    if keep_encounters:
        result = validate_x12(args["x12"], on_claim=on_claim, keep_encounters=True)
        findings, claims = result.findings, seen[0]
    else:
        report = validate_file(Path(args["x12"]), rules=rules)
        findings, claims = report.findings, report.stats.get("claims", 0)
    seconds = time.perf_counter() - t0
    pipelined = rules is not None and rules._worker is not None
    if rules is not None:
        rules.close()  # (an idle worker holding the engine's state: reaped, its CPU counted)
    parent, children = cpu_seconds() - c0, children_cpu() - k0
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    ecm = Counter(f.rule for f in findings if f.rule.startswith("ECM-"))
    return {"seconds": seconds, "cpu": parent + children, "parent_cpu": parent,
            "worker_cpu": children, "pipelined": pipelined, "claims": claims, "setup": setup,
            "verdict": "valid" if not errors else f"INVALID ({errors} errors)",
            "findings": len(findings), "ecm_findings": dict(ecm), "start_rss_mb": start_rss}


def worker(step: str, args: dict) -> None:
    if step == "members":
        result = work_members(args)
    elif step == "history":
        result = work_history(args)
    elif step == "rules":
        result = work_rules(args)
    elif step == "profile":
        result = work_rules(args, profile=True)
    else:
        result = work_validate(args, with_rules=step.startswith("validate+rules"),
                               keep_encounters=step == "validate+encounters",
                               in_process=step == "validate+rules-in-process")
    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def run_worker(step: str, args: dict, timeout: float | None) -> dict:
    return run_json([sys.executable, str(Path(__file__).resolve()), "--worker", step,
                     json.dumps(args)], timeout)


def print_table(header: list[str], rows: list[list[str]], title: str, right: set[int]) -> None:
    show_table(header, rows, title, right=right, width=200)



def findings_text(found: dict) -> str:
    total = sum(found.values())
    top = ", ".join(f"{k} {v:,}" for k, v in sorted(found.items(), key=lambda kv: -kv[1])[:4])
    return f"{total:,} ECM findings" + (f" ({top})" if top else "")


def load_table(loads: list[tuple[dict, float]]) -> tuple[list[str], list[list[str]]]:
    header = ["step", "rows", "seconds", "cpu s", "rows/s", "peak RSS MB", "note"]
    rows = []
    for part, rss in loads:
        if "error" in part:
            rows.append([part["step"], "-", "-", "-", "-", "-", f"ERROR: {part['error']}"])
            continue
        if part.get("reused"):
            rows.append([part["step"], "-", "-", "-", "-", "-", "reused existing registry"])
            continue
        rate = part["rows"] / part["seconds"] if part["seconds"] else 0
        rows.append([part["step"], f"{part['rows']:,}", f"{part['seconds']:.2f}",
                     f"{part['cpu']:.2f}", f"{rate:,.0f}", f"{rss:.1f}", part.get("note", "")])
    return header, rows


def rules_table(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["step", "claims", "seconds", "cpu s", "claims/s", "peak RSS MB", "overhead",
              "cpu overhead", "note"]
    base = results.get("validate", {})
    rows = []
    for step, label in (("rules", "EncounterRules.check alone"),
                        ("validate", "validate_file without rules"),
                        ("validate+encounters", "validate_x12 keep_encounters, no rules"),
                        ("validate+rules", "validate_file with rules (as the CLI)"),
                        ("validate+rules-in-process", "validate_file with rules in-process")):
        r = results.get(step)
        if r is None:
            continue
        if "error" in r:
            rows.append([label, "-", "-", "-", "-", "-", "-", "-", f"ERROR: {r['error']}"])
            continue
        overhead = cpu_overhead = "-"
        if step.startswith("validate+") and "seconds" in base:
            overhead = f"{r['seconds'] / base['seconds'] - 1:+.1%}"
            cpu_overhead = f"{r['cpu'] / base['cpu'] - 1:+.1%}"
        elif step == "rules" and "seconds" in base:
            overhead = f"{r['seconds'] / base['seconds']:+.1%} *"
            cpu_overhead = f"{r['cpu'] / base['cpu']:+.1%} *"
        if step == "rules":
            note = (f"{r['snapshot_seconds']:.2f}s in Registry.snapshot, "
                    f"{r['lines']:,} lines; {findings_text(r['findings'])}")
        else:
            note = r["verdict"]
            if step.startswith("validate+rules"):
                note += f"; {findings_text(r['ecm_findings'])}"
                if r.get("pipelined"):
                    note += (f"; worker process: cpu {r['parent_cpu']:.2f}s here + "
                             f"{r['worker_cpu']:.2f}s in the worker")
                else:
                    note += "; rules in this process"
        if r.get("runs", 1) > 1:
            note += f"; best of {r['runs']}"
        rows.append([label, f"{r['claims']:,}", f"{r['seconds']:.2f}", f"{r['cpu']:.2f}",
                     f"{r['claims'] / r['seconds']:,.0f}", f"{r['peak_rss_mb']:.1f}",
                     overhead, cpu_overhead, note])
    return header, rows


def print_profile(profile: dict) -> None:
    print()
    print(f"cProfile of EncounterRules.check (profiled total {profile['total']:.2f}s; "
          "tottime = own time)")
    header = ["function", "ncalls", "tottime", "cumtime"]
    print_table(header, [[e["function"], f"{e['ncalls']:,}", f"{e['tottime']:.3f}",
                          f"{e['cumtime']:.3f}"] for e in profile["tottime"]],
                "top functions by own time", {1, 2, 3})
    print_table(header, [[e["function"], f"{e['ncalls']:,}", f"{e['tottime']:.3f}",
                          f"{e['cumtime']:.3f}"] for e in profile["cumtime"]],
                "gateway functions by cumulative time", {1, 2, 3})


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=50000)
    parser.add_argument("--members", type=int, default=100000)
    parser.add_argument("--history", type=int, default=1000000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1,
                        help="fresh-process runs of the rules and validate steps; the fastest "
                             "is reported (default: %(default)s)")
    parser.add_argument("--cold", action="store_true",
                        help="no untimed warm-up in the rules/validate workers (then the timed "
                             "call also loads the pyx12 maps, code sets and rule catalogue)")
    parser.add_argument("--profile", action="store_true",
                        help="profile EncounterRules.check even when the target is met")
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the 837P file, MIF CSV and registry of the same sizes and "
                             "seed when they exist (skips the load steps)")
    parser.add_argument("--out", type=Path, default=HERE / "out",
                        help="where the generated files go (default: bench/out)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per worker run (default: no limit)")
    parser.add_argument("--worker", nargs=2, metavar=("STEP", "ARGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        step, raw = args.worker
        if step not in STEPS:
            parser.error(f"unknown step {step!r}")
        worker(step, json.loads(raw))
        return 0
    if min(args.claims, args.members, args.repeat) < 1 or args.history < 0:
        parser.error("--claims, --members and --repeat must be positive")

    from synth837 import write_file

    print(machine())
    print(load_average(), "(other load on the machine inflates wall times; see cpu s)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    x12 = out / f"synth837-{args.claims}-s{args.seed}.x12"
    db = out / f"registry-c{args.claims}-m{args.members}-h{args.history}-s{args.seed}.sqlite"
    if not (args.reuse and x12.exists()):
        t0 = time.perf_counter()
        write_file(x12, args.claims, args.seed)
        print(f"generated {show(x12)} ({x12.stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)
    common = {"claims": args.claims, "members": args.members, "history": args.history,
              "seed": args.seed, "db": str(db), "x12": str(x12)}
    if not args.cold:
        warm = out / f"synth837-warm-s{args.seed + 1}.x12"
        write_file(warm, 10, args.seed + 1)
        common["warm"] = str(warm)

    loads: list[tuple[dict, float]] = []
    reuse_db = args.reuse and db.exists()
    use_csv, why = tabular_available()
    mif_mode = (f"MIF via {why}" if use_csv else
                f"MIF: Registry.load_members on dict rows ({why})")
    print(mif_mode, flush=True)
    if reuse_db:
        print(f"reusing {show(db)}", flush=True)
        loads.append(({"step": "registry load", "reused": True}, 0.0))
    else:
        members_args = dict(common)
        if use_csv:
            csv_path = mif_csv_path(out, common)
            if not (args.reuse and csv_path.exists()):
                t0 = time.perf_counter()
                rows, summary = member_rows(args.claims, args.members, args.seed)
                empty = write_mif_csv(csv_path, rows)
                print(f"generated {show(csv_path)} ({csv_path.stat().st_size / 1e6:.1f} MB, "
                      f"{summary['claim_members']:,} members of the claim file + "
                      f"{summary['padding']:,} padding) in {time.perf_counter() - t0:.1f}s"
                      + (f"; optional columns left empty: {', '.join(empty)}" if empty else ""),
                      flush=True)
                del rows
            members_args["csv"] = str(csv_path)
        for step, step_args in (("members", members_args), ("history", common)):
            r = run_worker(step, step_args, args.timeout)
            if "error" in r:
                print(f"  {step}: ERROR {r['error']}", flush=True)
                loads.append(({"step": step, "error": r["error"]}, 0.0))
                print("cannot go on without the registry", file=sys.stderr)
                print_table(*load_table(loads), title="registry load", right={1, 2, 3, 4, 5})
                return 1
            for part in r["parts"]:
                rss = r["peak_rss_mb"]
                if part["step"].startswith("MIF read_table"):
                    rss = r.get("read_rss_mb", rss)
                loads.append((part, rss))
                print(f"  {part['step']:<24} {part['rows']:>9,} rows {part['seconds']:8.2f}s "
                      f"wall {part['cpu']:8.2f}s cpu  (worker peak {r['peak_rss_mb']:.1f} MB)",
                      flush=True)
            if "db_mb" in r:
                print(f"  registry {show(db)}: {r['db_mb']:.1f} MB", flush=True)

    results: dict[str, dict] = {}
    steps = ("rules", "validate", "validate+encounters", "validate+rules",
             "validate+rules-in-process")
    runs: dict[str, list[dict]] = {step: [] for step in steps}
    for _ in range(args.repeat):  # interleaved, so drift in machine load hits every step
        for step in steps:
            r = run_worker(step, common, args.timeout)
            runs[step].append(r)
            done = (f"{r['seconds']:.2f}s wall, {r['cpu']:.2f}s cpu, "
                    f"{r['peak_rss_mb']:.1f} MB" if "error" not in r else f"ERROR {r['error']}")
            print(f"  {step:<20} {done}", flush=True)
    for step in steps:
        results[step] = best_of(runs[step])

    print()
    print(machine())
    print(load_average())
    print(f"claims {args.claims:,}, members {args.members:,}, history lines {args.history:,}, "
          f"seed {args.seed}; {mif_mode}; "
          + ("cold workers" if args.cold else "workers warmed up on a 10-claim file (untimed)"))
    print_table(*load_table(loads), title="registry load (SQLite file)",
                right={1, 2, 3, 4, 5})
    print_table(*rules_table(results), title=f"ECM rules over {args.claims:,} claims",
                right={1, 2, 3, 4, 5, 6, 7})
    print("  overhead = validate with rules / without - 1 (wall; cpu overhead: on CPU time, "
          "this process and its children); * rules alone as a share of validation without "
          "rules")

    base, ruled, alone = results.get("validate", {}), results.get("validate+rules", {}), \
        results.get("rules", {})
    missed = False
    if "seconds" in base and "seconds" in ruled:
        overhead = ruled["seconds"] / base["seconds"] - 1
        cpu_overhead = ruled["cpu"] / base["cpu"] - 1
        missed = overhead >= OVERHEAD_TARGET
        print()
        print(f"target rules overhead < {OVERHEAD_TARGET:.0%} of validation: {overhead:+.1%}  "
              f"[{'MISS' if missed else 'ok'}]   (on CPU time, this process + the rules "
              f"worker: {cpu_overhead:+.1%}; EncounterRules setup "
              f"{ruled.get('setup', 0):.2f}s, untimed)")
        here = results.get("validate+rules-in-process", {})
        if "seconds" in here:
            print(f"  the rules in-process instead (same run): "
                  f"{here['seconds'] / base['seconds'] - 1:+.1%} wall, "
                  f"{here['cpu'] / base['cpu'] - 1:+.1%} CPU")
        built = results.get("validate+encounters", {})
        if "seconds" in built:
            print(f"  of which building encounters (keep_encounters=True): "
                  f"{built['seconds'] / base['seconds'] - 1:+.1%}, rules on top of that: "
                  f"{(ruled['seconds'] - built['seconds']) / base['seconds']:+.1%}")
    if "seconds" in alone:
        share = alone["snapshot_seconds"] / alone["seconds"]
        print(f"rules alone: {alone['claims'] / alone['seconds']:,.0f} claims/s; "
              f"Registry.snapshot {alone['snapshot_seconds']:.2f}s ({share:.0%}), "
              f"per-claim rules {alone['seconds'] - alone['snapshot_seconds']:.2f}s")
    if (missed or args.profile) and not args.no_profile:
        r = run_worker("profile", common, args.timeout)
        if "error" in r:
            print(f"profile: ERROR {r['error']}")
        else:
            print_profile(r["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
