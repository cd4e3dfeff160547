"""``validate --jobs N``: the transaction sets are shared among processes, and what comes out
is exactly what one process gives — the same findings in the same order, the same claims handed
on in the same order, the same counts — for files with defects in several sets, in the
envelope, with sets left open, with stray segments between sets, with and without ECM rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT
from x12_mutants import mutants

from gateway.reports import validate_file
from gateway.x12 import jobs as jobs_module
from gateway.x12 import validate as validate_module
from gateway.x12.reader import X12Reader
from gateway.x12.jobs import data_start, plan_shares, range_segments
from gateway.x12.validate import validate_x12

DEFECTS = FIXTURES / "837p" / "ecm-claim-defects.x12"


def _body(data: bytes) -> list[str]:
    """The ST..SE segments of a one-set interchange (``~`` terminated)."""
    segs = [s.strip("\r\n") for s in data.decode().split("~") if s.strip()]
    start = next(i for i, s in enumerate(segs) if s.startswith("ST*"))
    end = next(i for i, s in enumerate(segs) if s.startswith("SE*"))
    return segs[start:end + 1]


def _interchange(groups: list[list[list[str]]], isa13: str = "000000101") -> list[str]:
    """ISA/IEA around groups of sets (each set a segment list); ST02 numbered per group."""
    isa = (f"ISA*00*          *00*          *ZZ*ECMGATEWAY     *ZZ*DEMOPLAN       *261005*0930*^"
           f"*00501*{isa13}*0*P*:")
    out = [isa]
    for g, sets in enumerate(groups, 1):
        out.append(f"GS*HC*ECMGATEWAY*DEMOPLAN*20261005*0930*{g}*X*005010X222A1")
        for n, body in enumerate(sets, 1):
            body = list(body)
            body[0] = "*".join(body[0].split("*")[:1] + ["837", f"{n:04d}"] +
                               body[0].split("*")[3:])
            body[-1] = f"SE*{len(body)}*{n:04d}"
            out.extend(body)
        out.append(f"GE*{len(sets)}*{g}")
    out.append(f"IEA*{len(groups)}*{isa13}")
    return out


def _file(segs: list[str], terminator: str = "~\n") -> bytes:
    return (terminator.join(segs) + terminator).encode()


def _bodies(seed: int, count: int) -> list[list[str]]:
    return [_body(data) for _, data in mutants(seed, count)]


def _cases() -> dict[str, bytes]:
    clean = _body((FIXTURES / "837p" / "ecm-clean.x12").read_bytes())
    defects = _body(DEFECTS.read_bytes())
    bodies = _bodies(11, 7)
    cases = {
        "defects in several sets": _file(_interchange([[defects, clean, defects, bodies[0],
                                                        bodies[1], defects]])),
        "two groups, two interchanges": _file(
            _interchange([[bodies[2], defects], [clean, bodies[3], bodies[4]]])
            + _interchange([[defects, bodies[5]]], isa13="000000102")),
    }
    # a set left open (no SE): the next set goes to the same process, as one process sees it
    open_set = _interchange([[defects, bodies[6], clean, defects]])
    se = [i for i, s in enumerate(open_set) if s.startswith("SE*")]
    cases["a set without SE"] = _file(open_set[:se[1]] + open_set[se[1] + 1:])
    cases["the last set without SE"] = _file(open_set[:se[3]] + open_set[se[3] + 1:])
    # envelope findings: wrong SE01, a duplicate ST02, a stray segment between two sets, GE01
    broken = _interchange([[defects, clean, bodies[1]]])
    se = [i for i, s in enumerate(broken) if s.startswith("SE*")]
    broken[se[0]] = "SE*3*0001"
    broken.insert(se[1] + 1, "NTE*ADD*BETWEEN SETS")
    broken = [s.replace("ST*837*0003", "ST*837*0002").replace("SE*" , "SE*", 1) for s in broken]
    broken[-2] = "GE*9*1"
    cases["envelope defects"] = _file(broken)
    # sets outside any group (no GS): the envelope reports every segment of the first
    nogroup = _interchange([[defects, clean], [bodies[2], defects]])
    first_gs = next(i for i, seg in enumerate(nogroup) if seg.startswith("GS*"))
    cases["sets outside a group"] = _file(nogroup[:first_gs] + nogroup[first_gs + 1:])
    cases["CRLF and blank segments"] = _file(_interchange([[defects, clean, defects]]),
                                             terminator="~\r\n\r\n")
    cases["one set"] = DEFECTS.read_bytes()
    # defects at the edges of the shares: every set has one (SE01 wrong too), and a stray
    # segment and a blank piece sit before every ST, where a cut can fall
    edges = _interchange([[defects, bodies[0], defects, bodies[1], defects, clean]])
    edges = [("SE*9*" + s.split("*")[2]) if s.startswith("SE*") else s for s in edges]
    for i in reversed([i for i, s in enumerate(edges) if s.startswith("ST*")][1:]):
        edges[i:i] = ["REF*D9*STRAY", ""]
    cases["defects at the share edges"] = _file(edges)
    # odd delimiters: | between elements, newline alone between segments
    odd = _file(_interchange([[defects, clean, bodies[2], defects]]), terminator="~")
    odd = odd.replace(b"*", b"|").replace(b"~", b"\n")
    cases["odd delimiters, newline terminated"] = odd
    cases["CR between segments"] = _file(_interchange([[defects, clean, defects]]),
                                         terminator="~\r")
    # ISA12 00401 (the 4010 guide), and several interchanges and groups in one file
    four = _interchange([[defects, clean], [bodies[3], defects]])
    four[0] = four[0].replace("*^*00501*", "*U*00401*")
    four = [s.replace("005010X222A1", "004010X098A1") for s in four]
    cases["ISA12 00401"] = _file(four + _interchange([[clean, defects, bodies[4]]],
                                                        isa13="000000102"))
    # garbage: unknown segments, a blank piece of white space, bytes that are not UTF-8,
    # names that are, and a piece of a non-breaking space alone
    junk = _interchange([[defects, bodies[5], clean, defects]])
    for at in (5, 40, len(junk) // 2, len(junk) - 20):
        junk[at:at] = ["@@GARBAGE*\u00a0*x", " \t ", "\u00a0", "N\u00dcM*\u00f1"]
    clms = [i for i, seg in enumerate(junk) if seg.startswith("CLM*")]
    for i in (clms[1], clms[-1]):  # claims that cannot be read (a charge that is no amount)
        junk[i] = "*".join(junk[i].split("*")[:2] + ["1O.OO"] + junk[i].split("*")[3:])
    cases["garbage, UTF-8"] = _file(junk)
    cases["garbage, not UTF-8 (cp1252)"] = _file(junk).replace(b"@@GARBAGE", b"\xff\xfe@")
    cases["envelope fixture"] = (FIXTURES / "837p" / "ecm-envelope-defects.x12").read_bytes()
    cases["999"] = (FIXTURES / "acks" / "ecm-claim-defects.999.x12").read_bytes()
    cases["277CA"] = (FIXTURES / "acks" / "ecm-claim-defects.277ca.x12").read_bytes()
    return cases


CASES = _cases()


def _outcome(path: Path, jobs: int, **options) -> dict:
    handed: list = []
    result = validate_x12(str(path), jobs=jobs, on_claim=handed.append, **options)
    return {
        "findings": [(f.rule, f.severity, f.location, f.segment, f.message, f.context,
                      f.plan_rule, f.plan_message) for f in result.findings],
        "claims": [(c.transaction, c.index, c.start, c.end, c.scope, c.claim_id, c.charge,
                    c.member_id, c.billing_npi, c.service_from, c.service_to, c.problem,
                    c.subscriber_index, c.line_refs,
                    c.encounter.model_dump_json() if c.encounter is not None else None)
                   for c in handed],
        "counts": (result.kind, result.segments, result.lines, result.valid),
        "submitters": result.submitters,
        "envelope": [(ic.index, ic.ta1_codes, [(g.index, g.error_codes,
                                                [(t.index, t.rejected_codes, t.segment_count)
                                                 for t in g.transactions])
                                               for g in ic.groups])
                     for ic in result.interchanges],
    }


@pytest.mark.parametrize("name", list(CASES))
def test_jobs_output_equals_one_process(name, tmp_path):
    path = tmp_path / "in.x12"
    path.write_bytes(CASES[name])
    one = _outcome(path, 1)
    if name not in ("999", "277CA", "envelope fixture"):
        assert any(f[0].startswith(("X12-IG-", "X12-SNIP")) for f in one["findings"]), name
    for jobs in (2, 3):
        assert _outcome(path, jobs) == one, (name, jobs)


def test_the_cases_have_what_they_say():
    one_set = _outcome_bytes(CASES["defects in several sets"])
    sets_with_errors = {f[2].split("/")[2] for f in one_set["findings"]
                        if f[1].value == "error" and f[2].count("/") >= 2}
    assert len(sets_with_errors) >= 4  # defects in at least four of the six sets
    envelope = _outcome_bytes(CASES["envelope defects"])
    rules = {f[0] for f in envelope["findings"]}
    assert {"X12-ENV-019", "X12-ENV-013"} <= rules  # the stray NTE, the duplicate ST02
    assert any(r.startswith("X12-ENV-") and r not in ("X12-ENV-019", "X12-ENV-013")
               for r in rules)  # the counts (SE01, GE01)


def _outcome_bytes(data: bytes, jobs: int = 1) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.x12"
        path.write_bytes(data)
        return _outcome(path, jobs)


def test_jobs_with_ecm_rules_and_kept_encounters(tmp_path):
    """With ECM rules the claims are read in this process (the rules need the encounters and
    the registries); the other processes share the implementation-guide validation."""
    from gateway.ecm.rules import EncounterRules

    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    one = _outcome(path, 1, rules=EncounterRules(None), keep_encounters=True)
    assert one["claims"] and all(c[-1] is not None or c[11] for c in one["claims"])
    for jobs in (2, 3):
        assert _outcome(path, jobs, rules=EncounterRules(None), keep_encounters=True) == one


def test_claims_come_back_in_batches_through_a_file(tmp_path, monkeypatch):
    """Another process writes its claims to a temporary file in batches; they are handed on
    in file order however small the batches, and the files are gone afterwards."""
    import tempfile

    monkeypatch.setattr(jobs_module, "CLAIM_BATCH", 1)  # claims written one by one
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for name in ("two groups, two interchanges", "a set without SE"):
        path = tmp_path / "in.x12"
        path.write_bytes(CASES[name])
        one = _outcome(path, 1)
        assert _outcome(path, 2) == one
        assert _outcome(path, 3) == one
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("name", ["defects in several sets", "two groups, two interchanges",
                                  "garbage, UTF-8", "ISA12 00401", "a set without SE"])
def test_claims_counted_for_a_report_come_back_as_spans(tmp_path, name, monkeypatch):
    """When the claims only go to a report's :class:`ClaimSpans` (``validate`` without ECM
    rules), the other processes send their spans and their unreadable claims, not every claim:
    the spans, the findings (an unreadable claim's among them) and the report are the same."""
    from gateway.x12.acks import ClaimSpans

    back = []  # the claim records read back here (the unreadable ones only)
    real = jobs_module._unpickle
    monkeypatch.setattr(jobs_module, "_unpickle", lambda blob: back.extend(real(blob)) or
                        real(blob))
    path = tmp_path / "in.x12"
    path.write_bytes(CASES[name])
    outcomes = []
    for jobs in (1, 2, 3):
        spans = ClaimSpans()
        result = validate_x12(str(path), jobs=jobs, on_claim=spans.add)
        outcomes.append(([(f.rule, f.location, f.segment, f.message) for f in result.findings],
                         spans.ranges.tolist(), spans.transactions.tolist(),
                         bytes(spans.problems), spans.keys))
    assert outcomes[1] == outcomes[0] and outcomes[2] == outcomes[0]
    assert len(outcomes[0][3]) > 10
    assert all(claim.problem for claim in back)
    if name == "garbage, UTF-8":  # (one unreadable claim in the last set: another process's)
        assert sum(outcomes[0][3]) == 2 and len(back) == 2


def _log_ranges(tmp_path, monkeypatch):
    """Log every byte range a process reads (pid, start, end, ordinal) to a file; its path."""
    import os

    log = tmp_path / "ranges.log"
    real = jobs_module.range_segments

    def logged(path, start, end, ordinal, *args):
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {start} {end} {ordinal}\n")
        return real(path, start, end, ordinal, *args)

    monkeypatch.setattr(jobs_module, "range_segments", logged)
    return log


def test_each_process_reads_only_its_own_bytes(tmp_path, monkeypatch):
    """The other processes read their byte ranges only (whole transaction sets); this one
    reads from the ISA to the first cut (and, with ECM rules, the claims of the rest)."""
    import os

    log = _log_ranges(tmp_path, monkeypatch)
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    assert _outcome(path, 3) == _outcome(path, 1)
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 2 and len({pid for pid, *_ in rows}) == 2
    assert str(os.getpid()) not in {pid for pid, *_ in rows}
    (_, start1, end1, ordinal1), (_, start2, end2, _) = sorted(rows, key=lambda r: int(r[1]))
    assert 0 < int(start1) < int(end1) == int(start2) and end2 == "None"
    data = path.read_bytes()
    for start in (int(start1), int(start2)):  # just after a terminator, before an ST
        assert data[start - 1:start] == b"~" and data[start:start + 4] == b"\nST*"
    with X12Reader(str(path)) as reader:
        st = next(s for s in reader if s.ordinal == int(ordinal1) + 1)
    assert st.fields[0] == "ST"


def test_the_plan_is_made_by_a_process_of_its_own(tmp_path, monkeypatch):
    """A planning process, started before the guide is ready, plans once and tells this
    process and every other one (none of them plans)."""
    import os

    log = _log_ranges(tmp_path, monkeypatch)
    plans = tmp_path / "plans.log"
    real = jobs_module.plan_shares

    def logged(*args):
        with open(plans, "a") as out:
            out.write(f"{os.getpid()}\n")
        return real(*args)

    monkeypatch.setattr(jobs_module, "plan_shares", logged)
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    assert _outcome(path, 3) == _outcome(path, 1)
    planners = plans.read_text().split()
    readers = {line.split()[0] for line in log.read_text().splitlines()}
    assert len(planners) == 1 and len(readers) == 2
    assert planners[0] not in readers | {str(os.getpid())}


def test_the_planner_is_reaped_and_spawn_works_without_fork(tmp_path, monkeypatch):
    """Where there is a fork, the planner and the others are bare forks, reaped at the end (no
    zombie); where there is none, multiprocessing's spawned processes, with the same result."""
    import os

    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    one = _outcome(path, 1)
    ended = []
    real = jobs_module._end_planner

    def end(pid):
        ended.append(pid)
        real(pid)

    monkeypatch.setattr(jobs_module, "_end_planner", end)
    started = []

    class Forked(jobs_module._Forked):
        __slots__ = ()

        def start(self):
            super().start()
            started.append(self.pid)

    monkeypatch.setattr(jobs_module, "_Forked", Forked)
    assert _outcome(path, 3) == one
    assert len(ended) == 1 and len(started) == 2
    for pid in ended + started:  # (all reaped: no zombie left)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    monkeypatch.delattr(os, "fork")
    read = []  # (the results of the others read here: the file was shared)
    frames = jobs_module._frames
    monkeypatch.setattr(jobs_module, "_frames", lambda p: read.append(p) or frames(p))
    assert _outcome(path, 3) == one and len(ended) == 1 and len(read) == 2
    assert len(started) == 2  # (multiprocessing's processes, not bare forks)


def test_jobs_with_more_than_1024_descriptors_open(tmp_path, monkeypatch):
    """A long-lived process may hold many files: the plan's pipe then has a number beyond
    select()'s 1024 (it is polled with select.poll)."""
    import os
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("fewer than 1200 descriptors allowed")
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    one = _outcome(path, 1)
    monkeypatch.setattr(jobs_module, "WAIT_BELOW", 0)  # (polled, not waited for)
    monkeypatch.setattr(jobs_module, "POLL_SEGMENTS", 50)
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert _outcome(path, 2) == one
    finally:
        for fd in held:
            os.close(fd)


def test_jobs_do_not_import_multiprocessing(tmp_path):
    """Where there is a fork, ``--jobs`` starts its processes as bare forks: multiprocessing
    (≈ 5-10 ms to import, before the first ST) is not imported (a structural test)."""
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    code = ("import sys; from pathlib import Path; from gateway.reports import validate_file; "
            f"r = validate_file(Path({str(path)!r}), jobs=2); "
            "print(sorted(m for m in sys.modules if m.startswith('multiprocessing')), "
            "r.stats['claims'])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "[]" and int(run.stdout.split()[1]) > 0


def _layouts() -> dict[str, bytes]:
    body = _body(DEFECTS.read_bytes())
    segs = _interchange([[body] * 5, [body] * 2])
    found = {}
    for name, term in [("tilde", "~"), ("tilde newline", "~\n"), ("CRLF", "~\r\n"),
                       ("blank lines", "~\r\n\r\n"), ("CR", "~\r")]:
        found[name] = _file(segs, term)
    found["newline terminated"] = _file(segs, "~").replace(b"~", b"\n")
    mixed = list(segs)
    for i in reversed(range(3, len(mixed), 37)):
        mixed[i:i] = ["", " ", "\r", "\u00a0", "\u2003\t", "N\u00c9*\u00e9"]
    found["blank and white-space pieces"] = _file(mixed, "~")
    found["mixed leads"] = "".join(s + ("~", "~\n", "~\r\n", "~\n\n")[i % 4]
                                   for i, s in enumerate(segs)).encode()
    # a segment with no elements named like a control one, a BOM, a preamble, a fragment
    found["bare ids, BOM, preamble"] = b"\xef\xbb\xbfnoise before the ISA\n" + \
        _file(segs[:40] + ["SE", "ST\r\n"] + segs[40:], "~\n") + b"GE*1"
    found["cp1252"] = _file(mixed, "~").replace("\u00c9".encode(), b"\xc9\xa0")
    return found


LAYOUTS = _layouts()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_cuts_and_ranges_read_as_the_reader_does(tmp_path, name):
    """The skim's ordinals and contexts, and the segments of each byte range, are the reader's
    (the other processes never read what comes before their range)."""
    path = tmp_path / "in.x12"
    path.write_bytes(LAYOUTS[name])
    with X12Reader(str(path)) as reader:
        expected = [(s.ordinal, s.fields, s.raw) for s in reader]
        delimiters, notes = reader.delimiters, reader.notes
    start = data_start(str(path), notes.preamble_chars)
    assert LAYOUTS[name][start:start + 3] == b"ISA"
    for jobs in (2, 3, 5, 8):
        cuts = plan_shares(str(path), delimiters, notes.encoding, start, jobs)
        assert 1 <= len(cuts) <= jobs - 1
        assert [c.offset for c in cuts] == sorted({c.offset for c in cuts})
        seen = [e for e in expected if e[0] < cuts[0].ordinal]
        for cut, end in zip(cuts, [c.offset for c in cuts[1:]] + [None]):
            assert expected[cut.ordinal - 1][1][0] == "ST"
            isa, gs = expected[cut.isa[0] - 1], expected[cut.gs[0] - 1]
            assert (isa[0], isa[2]) == cut.isa and (gs[0], gs[2]) == cut.gs
            seen.extend((s.ordinal, s.fields, s.raw) for s in range_segments(
                str(path), cut.offset, end, cut.ordinal - 1, delimiters, notes.encoding))
        assert seen == expected, jobs


def test_a_file_that_cannot_be_cut_is_one_process(tmp_path, monkeypatch):
    """One transaction set (or delimiters that are not single bytes) cannot be cut: --jobs N
    validates it in this process alone, with the same result."""
    log = _log_ranges(tmp_path, monkeypatch)
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["one set"])
    assert _outcome(path, 4) == _outcome(path, 1)
    odd = _file(_interchange([[_body(DEFECTS.read_bytes())] * 3]), "~")
    path.write_bytes(odd.replace(b"~", "\u00a7".encode()))  # a terminator of two bytes
    with X12Reader(str(path)) as reader:
        assert reader.delimiters.segment == "\u00a7"
    one = _outcome(path, 1)
    assert one["counts"][1] > 100 and _outcome(path, 3) == one
    assert not log.exists()  # no other process read a range


def test_the_plan_comes_late_or_never(tmp_path, monkeypatch):
    """This process reads on while the others plan; when the plan comes after it passed the
    first cut (or never: the planner failed), it reads the whole file itself."""
    import time

    real = jobs_module.plan_shares
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    one = _outcome(path, 1)

    def slow(*args):
        time.sleep(3)
        return real(*args)

    monkeypatch.setattr(jobs_module, "plan_shares", slow)
    monkeypatch.setattr(jobs_module, "POLL_SEGMENTS", 50)
    monkeypatch.setattr(jobs_module, "WAIT_BELOW", 0)  # (read on while they plan)
    assert _outcome(path, 2) == one

    def failing(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(jobs_module, "plan_shares", failing)
    assert _outcome(path, 3) == one


def test_the_report_and_the_cli_are_identical(tmp_path):
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["envelope defects"])
    one, two = (validate_file(path, jobs=jobs) for jobs in (1, 2))
    assert json.dumps(one.as_dict()) == json.dumps(two.as_dict())
    runs = [subprocess.run([sys.executable, "-m", "gateway.cli", "validate", "--format", "json",
                            "--jobs", jobs, str(path)], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
            for jobs in ("1", "2", "4")]
    assert [r.returncode for r in runs] == [1, 1, 1]
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    assert json.loads(runs[0].stdout)["files"][0]["stats"]["claims"] > 0


@pytest.mark.parametrize("name", ["envelope defects", "a set without SE"])
def test_jobs_with_the_pyx12_engine(name, tmp_path):
    """pyx12 (``--engine pyx12``) reports a data segment between two sets, which the native
    engine leaves to the envelope: it reaches the guide of one process only."""
    path = tmp_path / "in.x12"
    path.write_bytes(CASES[name])
    one = _outcome(path, 1, engine="pyx12")
    if name == "envelope defects":
        assert [f for f in one["findings"] if f[0].startswith("X12-IG-") and f[2].endswith("/NTE")]
    assert _outcome(path, 2, engine="pyx12") == one


def test_a_share_that_fails_stops_the_run(tmp_path, monkeypatch):
    import multiprocessing
    import os

    parent = os.getpid()
    real = validate_module.guide_validator

    def failing(*args, **kwargs):
        if os.getpid() != parent:
            raise MemoryError("no room")
        return real(*args, **kwargs)

    monkeypatch.setattr(validate_module, "guide_validator", failing)
    path = tmp_path / "in.x12"
    path.write_bytes(CASES["defects in several sets"])
    with pytest.raises(RuntimeError, match="share 1 failed: MemoryError"):
        validate_x12(str(path), jobs=2)
    # (none of ours left; the ECM rules' worker of gateway/ecm/pipelined.py may live on)
    assert [p for p in multiprocessing.active_children()
            if p.name.startswith("validate-share")] == []
