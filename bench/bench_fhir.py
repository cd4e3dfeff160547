"""Benchmark: the FHIR layers against bare fhir.resources parsing, and the latency of
``POST /fhir/CarePlan`` under concurrent clients.

Part 1 -- throughput on a Bundle of ``--careplans`` (1,000) ECM CarePlans (≈ 2 KB each, built
from ``fixtures/fhir/resources/careplan-ecm.json`` with varied members, dates and codes), all
in this process, each step the best of ``--repeat`` runs:

* ``bare``      -- ``fhir.resources.R4B`` ``Bundle.model_validate_json(payload)``: the whole
  Bundle parsed the ordinary way (the reference);
* ``structure`` -- our reading: ``json.loads`` once, the Bundle shell, then each entry's
  resource through ``model_validate`` on its own (``gateway.fhir.parse.iter_resources``);
* ``profile``   -- the ECM profile (cardinality, bindings, must-support, compiled FHIRPath
  invariants) on every CarePlan already read;
* ``rules``     -- the ECM rules (HCPCS code + modifier effective on the activity date);
* ``all``       -- ``check_payload``: every layer end to end, as the API and CLI run it.

Reported: seconds, CarePlans/s and the ratio of each step's time to ``bare``. Target: the
profile and rule layers together cost less than bare parsing (``(profile + rules) / bare <
1``).

Part 2 -- ``POST /fhir/CarePlan`` latency: the gateway runs under uvicorn in a subprocess on
a free loopback port with its own SQLite store (bench/out/), ``--clients`` (20) threads each
send ``--requests`` CarePlans (each different, so none is a resubmission) over keep-alive
connections (``--client``: stdlib ``http.client`` by default, a light load generator; or
httpx, whose ~3 ms CPU per request is taken from the server's 2 cores), after a warm-up (then 1 client alone, for the time of one request without
queueing behind the others). A create answers once the CarePlan is validated and its
submission kept (one transaction) and queued; its run (the resource stored, the RTF row and
837P routed) follows on the server's embedded worker thread, in the same process. Each step
waits for the queue to drain before the next starts, and reports when every submission was
routed and each one's receipt-to-routed time. ``$validate`` (nothing stored) is measured the
same way, and ``GET /healthz`` (no work at all: the floor that the HTTP stack, the client
threads and the machine's load set). Reported: p50 / p99 / max latency in ms and
requests/s, the CPU the server (all its processes) and the clients spent per request -- the
figures to compare changes by on a busy machine -- and the p50 ratio to the in-process
``all`` time of one CarePlan; for creates also the server's CPU per create including its
routing. Target: p99 <
100 ms. ``--mode`` runs the server as deployed (``embedded``, the default), in the scale-out
shape (Redis + one Celery worker process; needs ``redis-server`` on the PATH), as
``serve --api-workers N`` (``api-workers``: ``--api-workers`` API processes, default 2, each
with its own listening socket and embedded worker) or with its queue never run (``api-only``:
the request path alone). The server process is readied as ``serve`` readies it
(``gateway.api.http.prepare_process``: the FHIR path loaded, the garbage collector set).

Usage::

    python bench/bench_fhir.py                       # 1,000 CarePlans, 20 clients
    python bench/bench_fhir.py --careplans 200 --requests 10   # quick run
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_validate import load_average, print_table

FIXTURE = ROOT / "fixtures" / "fhir" / "resources" / "careplan-ecm.json"
CODES = [("G9008", "U1"), ("G9012", "U2"), ("G9008", "U8")]
P99_TARGET_MS = 100.0


def careplan(i: int) -> dict:
    data = copy.deepcopy(json.loads(FIXTURE.read_bytes()))
    data["id"] = f"cp-{i}"
    data["subject"]["identifier"]["value"] = f"{91000000 + i:08d}A"
    day = 1 + i % 28
    code, modifier = CODES[i % len(CODES)]
    for activity in data["activity"]:
        detail = activity["detail"]
        detail["code"]["coding"][0]["code"] = code
        detail["extension"][0]["valueCode"] = modifier
    data["activity"][0]["detail"]["scheduledPeriod"] = {"start": f"2026-09-{day:02d}",
                                                        "end": f"2026-09-{day:02d}"}
    return data


def bundle_payload(count: int) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "resource": careplan(i)}
        for i in range(count)]}).encode()


def best(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def throughput(count: int, repeat: int) -> tuple[list[list[str]], dict]:
    from fhir.resources.R4B import get_fhir_model_class

    from gateway.fhir.parse import Collector, iter_resources
    from gateway.fhir.profiles import ecm_careplan_rules, load_profiles
    from gateway.fhir.validate import check_payload

    payload = bundle_payload(count)
    bundle_class = get_fhir_model_class("Bundle")
    profiles = load_profiles()
    check_payload(json.dumps(careplan(0)).encode(), "json")  # warm: code sets, profiles

    def bare():
        return bundle_class.model_validate_json(payload)

    def structure():
        col = Collector()
        data = json.loads(payload)
        return [r.data for r in iter_resources(data, col) if r.model is not None], col

    def profile(resources):
        col = Collector()
        for i, resource in enumerate(resources):
            profiles.validate(resource, col, f"Bundle.entry[{i}].resource")
        return col

    def rules(resources):
        col = Collector()
        for i, resource in enumerate(resources):
            ecm_careplan_rules(resource, col, f"Bundle.entry[{i}].resource")
        return col

    def everything():
        return check_payload(payload, "json", keep=False)

    t_bare, _ = best(bare, repeat)
    t_structure, (resources, structure_col) = best(structure, repeat)
    assert len(resources) == count and not structure_col.findings
    t_profile, profile_col = best(lambda: profile(resources), repeat)
    t_rules, rules_col = best(lambda: rules(resources), repeat)
    t_all, checked = best(everything, repeat)
    errors = [f for f in checked.findings if f.is_error]
    assert not errors, errors[:3]
    rows = []
    for name, seconds in (("bare fhir.resources (Bundle)", t_bare),
                          ("structure (entry by entry)", t_structure),
                          ("profile", t_profile), ("ECM rules", t_rules),
                          ("all layers (check_payload)", t_all)):
        rows.append([name, f"{count:,}", f"{seconds:.3f}", f"{count / seconds:,.0f}",
                     f"{seconds / t_bare:.2f}"])
    summary = {"bare": t_bare, "structure": t_structure, "profile": t_profile,
               "rules": t_rules, "all": t_all, "count": count,
               "findings": len(profile_col.findings) + len(rules_col.findings)}
    return rows, summary


# -- latency ---------------------------------------------------------------------------------

SERVER = """
import sys, uvicorn
from gateway.api.app import create_app
from gateway.api.http import prepare_process
store, partners, port, queue = sys.argv[1:5]
app = create_app(store=store, partners=partners,
                 queue=queue if queue.startswith("redis://") else None)
prepare_process()  # as ecm-gateway serve does before it listens
if queue == "none":
    class Kept:  # the submissions stay queued: the request path alone is measured
        def start(self): pass
        def enqueue(self, submission_id): pass
        def stop(self): pass
    app.state.queue = Kept()
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
"""
# the Celery worker of the scale-out mode; it imports the FHIR step, which the worker module
# does not register by itself (STEPS in gateway/pipeline/steps/__init__.py)
WORKER = """
import sys
import gateway.pipeline.steps.fhir
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""
MODES = {
    "embedded": "ecm-gateway serve: the routing on the API process's worker thread",
    "api-workers": "ecm-gateway serve --api-workers N (--api-workers, default 2): N API "
                   "processes over the same store, each with an embedded worker thread",
    "scale-out": "ecm-gateway serve --queue redis:// + one ecm-gateway worker process",
    "api-only": "the request path alone: submissions kept queued, never routed",
}


WARM_OFFSET = 8_000_000


def load_members(store: str, folder: Path, numbers: list[int]) -> None:
    """A MIF of the demo plan naming the members of ``careplan(i)`` for each ``i``."""
    import csv

    from gateway.pipeline.registries import load_plan_members, server_registry
    from gateway.pipeline.store import Store
    from gateway.tabular import read_table

    sample = ROOT / "fixtures" / "mif" / "mif-fhir-members.csv"
    with sample.open(newline="") as f:
        header, template = next(csv.reader(f)), None
        template = next(csv.reader(f))
    path = folder / "members.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in sorted(set(numbers)):
            writer.writerow([f"{91000000 + i:08d}A", *template[1:]])
    rows = [row for _, row in read_table(path, "mif").rows]
    opened = Store(store)
    try:
        load_plan_members(server_registry(opened), "demo-plan", rows)
    finally:
        opened.close()


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its live descendants (the API
    processes ``serve --api-workers`` starts, the worker): what the server spent, whatever
    the machine's other load (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, wanted = 0.0, {pid}
    changed = True
    while changed:  # every descendant
        changed = False
        for child, parent in parents.items():
            if parent in wanted and child not in wanted:
                wanted.add(child)
                changed = True
    for one in wanted:
        total += times.get(one, 0.0)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


CLIENTS = ("stdlib", "httpx")


def run_clients(base: str, token: str, path: str, clients: int, requests: int,
                offset: int, method: str = "POST", kind: str = "stdlib"
                ) -> tuple[list[float], float, list[int], list[str]]:
    """``clients`` threads released together, each sending ``requests`` requests back to back
    over one keep-alive connection. ``kind``: ``stdlib`` (``http.client``, TCP_NODELAY as
    browsers and HTTP libraries set it: a load generator of ~0.2 ms CPU per request, so the
    clients take little of the 2 cores the server needs) or ``httpx`` (~3 ms CPU per request
    here: the clients then compete with the server for the CPU and queue on their own GIL,
    which inflates every latency)."""
    from urllib.parse import urlsplit

    bodies = [[json.dumps(careplan(offset + c * requests + i)).encode()
               for i in range(requests)] for c in range(clients)]
    latencies: list[float] = []
    statuses: list[int] = []
    submissions: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    where = urlsplit(base)

    def stdlib(index: int, mine: list, codes: list, ids: list) -> None:
        import http.client

        http_ = http.client.HTTPConnection(where.hostname, where.port, timeout=30.0)
        http_.connect()
        http_.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            start_gate.wait()
            for body in bodies[index]:
                started = time.perf_counter()
                if method == "POST":
                    http_.request("POST", path, body=body, headers=headers)
                else:
                    http_.request("GET", path, headers=headers)
                answer = http_.getresponse()
                answer.read()
                mine.append(time.perf_counter() - started)
                codes.append(answer.status)
                submission = answer.getheader("x-submission-id")
                if submission:
                    ids.append(submission)
        finally:
            http_.close()

    def with_httpx(index: int, mine: list, codes: list, ids: list) -> None:
        import httpx

        with httpx.Client(base_url=base, timeout=30.0, headers=headers) as http_:
            start_gate.wait()
            for body in bodies[index]:
                started = time.perf_counter()
                answer = http_.post(path, content=body) if method == "POST" \
                    else http_.get(path)
                mine.append(time.perf_counter() - started)
                codes.append(answer.status_code)
                if "x-submission-id" in answer.headers:
                    ids.append(answer.headers["x-submission-id"])

    send = stdlib if kind == "stdlib" else with_httpx

    def client(index: int) -> None:
        mine, codes, ids = [], [], []
        send(index, mine, codes, ids)
        with lock:
            latencies.extend(mine)
            statuses.extend(codes)
            submissions.extend(ids)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    # the load generator's own garbage collector must not stop its clients mid-request (a
    # full collection of this process took 30+ ms): what it holds now is never scanned
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started, statuses, submissions


def drained(database: Path, submissions: list[str], timeout: float = 600.0
            ) -> tuple[float, list[float]]:
    """Wait until the server's queue has finished every submission (the routing runs after
    the 201); the seconds waited and each submission's receipt-to-routed time (ms)."""
    import sqlite3

    started = time.perf_counter()
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        while db.execute("SELECT count(*) FROM submissions WHERE run_state != 'done'"
                         ).fetchone()[0]:
            if time.perf_counter() - started > timeout:
                raise TimeoutError("the queue did not drain")
            time.sleep(0.05)
        waited = time.perf_counter() - started
        marks = ",".join("?" * len(submissions))
        routed = [float(v) for (v,) in db.execute(
            f"SELECT latency_ms FROM submissions WHERE id IN ({marks})", submissions)]
    return waited, routed


def latency(clients: int, requests: int, mode: str = "embedded", kind: str = "stdlib",
            api_workers: int = 2) -> tuple[list[list[str]], list[list[str]]] | None:
    from gateway.pipeline.partners import issue_demo_tokens

    out = HERE / "out"
    out.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-fhir-", dir=out))
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               folder / "partners.yaml")
    port = free_port()
    env = {**os.environ, "ECM_GATEWAY_VAR": str(folder)}
    store = f"sqlite:///{folder / 'gateway.sqlite'}"
    helpers: list[subprocess.Popen] = []  # redis and the worker (scale-out)
    queue = {"embedded": "embedded", "api-only": "none", "api-workers": "embedded"}.get(mode)
    # the plan's MIF knows every member the CarePlans name (the gateway fills in their names;
    # a CarePlan whose member no MIF knows cannot be routed and is answered 422)
    load_members(store, folder, [*range(WARM_OFFSET, WARM_OFFSET + 20),
                                 *range(clients * requests),
                                 *range(1_000_000, 1_000_000 + max(requests, 100))])
    if mode == "scale-out":
        redis_port = free_port()
        helpers.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, cwd=folder))
        queue = f"redis://127.0.0.1:{redis_port}/0"
        helpers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, "worker", "--store", store, "--queue", queue,
             "--partners", str(folder / "partners.yaml")], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if mode == "api-workers":
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--store", store, "--partners",
             str(folder / "partners.yaml"), "--port", str(port), "--api-workers",
             str(api_workers)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, store, str(folder / "partners.yaml"), str(port),
             queue], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(200):
            try:
                if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            print("the server did not start")
            return None
        database = folder / "gateway.sqlite"
        warm = run_clients(base, tokens["harbor"], "/fhir/CarePlan", 4, 5, WARM_OFFSET,
                           kind=kind)
        if mode != "api-only":
            drained(database, warm[3])
        rows, routing = [], []
        for name, path, offset, concurrency in (
                ("POST /fhir/CarePlan", "/fhir/CarePlan", 0, clients),
                ("POST /fhir/CarePlan", "/fhir/CarePlan", 1_000_000, 1),
                ("POST /fhir/CarePlan/$validate", "/fhir/CarePlan/$validate", 5_000_000,
                 clients),
                ("POST /fhir/CarePlan/$validate", "/fhir/CarePlan/$validate", 6_000_000, 1),
                # the floor: the HTTP stack and the clients alone, no work in the server
                ("GET /healthz", "/healthz", 0, clients), ("GET /healthz", "/healthz", 0, 1)):
            count = requests if concurrency > 1 else max(requests, 100)
            server_before, client_before = tree_cpu(server.pid), time.process_time()
            values, seconds, statuses, submissions = run_clients(
                base, tokens["harbor"], path, concurrency, count, offset,
                method="GET" if path == "/healthz" else "POST", kind=kind)
            server_cpu = tree_cpu(server.pid) - server_before
            client_cpu = time.process_time() - client_before
            expected = 201 if path == "/fhir/CarePlan" else 200
            wrong = sum(1 for s in statuses if s != expected)
            ms = [v * 1000 for v in values]
            rows.append([name, str(concurrency), f"{len(ms):,}", f"{percentile(ms, 50):.1f}",
                         f"{percentile(ms, 99):.1f}", f"{max(ms):.1f}",
                         f"{len(ms) / seconds:,.0f}", str(wrong),
                         f"{server_cpu / len(ms) * 1000:.1f}",
                         f"{client_cpu / len(ms) * 1000:.1f}"])
            if submissions and mode != "api-only":  # the next step starts once routed
                waited, routed = drained(database, submissions)
                routed_cpu = tree_cpu(server.pid) - server_before
                routing.append([name, str(concurrency), f"{len(routed):,}",
                                f"{seconds + waited:.1f}", f"{percentile(routed, 50):.0f}",
                                f"{percentile(routed, 99):.0f}",
                                f"{routed_cpu / len(routed) * 1000:.1f}"])
        return rows, routing
    finally:
        for process in (server, *reversed(helpers)):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--careplans", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=25, help="per client")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--api-workers", type=int, default=2, metavar="N",
                        help="API processes of the api-workers mode (default 2)")
    parser.add_argument("--client", choices=CLIENTS, default="stdlib",
                        help="the load generator: stdlib http.client (light, the default) or "
                             "httpx (about 15x its CPU per request, taken from the server's "
                             "cores)")
    parser.add_argument("--mode", choices=sorted(MODES), action="append",
                        help="how the server runs (repeatable; default embedded): "
                             + "; ".join(f"{k}: {v}" for k, v in MODES.items()))
    args = parser.parse_args(argv)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {load_average()}")
    rows, summary = throughput(args.careplans, args.repeat)
    print_table(["step", "CarePlans", "seconds", "CarePlans/s", "x bare"], rows,
                f"FHIR layers on a {args.careplans:,}-CarePlan Bundle (best of {args.repeat})",
                right={1, 2, 3, 4}, plain=True)
    added = (summary["profile"] + summary["rules"]) / summary["bare"]
    mark = "ok" if added < 1 else "MISS"
    print(f"profile + ECM rules cost {added:.2f} x bare fhir.resources parsing "
          f"(target < 1.00): {mark}")
    one = summary["all"] / summary["count"] * 1000
    print(f"all layers: {one:.2f} ms per CarePlan in process")
    if args.skip_latency:
        return 0
    print()
    for mode in args.mode or ["embedded"]:
        measured = latency(args.clients, args.requests, mode, args.client, args.api_workers)
        if measured is None:
            return 1
        table, routing = measured
        for row in table:
            row.append(f"{float(row[3]) / one:.1f}")
        print_table(["request", "clients", "requests", "p50 ms", "p99 ms", "max ms", "req/s",
                     "not 2xx", "server CPU ms/req", "client CPU ms/req",
                     "p50 / in-process"], table,
                    f"Latency on loopback, {mode} ({MODES[mode]}; SQLite store; "
                    f"{args.client} clients)",
                    right={1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, plain=True)
        if routing:
            print_table(["creates", "clients", "submissions", "all routed after s",
                         "receipt to routed p50 ms", "p99 ms",
                         "server CPU ms/create incl. routing"], routing,
                        "Routing (queued, after the 201): until every submission's run is "
                        "done", right={1, 2, 3, 4, 5, 6}, plain=True)
        p99 = float(table[0][4])
        print(f"POST /fhir/CarePlan p99 with {args.clients} clients, {mode}: {p99:.1f} ms "
              f"(target < {P99_TARGET_MS:.0f} ms): {'ok' if p99 < P99_TARGET_MS else 'MISS'}"
              f"; after it: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
