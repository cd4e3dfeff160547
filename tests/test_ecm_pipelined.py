"""The ECM rules in a worker process (gateway/ecm/pipelined.py) give exactly the findings of the
in-process rules, over the same inputs: the generated file of tests/test_ecm_fast_path.py (every
rule firing and not firing, several batches), for a plan, a submitter and a presumptive
arrangement; the fixtures with claims the model has to read; rules.notes(); an engine used for
several files; a failure and a death in the worker (a clear error, never a hang); and where the
worker is used at all.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from conftest import FIXTURES
from test_cli import run
from test_ecm_fast_path import (
    NPIS, fixture_registry, shown, write_generated,
)
from gateway.ecm import pipelined
from gateway.ecm.pipelined import RulesWorkerError
from gateway.ecm.rules import EncounterRules, Presumptive, finding_rows, findings_of_rows
from gateway.registry.store import Registry
from gateway.x12.validate import validate_x12


@pytest.fixture
def pipelining(monkeypatch):
    """Every input pipelined (the test process may hold helper threads of other tests' servers:
    the fork-safety check is lifted here, and tested on its own below)."""
    monkeypatch.setattr(pipelined, "_threshold", lambda: 1)
    monkeypatch.setattr(pipelined, "fork_safe", lambda: True)
    monkeypatch.setattr(pipelined, "_cpus", lambda: 2)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return write_generated(tmp_path_factory.mktemp("pipelined"), 1414)


def both_ways(path, registry, keep_encounters=False, counted=False, **options):
    """(in-process, pipelined) findings of validate_x12, and whether a worker ran.
    ``counted``: the claims only go to a report's counts (``ClaimSpans.add``, as
    ``validate_file`` passes them): the claims read light go to the worker as rows built from
    their segments (claims837.RulesSpansCollector); the spans must be the same both ways."""
    from gateway.x12.acks import ClaimSpans

    spans = [ClaimSpans(), ClaimSpans()] if counted else [None, None]
    take = [s.add if s is not None else None for s in spans]
    pipelining = pipelined._threshold
    pipelined._threshold = lambda: 0  # (the reference: the rules in this process)
    try:
        rules = EncounterRules(registry, **options)
        here = validate_x12(str(path), rules=rules, keep_encounters=keep_encounters,
                            on_claim=take[0])
        assert rules._worker is None
    finally:
        pipelined._threshold = pipelining
    rules = EncounterRules(registry, **options)
    try:
        there = validate_x12(str(path), rules=rules, keep_encounters=keep_encounters,
                             on_claim=take[1])
        worked = rules._worker is not None  # (the worker waits, holding the engine's state)
    finally:
        rules.close()
    if counted:
        a, b = spans
        assert (a.ranges, a.transactions, a.problems, a.keys) == \
            (b.ranges, b.transactions, b.problems, b.keys)
        assert len(a) > 0
    return shown(here.findings), shown(there.findings), worked


@pytest.mark.parametrize("options", [
    {},
    {"audience": "submitter"},
    {"audience": "submitter", "submitter": ((NPIS[0], NPIS[3]), ("940000003",))},
    {"presumptive": Presumptive(frozenset({NPIS[1], NPIS[4]}), 20)},
], ids=["plan", "submitter", "named-submitter", "presumptive"])
@pytest.mark.parametrize("counted", [False, True], ids=["records", "counted"])
def test_generated_file_same_findings(pipelining, generated, options, counted):
    path, registry = generated
    here, there, worked = both_ways(path, registry, counted=counted, **options)
    assert worked
    assert here == there
    assert sum(1 for f in here if f[0].startswith("ECM-")) > 300  # several batches' worth
    if "presumptive" in options:
        assert {"ECM-MEM-004", "ECM-MEM-005"} & {f[0] for f in there}


@pytest.mark.parametrize("keeping_up", [True, False], ids=["text", "views"])
def test_counted_claims_as_text_or_views(pipelining, generated, monkeypatch, keeping_up):
    """The claims read light go to the worker as text while it keeps up, as views while it
    lags (the first batch as text): the findings are the same either way."""
    monkeypatch.setattr(pipelined.RulesWorker, "keeping_up", lambda self, lag=1: keeping_up)
    path, registry = generated
    here, there, worked = both_ways(path, registry, counted=True)
    assert worked and here == there


@pytest.mark.parametrize("keeping_up", [True, False], ids=["keeping-up", "lagging"])
@pytest.mark.parametrize("counted", [False, True], ids=["records", "counted"])
def test_smaller_batches_once_the_input_is_read(pipelining, generated, monkeypatch, keeping_up,
                                                 counted):
    """Once the reader has read all but NEAR_END_BYTES of the input (the claims of those and
    of the chunks read still to come), the batches shrink to LAST_BATCHES claims while the
    worker keeps up (the batch it checks after the caller is done is then small), not while it
    lags; the findings are the same."""
    from gateway.x12 import validate

    monkeypatch.setattr(pipelined.RulesWorker, "keeping_up", lambda self, lag=1: keeping_up)
    sizes = []
    real = pipelined.RulesWorker.submit
    monkeypatch.setattr(pipelined.RulesWorker, "submit",
                        lambda self, batch: sizes.append(len(batch)) or real(self, batch))
    path, registry = generated
    # (more than the reader's first read and the end's bytes)
    assert path.stat().st_size > validate.NEAR_END_BYTES + 2 * 64 * 1024
    here, there, worked = both_ways(path, registry, counted=counted)
    assert worked and here == there
    full = EncounterRules(registry).batch_size
    sizes = [n for n in sizes if n]
    assert sizes[0] == validate.FIRST_BATCH  # (the worker starts sooner)
    sizes = sizes[1:]
    if keeping_up:
        small = sizes.index(next(n for n in sizes if n < full))
        assert small > 0 and all(n <= validate.LAST_BATCHES for n in sizes[small + 1:])
        assert len(sizes) - small > 2  # (several small batches: the last chunk's claims)
    else:
        assert all(n == full for n in sizes[:-1])


def test_claims_read_by_the_model(pipelining, generated, monkeypatch):
    """Encounters (the model: kept encounters, or a claim in doubt) are viewed before they go."""
    import gateway.model.view as view

    viewed = []
    real = view.view_of
    monkeypatch.setattr(view, "view_of", lambda e: viewed.append(1) or real(e))
    path, registry = generated
    here, there, worked = both_ways(path, registry, keep_encounters=True)
    assert worked and here == there and viewed


@pytest.mark.parametrize("name", ["ecm-mixed", "ecm-claim-defects", "ecm-envelope-defects"])
@pytest.mark.parametrize("kind", ["mif", "policy"])
@pytest.mark.parametrize("counted", [False, True], ids=["records", "counted"])
def test_fixtures_same_findings(pipelining, kind, name, counted):
    here, there, worked = both_ways(FIXTURES / "837p" / f"{name}.x12", fixture_registry(kind),
                                    counted=counted)
    assert worked and here == there


def test_notes_for_missing_registries(pipelining, generated, tmp_path):
    """Only a roster loaded: the notes naming the rule groups that could not run come first,
    as in-process; the registry here is a SQLite file the worker opens by its URL."""
    from gateway.registry.load import load_registries

    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    load_registries(registry, providers=[FIXTURES / "roster" / "providers.csv"])
    here, there, worked = both_ways(generated[0], registry)
    assert worked and here == there
    assert [f[0] for f in there[:3]] == ["ECM-REG-001"] * 3


def test_no_registry(pipelining, generated):
    here, there, worked = both_ways(generated[0], None)
    assert worked and here == there and any(f[0] == "ECM-CODE-001" for f in there)


def test_one_engine_for_several_files(pipelining, generated):
    """The second run of the same file finds every line a duplicate of the first (the engine's
    state came back from the first run's worker), as in-process; and an in-process run after a
    pipelined one continues from its state too."""
    path, registry = generated
    runs = []
    for pipelined_runs in (0, 2):
        rules = EncounterRules(registry)
        found = []
        for n in range(3):
            if n >= pipelined_runs:
                rules.reclaim()
                found.append(shown(_in_process(path, rules)))
            else:
                found.append(shown(validate_x12(str(path), rules=rules).findings))
                assert rules._worker is not None
        rules.close()
        runs.append(found)
    assert runs[0] == runs[1]
    assert sum(f[0] == "ECM-DUP-001" for f in runs[0][1]) > \
        sum(f[0] == "ECM-DUP-001" for f in runs[0][0]) + 500


def _in_process(path, rules):
    original = pipelined._threshold
    pipelined._threshold = lambda: 0
    try:
        return validate_x12(str(path), rules=rules).findings
    finally:
        pipelined._threshold = original


def test_failure_in_the_worker_is_an_error(pipelining, generated):
    path, registry = generated
    rules = EncounterRules(registry)

    def broken(batch):
        raise KeyError("91230000A")  # a value from the file: never in the error

    rules._check = broken  # (the worker inherits the engine as it is)
    with pytest.raises(RulesWorkerError) as caught:
        validate_x12(str(path), rules=rules)
    assert "KeyError" in str(caught.value) and "91230000A" not in str(caught.value)
    assert rules._worker is None


def test_worker_dying_is_an_error_not_a_hang(pipelining, generated):
    path, registry = generated
    rules = EncounterRules(registry)
    rules._check = lambda batch: os._exit(3)
    with pytest.raises(RulesWorkerError, match="exit code 3"):
        validate_x12(str(path), rules=rules)


def test_caller_failing_stops_the_worker(pipelining, generated, monkeypatch):
    path, registry = generated
    rules = EncounterRules(registry)
    started = []
    real = pipelined.start

    def start(*args):
        worker = real(*args)
        started.append(worker.process.pid)
        return worker

    monkeypatch.setattr(pipelined, "start", start)

    def on_claim(claim):
        raise ValueError("the caller's own failure")

    with pytest.raises(ValueError):
        validate_x12(str(path), rules=rules, on_claim=on_claim)
    assert started
    with pytest.raises(ProcessLookupError):  # (ended and reaped)
        os.kill(started[0], 0)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc")
def test_runs_leave_no_descriptors(pipelining, generated):
    """A pipelined run holds its pipes and its worker's sentinel only while it runs: closed,
    run after run, the process holds no more descriptors, whoever still refers to the worker
    (its sentinel pipe stayed open until the process object was collected)."""
    import gc

    path, registry = generated
    gc.disable()  # (a collection would close what the runs left: the leak would hide)
    held = []  # (a caller, a traceback or a cycle may keep the worker)
    try:
        rules = EncounterRules(registry)
        validate_x12(str(path), rules=rules)
        rules.close()
        before = _open_descriptors()
        for _ in range(3):
            rules = EncounterRules(registry)
            validate_x12(str(path), rules=rules)
            held.append(rules._worker)
            assert held[-1] is not None
            rules.close()
        assert _open_descriptors() == before
    finally:
        gc.enable()


# -- where it applies ----------------------------------------------------------------------------
def test_pipelining_decision(monkeypatch, generated):
    registry = generated[1]
    rules = EncounterRules(registry)
    monkeypatch.setattr(pipelined, "fork_safe", lambda: True)
    monkeypatch.setattr(pipelined, "_cpus", lambda: 2)
    monkeypatch.setattr(pipelined, "_threshold", lambda: 1000)
    assert pipelined.pipelining(rules, 1000)
    assert not pipelined.pipelining(rules, 999)
    assert not pipelined.pipelining(rules, None)  # a stream of unknown size
    monkeypatch.setattr(pipelined, "_threshold", lambda: 0)  # the setting's "never"
    assert not pipelined.pipelining(rules, 10**9)
    monkeypatch.setattr(pipelined, "_threshold", lambda: 1)
    monkeypatch.setattr(pipelined, "fork_safe", lambda: False)
    assert not pipelined.pipelining(rules, 10**9)
    monkeypatch.setattr(pipelined, "fork_safe", lambda: True)
    monkeypatch.setattr(pipelined, "_cpus", lambda: 1)  # one CPU: the worker would take turns
    assert not pipelined.pipelining(rules, 10**9)
    monkeypatch.setattr(pipelined, "_cpus", lambda: 2)
    rules.use_seen_index({})  # an index kept elsewhere (e.g. on disk): stays here
    assert not pipelined.pipelining(rules, 10**9)


def test_fork_safe_only_in_the_main_thread_alone():
    answers = []
    worker = threading.Thread(target=lambda: answers.append(pipelined.fork_safe()))
    worker.start()
    worker.join()
    assert answers == [False]  # a worker thread (the server's pipeline steps)
    # the main thread with another thread running: not safe either
    assert not pipelined.fork_safe() or threading.active_count() == 1


def test_setting_read_from_the_environment(monkeypatch):
    from gateway import settings

    settings.reset()
    monkeypatch.setenv("ECM_GATEWAY_RULES_PIPELINE_BYTES", "12345")
    assert pipelined._threshold() == 12345
    monkeypatch.delenv("ECM_GATEWAY_RULES_PIPELINE_BYTES")
    assert pipelined._threshold() == pipelined.DEFAULT_PIPELINE_BYTES


# -- the command line ----------------------------------------------------------------------------
def test_cli_same_output_pipelined(monkeypatch):
    """``ecm-gateway validate`` with every input pipelined (a single-threaded process: the
    command line is where pipelining applies) prints what it prints in-process; the in-memory
    registry goes to the worker as an image."""
    policy = FIXTURES / "ecm-policy"
    args = ["validate", FIXTURES / "837p" / "ecm-mixed.x12", FIXTURES / "837p" / "ecm-clean.x12",
            "--members", policy / "mif.csv", "--providers", FIXTURES / "roster" / "providers.csv",
            "--history", policy / "claims-history.csv", "--history", FIXTURES / "history",
            "--cs-authorizations", policy / "cs-authorizations.csv", "--format", "json"]
    outputs = []
    for threshold in ("0", "1"):
        monkeypatch.setenv("ECM_GATEWAY_RULES_PIPELINE_BYTES", threshold)
        done = run(*args)
        assert done.returncode == 1, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert any(f["rule"].startswith("ECM-") for f in outputs[1]["files"][-2]["findings"])


def test_registry_in_a_memory_file(pipelining, generated):
    """The command line's registry (a SQLite file on the memory file system) is opened by the
    worker by its path (no image), gives the same findings, and its folder goes with it."""
    import gc
    from pathlib import Path

    path, source = generated
    registry = Registry.in_memory_file()
    folder = Path(registry.memory_file).parent
    assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"
    raw = registry.engine.raw_connection()
    image = source.engine.raw_connection()
    try:
        image.driver_connection.backup(raw.driver_connection)  # (a copy of the registry)
    finally:
        image.close()
        raw.close()
    assert pipelined._locator(registry)[0] == "memory-file"
    here, there, worked = both_ways(path, registry)
    assert worked and here == there and any(f[0] == "ECM-POF-001" for f in there)
    del registry
    gc.collect()
    assert not folder.exists()


def test_memory_files_of_killed_processes_are_swept(tmp_path):
    """A process killed before its clean-up leaves its registry folder (member data) behind;
    the next registry in a memory file removes it. Folders of running processes, of other
    names, and links are left alone."""
    import subprocess
    import sys
    from pathlib import Path

    from gateway.registry.store import _sweep_memory_files

    killed = subprocess.run(
        [sys.executable, "-c", "import os\nfrom gateway.registry.store import Registry\n"
         "r = Registry.in_memory_file()\nprint(r.memory_file, flush=True)\n"
         "os.kill(os.getpid(), 9)"], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    left = Path(killed.stdout.strip()).parent
    assert left.is_dir()  # nothing could remove it
    registry = Registry.in_memory_file()
    assert not left.exists()
    assert Path(registry.memory_file).parent.is_dir()  # this process's own is kept
    registry.engine.dispose()

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)
    dead = int(gone.stdout)
    for name in (f"ecm-registry-{dead}-a", f"ecm-registry-{os.getpid()}-b", "ecm-registry-x-c",
                 f"other-{dead}-d"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "registry.sqlite").write_text("rows")
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / f"ecm-registry-{dead}-link").symlink_to(target)
    _sweep_memory_files(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f"ecm-registry-{os.getpid()}-b", "ecm-registry-x-c", f"other-{dead}-d",
        f"ecm-registry-{dead}-link", "target"])
    assert (target).is_dir()


def test_findings_come_back_whole():
    """Every field of a finding crosses the pipe (a field added to Finding must be added to the
    worker's rows too)."""
    from gateway.findings import Finding, _FIELDS

    finding = Finding(rule="ECM-MEM-003", severity="warning", location="ISA#1/GS#1/ST#1/2300[2]",
                      message="m", source="s", segment=12, context={"segment": "CLM"},
                      plan_rule="ECM-PRV-001", plan_message="p")
    row = finding_rows([[finding]])[0]
    back = []
    findings_of_rows(pipelined._unpack(pipelined._pack([row])), back)
    back = back[0]
    assert back == finding and len(row) == len(_FIELDS) == len(Finding.__slots__)
    assert [getattr(back, name) for name in _FIELDS] == [getattr(finding, n) for n in _FIELDS]


@pytest.mark.parametrize("odd", [
    "", "naïve Åsa 名前 \U0001F600", "line\nbreak\ttab\r\x00nul", "\udcff lone surrogate",
    "~*:^|'\"\\", "x" * 100_000,
], ids=["empty", "unicode", "controls", "surrogate", "separators", "long"])
@pytest.mark.parametrize("context", [None, {"segment": "CLM", "position": [1, 2]},
                                     {"when": __import__("datetime").date(2026, 9, 1)}],
                         ids=["no-context", "plain-context", "context-marshal-cannot-write"])
def test_findings_transport_round_trips_odd_values(odd, context):
    """A batch of findings crosses the pipe field for field, whatever the characters (marshal;
    pickle for a value marshal cannot write), and comes back in order as equal Finding objects
    of the class itself, severities the enum's members, through the caller's deferred
    unpacking."""
    from gateway.findings import Finding, Severity, _FIELDS

    findings = [Finding(rule=f"ECM-{odd}", severity=severity, location=odd, message=odd + "m",
                        source=odd, segment=segment, context=context, plan_rule=plan,
                        plan_message=plan and odd)
                for severity in Severity for segment in (None, 0, 7, 2**40)
                for plan in (None, "ECM-PRV-001")]
    body = pipelined._pack(finding_rows([findings]))
    assert body[:1] == (b"M" if context is None or "when" not in context else b"P")

    class Pipe:  # (the caller's side as RulesWorker.finish drives it, without a process)
        _bodies = []
        findings = []
        _unpack_one = pipelined.RulesWorker._unpack_one
        _findings_of_rows = staticmethod(findings_of_rows)
        _messages: list = []

    pipe = Pipe()
    pipe._bodies.append(memoryview(pipelined._FINDINGS + body)[1:])
    pipe._unpack_one()
    back = pipe.findings
    assert back == findings and not pipe._bodies
    for a, b in zip(back, findings):
        assert a.__class__ is Finding and a.severity is b.severity
        assert [getattr(a, n) for n in _FIELDS] == [getattr(b, n) for n in _FIELDS]


def test_claim_in_doubt_read_by_the_model(pipelining, monkeypatch):
    """A claim the light reader is unsure of (an amount in exponent form) is read by the model
    and viewed before it goes to the worker; the input given as bytes."""
    import gateway.model.view as view

    viewed = []
    real = view.view_of
    monkeypatch.setattr(view, "view_of", lambda e: viewed.append(1) or real(e))
    data = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes().replace(
        b"CLM*MIX-A-GOOD*25*", b"CLM*MIX-A-GOOD*2.5E1*")
    registry = fixture_registry("policy")
    here = validate_x12(data, rules=EncounterRules(registry))
    assert viewed == [1]  # (in-process: the rules view it)
    rules = EncounterRules(registry)
    there = validate_x12(data, rules=rules)
    assert rules._worker is not None and viewed == [1, 1]
    rules.close()
    assert shown(here.findings) == shown(there.findings)
    assert any(f.rule.startswith("ECM-") for f in there.findings)


def test_keeping_up_within_a_lag():
    """``keeping_up(lag)``: the worker has checked every batch but the last ``lag`` submitted
    (1 by default: it works on the last one or idles)."""
    from types import SimpleNamespace

    def up(sent, done, *lag):
        return pipelined.RulesWorker.keeping_up(SimpleNamespace(sent=sent, done=done), *lag)

    assert up(5, 4) and up(5, 5) and not up(5, 3)
    assert up(5, 3, 2) and not up(5, 2, 2)


@pytest.mark.parametrize("behind", [1, 2, 3])
def test_text_rows_while_the_worker_is_within_text_lag(pipelining, generated, monkeypatch,
                                                       behind):
    """The claims read light go as text rows while the worker is at most TEXT_LAG batches
    behind (one batch queued is not idle), as views beyond; findings the same either way."""
    from gateway.x12 import validate

    assert validate.TEXT_LAG == 2
    monkeypatch.setattr(pipelined.RulesWorker, "keeping_up",
                        lambda self, lag=1: behind <= lag)
    kinds = []
    real = pipelined.RulesWorker.submit
    monkeypatch.setattr(pipelined.RulesWorker, "submit", lambda self, batch: kinds.extend(
        {row[0].__class__ for row in batch}) or real(self, batch))
    path, registry = generated
    here, there, worked = both_ways(path, registry, counted=True)
    assert worked and here == there
    sent = set(kinds[len(kinds) // 2:])  # (the first batch goes as text)
    assert sent == ({str} if behind <= validate.TEXT_LAG else {tuple})  # (a text row: a str)


def test_messages_sent_once_come_back_in_every_finding():
    """A message the worker sent in an earlier batch goes again as its number
    (finding_rows' table): the caller's findings carry the text, in every batch, in order."""
    from gateway.findings import Finding

    def finding(message, segment):
        return Finding(rule="ECM-POF-001", severity="warning", location=f"L{segment}",
                       message=message, source="s", segment=segment)

    long = "the member is assigned under SMI_SUD but " * 10
    batches = [[[finding(long, 1), finding("other", 2)], [finding(long, 3)]],
               [[finding(long, 4)], [finding("new", 5), finding("other", 6)]]]
    sent: dict = {}
    bodies = [pipelined._pack(finding_rows(batch, sent)) for batch in batches]
    second = pipelined._unpack(bodies[1])
    assert [row[3] for row in second] == [0, "new", 1]  # (numbers: the messages sent before)

    class Pipe:
        _bodies = [memoryview(b) for b in bodies]
        findings: list = []
        _unpack_one = pipelined.RulesWorker._unpack_one
        _findings_of_rows = staticmethod(findings_of_rows)
        _messages: list = []

    pipe = Pipe()
    pipe._unpack_one()
    pipe._unpack_one()
    assert pipe.findings == [f for batch in batches for claim in batch for f in claim]
