"""Property tests for ``validate_x12`` on hostile input.

* arbitrary bytes: either :class:`NotX12Error` or a result, never another exception;
* mutations of a clean synthetic 837P (delete, duplicate, swap segments; replace a character;
  truncate; prose before the ISA): no other exception, a stable verdict, a truncated
  interchange is never valid, and no finding message ever quotes member names or CINs.
"""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gateway.x12.reader import NotX12Error
from gateway.x12.validate import validate_x12

REPO = Path(__file__).resolve().parents[1]

FAST = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
MUTATIONS = settings(deadline=None, max_examples=400,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _synth():
    spec = importlib.util.spec_from_file_location("synth837", REPO / "bench" / "synth837.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _validate(data: bytes):
    """``validate_x12`` that lets only :class:`NotX12Error` through (as ``None``)."""
    try:
        return validate_x12(data)
    except NotX12Error:
        return None


def _key(result) -> list[tuple]:
    return [(f.rule, f.location, f.segment) for f in result.findings]


# -- the clean source file (one per module) ------------------------------------------------------

class Source:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.segments = data.split(b"~")  # last piece is the trailing newline / empty
        self.terminated = [s + b"~" for s in self.segments[:-1]]
        self.tail = self.segments[-1]
        text = data.decode("utf-8")
        self.member_names: set[str] = set()
        self.cins: set[str] = set()
        self.member_spans: list[tuple[int, int]] = []  # byte ranges of the member's segments
        offset = 0
        in_member = False
        for raw in self.terminated:
            fields = raw.decode("utf-8").strip().rstrip("~").split("*")
            if fields[0] == "NM1":
                in_member = fields[1] == "IL"
            elif fields[0] not in ("N3", "N4", "DMG"):
                in_member = False
            if fields[0] == "NM1" and fields[1] == "IL":
                self.member_names.add(fields[3])
                self.cins.add(fields[9])
            if in_member:
                self.member_spans.append((offset, offset + len(raw)))
            offset += len(raw)
        assert offset + len(self.tail) == len(data)
        assert text.count("NM1*IL*") == len(self.cins) == 3


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Source:
    path = tmp_path_factory.mktemp("fuzz") / "synthetic-3.x12"
    _synth().write_file(path, 3)
    data = path.read_bytes()
    result = validate_x12(data)
    assert result.kind == "837p"
    assert result.valid, result.findings
    assert len(result.claims) == 3
    return Source(data)


# -- (a) arbitrary bytes -------------------------------------------------------------------------

_ISA = (b"ISA*00*          *00*          *ZZ*ECMGATEWAY     *ZZ*DEMOPLAN       *261005*0930*^*"
        b"00501*000000007*0*P*:~")

junk = st.one_of(
    st.binary(max_size=2000),
    st.binary(max_size=600).map(lambda b: b"ISA" + b),
    st.tuples(st.integers(0, len(_ISA)), st.binary(max_size=600)).map(
        lambda t: _ISA[: t[0]] + t[1]),
    st.text(alphabet=string.printable + "*:^~", max_size=800).map(
        lambda s: (_ISA + s.encode()) if s[:1] != "x" else ("ISA" + s).encode()),
)


@FAST
@given(data=junk)
def test_random_bytes_raise_only_not_x12(data):
    try:
        result = validate_x12(data)
    except NotX12Error:
        return
    assert isinstance(result.valid, bool)
    assert isinstance(result.findings, list)


# -- (b) mutations of a valid 837P ---------------------------------------------------------------

DELIMITERS = "*:^~\n\r"


def _position(draw, src_len: int, spans: list[tuple[int, int]]) -> int:
    """A byte offset: anywhere, or (half the time) inside a member's NM1/N3/N4/DMG segment."""
    if spans and draw(st.booleans()):
        start, end = draw(st.sampled_from(spans))
        return draw(st.integers(start, end - 1))
    return draw(st.integers(0, src_len - 1))


@st.composite
def mutation(draw, src: Source, data: bytes | None = None):
    """One mutation of ``data`` (default: the clean file): (name, new bytes)."""
    data = src.data if data is None else data
    segs = data.split(b"~")
    pieces, tail = [s + b"~" for s in segs[:-1]], segs[-1]
    kind = draw(st.sampled_from(
        ["delete", "duplicate", "replace", "truncate", "swap", "preamble"]))
    if kind == "delete" and pieces:
        i = draw(st.integers(0, len(pieces) - 1))
        note(f"delete segment {i}: {pieces[i]!r}")
        return kind, b"".join(pieces[:i] + pieces[i + 1:]) + tail
    if kind == "duplicate" and pieces:
        i = draw(st.integers(0, len(pieces) - 1))
        note(f"duplicate segment {i}: {pieces[i]!r}")
        return kind, b"".join(pieces[: i + 1] + [pieces[i]] + pieces[i + 1:]) + tail
    if kind == "swap" and len(pieces) > 1:
        i = draw(st.integers(0, len(pieces) - 1))
        j = draw(st.integers(0, len(pieces) - 1))
        note(f"swap segments {i} and {j}: {pieces[i]!r} <-> {pieces[j]!r}")
        pieces = list(pieces)
        pieces[i], pieces[j] = pieces[j], pieces[i]
        return kind, b"".join(pieces) + tail
    if kind == "truncate" and data:
        p = draw(st.integers(0, len(data) - 1))
        note(f"truncate at {p}")
        return kind, data[:p]
    if kind == "preamble":
        prose = draw(st.text(alphabet=string.printable, max_size=300))
        note(f"preamble {prose!r}")
        return kind, prose.encode() + data
    if not data:
        return "none", data
    spans = src.member_spans if data is src.data else []
    p = _position(draw, len(data), spans)
    char = draw(st.one_of(st.sampled_from(DELIMITERS),
                          st.sampled_from(string.printable)))
    note(f"replace byte {p} ({data[p:p + 1]!r}) with {char!r}; context "
         f"{data[max(0, p - 30):p + 30]!r}")
    return "replace", data[:p] + char.encode() + data[p + 1:]


@st.composite
def mutated(draw, src: Source):
    """The clean file after one to three mutations."""
    data = src.data
    kinds = []
    for _ in range(draw(st.integers(1, 3))):
        kind, data = draw(mutation(src, data))
        kinds.append(kind)
    return kinds, data


@MUTATIONS
@given(data=st.data())
def test_mutations_raise_only_not_x12_and_are_stable(source, data):
    kinds, mutant = data.draw(mutated(source))
    first = _validate(mutant)
    second = _validate(mutant)
    if first is None or second is None:
        assert first is None and second is None, "NotX12Error only on one of two runs"
        return
    assert _key(first) == _key(second)
    assert first.valid == second.valid
    assert first.kind == second.kind


@settings(deadline=None, max_examples=200)
@given(data=st.data())
def test_truncation_before_final_iea_is_invalid(source, data):
    end = source.data.rfind(b"IEA")
    assert end > 0
    p = data.draw(st.integers(0, end), label="truncate at")
    note(f"tail of truncated file: {source.data[max(0, p - 60):p]!r}")
    result = _validate(source.data[:p])
    if result is None:
        return  # cut inside the ISA: not X12 at all
    assert not result.valid, "truncated interchange accepted"


# -- (c) no member data in finding messages -------------------------------------------------------

@MUTATIONS
@given(data=st.data())
def test_messages_never_quote_member_names_or_cins(source, data):
    kinds, mutant = data.draw(mutated(source))
    result = _validate(mutant)
    if result is None:
        return
    secrets = source.member_names | source.cins
    leaks = [(f.rule, f.location, f.message) for f in result.findings
             if any(s in f.message for s in secrets)]
    assert not leaks, f"member data in finding messages: {leaks}"
