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
from gateway.x12.jobs import _Owners, _skim
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


def test_claims_waiting_their_turn_go_to_a_temporary_file(tmp_path, monkeypatch):
    """A process that finishes a later set first keeps its claims in a bounded spool."""
    written = []
    original = jobs_module._Spool.put

    def put(self, key, blob):
        original(self, key, blob)
        written.append(self.on_disk())

    monkeypatch.setattr(jobs_module, "SPOOL_MEMORY", 0)
    monkeypatch.setattr(jobs_module, "CLAIM_BATCH", 1)  # claims go on one by one
    monkeypatch.setattr(jobs_module._Spool, "put", put)
    for name in ("two groups, two interchanges", "a set without SE"):
        path = tmp_path / "in.x12"
        path.write_bytes(CASES[name])
        one = _outcome(path, 1)
        assert _outcome(path, 2) == one
        assert _outcome(path, 3) == one
    assert written and all(written)  # whatever waited, waited on disk


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


@pytest.mark.parametrize("terminator", ["~", "~\n", "~\r\n", "~\r\n\r\n", "\n"])
def test_skimming_counts_segments_as_the_reader_does(tmp_path, terminator):
    """Every process but one skims the segments of the others' sets; the ordinals and texts of
    what it does read must be the reader's."""
    segs = _interchange([[_body(DEFECTS.read_bytes())] * 3])
    data = _file(segs, terminator if terminator != "\n" else "\n")
    if terminator == "\n":  # newline as the segment terminator (ISA16 then the newline)
        data = data.replace(b"~", b"")
    data = b"\xef\xbb\xbfnoise before the ISA\n" + data + b"GE*1"  # BOM, preamble, fragment
    path = tmp_path / "in.x12"
    path.write_bytes(data)
    with X12Reader(str(path)) as reader:
        expected = [(s.ordinal, s.fields, s.raw) for s in reader]
    for shares in (1, 2, 3):
        seen: list = []
        for share in range(shares):
            with X12Reader(str(path)) as reader:
                seen.extend((s.ordinal, s.fields, s.raw, owner)
                            for s, owner, _, _ in _skim(reader, _Owners(shares), share))
        mine = sorted({(o, tuple(f), r) for o, f, r, owner in seen})
        assert mine == sorted({(o, tuple(f), r) for o, f, r in expected})


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
    assert multiprocessing.active_children() == []
