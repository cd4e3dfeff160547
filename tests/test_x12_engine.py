"""The native X12 engine: map compiler, 00405 interchanges with a map of our own, look-alike
segments, and agreement with the pyx12 adapter on every fixture and the public corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.x12.engine import MapError, load
from gateway.x12.engine.maps import _compile_file
from gateway.x12.envelope import _guide, envelope_profile
from gateway.x12.validate import validate_x12

ROOT = Path(__file__).resolve().parent.parent
MINI_MAP = ROOT / "fixtures" / "x12" / "maps" / "mini-274.xml"
CORPUS = Path("/work/shared/corpora/x12-stupidedi")
# the one documented disagreement: pyx12 raises IndexError on a composite with too many
# components (the adapter reports X12-IG-ENGINE); we report the segment and the element
KNOWN_PYX12_CRASHES = {"history-3daab210/277ca-X214/fail/1.edi"}


def ig_findings(result) -> list[tuple[str, str, int | None]]:
    return [(f.rule, f.location, f.segment) for f in result.findings
            if f.rule.startswith("X12-IG-")]


@pytest.mark.parametrize("guide", sorted(envelope_profile().guides))
def test_every_registered_guide_compiles(guide):
    entry = envelope_profile().guides[guide]
    maps = entry["map"].values() if isinstance(entry["map"], dict) else [entry["map"]]
    for name in maps:
        root = load(name)
        segments = [n for n in root.nodes if n.is_segment]
        assert segments, name
        # every segment node has a fast pattern except DTPs whose format is decided per value
        assert sum(1 for s in segments if s.fast is None) <= len(segments) // 10


def test_a_map_that_breaks_the_schema_is_refused(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text(MINI_MAP.read_text().replace("<usage>R</usage><pos>0100</pos><max_use>1",
                                                "<usage>Q</usage><pos>0100</pos><max_use>1", 1))
    with pytest.raises(MapError, match="map.xsd"):
        _compile_file(bad)


def isa(version: str) -> str:
    return (f"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261201*1200*"
            f"{'^' if version != '00401' else 'U'}*{version}*000000001*0*P*:~")


def mini_274(nm1: str, version: str = "00405") -> bytes:
    body = ["ST*274*0001*004050TEST", "BHT*0007*00*REF1*20261201*1200", "HL*1**20*0", nm1]
    segs = [isa(version), "GS*PW*SENDER*RECEIVER*20261201*1200*1*X*004050TEST", *body,
            f"SE*{len(body) + 1}*0001", "GE*1*1", "IEA*1*000000001"]
    return ("~".join(s.rstrip("~") for s in segs) + "~").encode()


@pytest.fixture
def mini_guide(monkeypatch):
    monkeypatch.setitem(envelope_profile().guides, "004050TEST", _guide(
        {"transaction": "274", "kind": "274", "map": str(MINI_MAP), "name": "test 274"}))


def test_00405_interchange_with_our_own_map_is_clean(mini_guide):
    result = validate_x12(mini_274("NM1*PR*2*DHCS*****PI*12345"))
    assert result.findings == []


def test_00405_interchange_with_our_own_map_reports_element_errors(mini_guide):
    result = validate_x12(mini_274("NM1*PR*2*DHCS*****PI"))
    assert ig_findings(result) == [("X12-IG-SEG-8", "ISA#1/GS#1/ST#1/2100A[1]/NM1", 6)]
    result = validate_x12(mini_274("NM1*ZZ*2*DHCS"))
    assert ig_findings(result) == [("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2000A[1]/NM1", 7),
                                   ("X12-IG-SEG-3", "ISA#1/GS#1/ST#1/2000A[1]/NM1", 7)] or \
        ig_findings(result)[0][0] == "X12-IG-SEG-1"


def test_the_pyx12_engine_still_refuses_what_it_cannot_read(mini_guide):
    result = validate_x12(mini_274("NM1*PR*2*DHCS*****PI"), engine="pyx12")
    assert ig_findings(result) == []  # pyx12 does not read 00405: no guide validation at all


# -- look-alike segments: pyx12 false positives we do not copy --------------------------------
@pytest.mark.skipif(not CORPUS.exists(), reason="public corpus not present")
@pytest.mark.parametrize("name", ["837p-X222A1/pass/oxygen.edi",
                                  "837p-X222A1/pass/wheelchair.edi",
                                  "999-X231A1/pass/response-to-functional-group-containing-3-837s.edi"])
def test_look_alike_segments_are_resolved_by_trying_every_candidate(name):
    assert ig_findings(validate_x12(str(CORPUS / name))) == []


def test_a_dme_pwk_with_a_bad_code_is_still_reported():
    clean = (ROOT / "fixtures" / "837p" / "ecm-clean.x12").read_bytes().decode()
    bad = clean.replace("~LX*1~", "~LX*1~", 1)
    first_sv1 = bad.index("SV1*")
    end = bad.index("~", first_sv1)
    bad = bad[:end + 1] + "PWK*CT*ZZ~" + bad[end + 1:]
    bad = _fix_se(bad)
    found = ig_findings(validate_x12(bad.encode()))
    assert [f[0] for f in found] == ["X12-IG-ELE-7"]
    assert found[0][1].endswith("/PWK02")


def _fix_se(text: str) -> str:
    segs = text.split("~")
    count = 0
    for i, s in enumerate(segs):
        if s.startswith("ST*"):
            count = 1
        elif s.startswith("SE*"):
            count += 1
            parts = s.split("*")
            parts[1] = str(count)
            segs[i] = "*".join(parts)
        elif count:
            count += 1
    return "~".join(segs)


# -- agreement with pyx12 ------------------------------------------------------------------------
def _files() -> list[Path]:
    found = sorted((ROOT / "fixtures").rglob("*.x12"))
    if CORPUS.exists():
        found += sorted(CORPUS.rglob("*.edi"))
    return found


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_native_findings_equal_the_pyx12_adapter(path):
    native = validate_x12(str(path))
    oracle = validate_x12(str(path), engine="pyx12")
    relative = str(path.relative_to(CORPUS)) if CORPUS in path.parents else path.name
    if relative in KNOWN_PYX12_CRASHES:
        assert "X12-IG-ENGINE" in {f[0] for f in ig_findings(oracle)}
        assert "X12-IG-ENGINE" not in {f[0] for f in ig_findings(native)}
        return
    ours = ig_findings(native)
    theirs = ig_findings(oracle)
    # the adapter drops every structure error pyx12 finds at SE: required segments and loops
    # never seen. We report them (bare pyx12 does too); nothing else may differ.
    ends = {ts.end for ic in native.interchanges for g in ic.groups for ts in g.transactions}
    extra = [f for f in ours if f not in theirs]
    assert all(f[0] == "X12-IG-SEG-3" and f[2] in ends for f in extra), extra
    assert [f for f in ours if f not in extra] == theirs


def test_streamed_verdict_counts_equal_judge():
    """The CLI counts accepted/rejected claims from compact spans (bounded memory); the
    decision is judge's, on clean, defective and envelope-broken files."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from x12_mutants import mutants

    from gateway.x12.acks import ClaimSpans, judge, verdict_counts

    cases = [p.read_bytes() for p in sorted((ROOT / "fixtures" / "837p").glob("*.x12"))]
    cases += [data for _, data in mutants(99, 60)]
    for data in cases:
        result = validate_x12(data)
        spans = ClaimSpans()
        for claim in result.claims:
            spans.add(claim)
        accepted = len(judge(result).accepted_claims)
        assert verdict_counts(result, spans) == (accepted, len(result.claims) - accepted)


def _three_sets() -> bytes:
    """ecm-claim-defects with its transaction set three times (ST02 0001-0003)."""
    text = (ROOT / "fixtures" / "837p" / "ecm-claim-defects.x12").read_text()
    start = text.index("ST*837*")
    end = text.index("GE*")
    body = text[start:end]
    sets = "".join(body.replace("*0001*", f"*000{n}*").replace("*0001~", f"*000{n}~")
                   for n in (1, 2, 3))
    tail = text[end:].replace("GE*1*", "GE*3*", 1)
    return (text[:start] + sets + tail).encode()


def test_jobs_give_the_same_findings_in_the_same_order(tmp_path):
    path = tmp_path / "three.x12"
    path.write_bytes(_three_sets())
    one = validate_x12(str(path))
    assert len([ts for ic in one.interchanges for g in ic.groups for ts in g.transactions]) == 3
    assert any(f.rule.startswith("X12-IG-") for f in one.findings)
    for jobs in (2, 3):
        many = validate_x12(str(path), jobs=jobs)
        assert [(f.rule, f.location, f.segment, f.message, f.context) for f in many.findings] \
            == [(f.rule, f.location, f.segment, f.message, f.context) for f in one.findings]


def test_cli_jobs_output_is_identical(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "three.x12"
    path.write_bytes(_three_sets())
    runs = [subprocess.run([sys.executable, "-m", "gateway.cli", "validate", "--format", "json",
                            "--jobs", jobs, str(path)], capture_output=True, text=True)
            for jobs in ("1", "2")]
    assert runs[0].returncode == runs[1].returncode == 1
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stderr == runs[1].stderr == ""  # no progress bar when not on a terminal


@pytest.mark.parametrize("where", ["moved", "extra"])
def test_a_set_after_its_interchange_ended_is_an_envelope_finding_not_a_crash(tmp_path, where):
    """An IEA before the ST (moved there, or an extra one): the transaction set is outside any
    interchange. The envelope reports the stray ST; the guide engine, which needs the
    interchange's receiver for the SNIP partner rules, leaves that set alone (it used to raise
    AttributeError, an internal error for the user)."""
    data = (ROOT / "fixtures" / "837p" / "ecm-claim-defects.x12").read_text()
    term = data[105]
    segments = [s for s in data.split(term) if s.strip()]
    iea = next(s for s in segments if s.strip().startswith("IEA"))
    if where == "moved":
        segments.remove(iea)
    st = next(i for i, s in enumerate(segments) if s.strip().startswith("ST"))
    segments.insert(st, iea)
    path = tmp_path / "iea-first.x12"
    path.write_text(term.join(segments) + term)
    for jobs in (1, 2):
        result = validate_x12(str(path), jobs=jobs)
        stray = [f for f in result.findings if f.rule == "X12-ENV-019" and f.segment == st + 2]
        assert [f.location for f in stray] == ["ISA#1/ST"]
        assert not [f for f in result.findings if f.rule == "X12-IG-ENGINE"]


def test_node_memos_never_serve_a_dropped_nodes_entry():
    """fast_pattern and post_function memoise by the node's id; the entry holds its node, so a
    node made after another was dropped (often at the same id) gets its own pattern."""
    from gateway.x12.engine import elements
    from gateway.x12.engine.nodes import Segment

    for i in range(30):
        node = Segment.__new__(Segment)
        node.fast = f"ZZ{i:02d}"  # a pattern of its own
        node.post = (("syntax", "R", (1 + i % 2, 3)),)
        pattern = elements.fast_pattern(node, "00501", "*", ":", "~")
        assert pattern is not None and pattern.pattern == f"ZZ{i:02d}"
        post = elements.post_function(node, ":")
        fields = ["ZZ", "x" if i % 2 == 0 else "", "x" if i % 2 else ""]
        assert post(fields) is True  # R over (1, 3) or (2, 3): the present one counts
        del node, pattern, post
