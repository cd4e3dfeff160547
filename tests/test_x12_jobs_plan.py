"""The skim's quick path (``_regular_pattern`` for the usual layout, going back to it after
each irregular terminator) plans exactly the cuts the general skim plans alone: on the layouts
and cases of tests/test_x12_jobs.py, on bench-style files and on hypothesis-generated files
(blank pieces, CR/LF leads, several ISA/GS/ST, bare control ids, non-ASCII white space) —
both ways the quick path can run: the expression's own search (pure Python) and the byte loop
that finds where it matches (``_scan_regular``, C when compiled), each held to the other."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_x12_jobs import CASES, LAYOUTS

from gateway.x12 import jobs as jobs_module
from gateway.x12.jobs import data_start, plan_shares
from gateway.x12.reader import X12Reader

ISA = ("ISA*00*          *00*          *ZZ*ECMGATEWAY     *ZZ*DEMOPLAN       *261005*0930*^"
       "*00501*000000101*0*P*:")


def _general_only(buf, limit, regular, general):
    """The reference: the general skim over the whole block, never the regular one."""
    return general.finditer(buf, 0, limit)


def _plan(path: Path, jobs: int) -> list[tuple]:
    with X12Reader(str(path)) as reader:
        for _ in reader:
            break
        delimiters, notes = reader.delimiters, reader.notes
    start = data_start(str(path), notes.preamble_chars)
    return [(c.offset, c.ordinal, c.isa, c.gs, c.interchanges, c.groups, c.sets, c.tx)
            for c in plan_shares(str(path), delimiters, notes.encoding, start, jobs)]


def _both(path: Path, jobs: int, monkeypatch) -> tuple[list, list]:
    quick = _plan(path, jobs)
    with monkeypatch.context() as patch:  # the other way of the quick path
        patch.setattr(jobs_module, "_COMPILED", not jobs_module._COMPILED)
        assert _plan(path, jobs) == quick
    calls = []

    def reference(*args):
        calls.append(1)
        return _general_only(*args)

    with monkeypatch.context() as patch:
        patch.setattr(jobs_module, "_matches", reference)
        full = _plan(path, jobs)
    assert calls or not full  # (the reference really ran)
    return quick, full


FILES = {**{f"layout {k}": v for k, v in LAYOUTS.items()},
         **{f"case {k}": v for k, v in CASES.items()}}


@pytest.mark.parametrize("name", list(FILES))
def test_the_quick_skim_cuts_where_the_general_one_does(tmp_path, monkeypatch, name):
    path = tmp_path / "in.x12"
    path.write_bytes(FILES[name])
    for jobs in (2, 3, 5, 8):
        quick, full = _both(path, jobs, monkeypatch)
        assert quick == full, jobs


def test_the_quick_skim_on_a_bench_file(tmp_path, monkeypatch):
    """A bench-style file (bench/synth837.py, 40 claims a set), also cut across skim blocks."""
    import copy
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    import synth837  # noqa: E402
    real = synth837.envelope_settings

    def settings(name):
        found = copy.copy(real(name))
        found.claims_per_transaction = 40
        return found

    monkeypatch.setattr(synth837, "envelope_settings", settings)
    path = tmp_path / "bench.x12"
    synth837.write_file(path, 1500, seed=7)
    for block in (jobs_module.SKIM_BLOCK, 4096, 777):
        monkeypatch.setattr(jobs_module, "SKIM_BLOCK", block)
        for jobs in (2, 3, 4):
            quick, full = _both(path, jobs, monkeypatch)
            assert quick == full and len(quick) == jobs - 1, (block, jobs)


_DATA = ["BHT*0019*00*1*20261005*0930*CH", "NM1*41*2*ECM GATEWAY*****46*X", "HL*1**20*1",
         "CLM*A1*100***11:B:1*Y*A*Y*Y", "N\u00c9*\u00e9", "STX*1", "SEG*1", "ISAX", "G"]
_CONTROL = ["ST*837*0001*005010X222A1", "SE*3*0001", "GS*HC*A*B*20261005*0930*1*X*005010X222A1",
            "GE*1*1", "IEA*1*000000101", ISA, "ST", "SE", "GS", "ST\r", "IEA"]
_BLANK = ["", " ", "\r", "\n", "\u00a0", "\u2003\t", " \t "]
_LEADS = ["\n", "\n", "\n", "\r\n", "", "\n\n", "\r", " "]


@st.composite
def _x12(draw) -> bytes:
    usual = draw(st.sampled_from(["\n", "\r\n", ""]))
    pieces = [ISA, "GS*HC*A*B*20261005*0930*1*X*005010X222A1"]
    for _ in range(draw(st.integers(1, 12))):
        pieces.append("ST*837*0001*005010X222A1")
        pieces.extend(draw(st.lists(st.sampled_from(_DATA), max_size=6)))
        pieces.extend(draw(st.lists(st.sampled_from(_CONTROL + _BLANK + _DATA), max_size=2)))
        pieces.append("SE*3*0001")
    pieces += ["GE*1*1", "IEA*1*000000101"]
    out = []
    for piece in pieces:
        lead = usual if draw(st.integers(0, 9)) else draw(st.sampled_from(_LEADS))
        out.append(piece + "~" + lead)
    encoding = draw(st.sampled_from(["utf-8", "cp1252"]))
    return "".join(out).encode(encoding, "replace")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=_x12(), block=st.sampled_from([64, 300, 8 * 1024 * 1024]))
def test_the_quick_skim_on_generated_files(tmp_path, monkeypatch, data, block):
    path = tmp_path / "gen.x12"
    path.write_bytes(data)
    monkeypatch.setattr(jobs_module, "SKIM_BLOCK", block)
    for jobs in (2, 3, 6):
        quick, full = _both(path, jobs, monkeypatch)
        assert quick == full, jobs


_BYTES = [b"~", b"\n", b"\r", b"\r\n", b"*", b"|", b" ", b"\t", b"\x0b", b"\xc2\xa0", b"\xe2\x80\x83",
          b"ISA", b"IEA", b"GS", b"GE", b"ST", b"SE", b"S", b"I", b"G", b"IS", b"STX", b"A", b"1"]


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.sampled_from(_BYTES), max_size=60), data=st.data(),
       delimiters=st.sampled_from([("~", "*", "\n"), ("~", "*", "\r\n"), ("~", "*", ""),
                                   ("\n", "|", ""), ("~", "|", "\r"), ("\r", "*", "\n")]),
       encoding=st.sampled_from(["utf-8", "cp1252"]))
def test_the_byte_loop_finds_what_the_expression_finds(pieces, data, delimiters, encoding):
    """``_scan_regular`` answers where ``_regular_pattern``'s expression first matches from any
    position up to any limit (the block's end), whatever the bytes; ``_count_byte`` counts as
    ``bytes.count`` does."""
    from gateway.x12.reader import Delimiters

    term, sep, lead = delimiters
    found = Delimiters(element=sep, component=":", repetition="^", segment=term)
    pattern, scan = jobs_module._regular_pattern(found, encoding, lead.encode())
    buf = b"".join(pieces)
    for _ in range(4):
        pos = data.draw(st.integers(0, len(buf)))
        limit = data.draw(st.integers(pos, len(buf)))
        match = pattern.search(buf, pos, limit)
        assert jobs_module._scan_regular(buf, pos, limit, *scan) == \
            (match.start() if match else -1), (buf, pos, limit)
        assert jobs_module._count_byte(buf, pos, limit, term.encode()[0]) == \
            buf.count(term.encode(), pos, limit)
