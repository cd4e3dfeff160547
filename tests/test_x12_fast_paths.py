"""The X12 engine's fast paths give exactly the findings of the detailed paths they shortcut:

- the (node, segment text) memo that replays a clean segment's plan inline, vs. tracing and
  checking every segment;
- the compiled fast pattern per segment node, vs. the detailed element checks alone;
- the post-checks compiled into one function per node, vs. :func:`post_ok`;
- claim reading without building the model (:meth:`ClaimCollector._surely_readable`,
  :func:`surely_valid`), vs. building and validating every encounter.

Files are synthetic 837Ps with random defects (tests/x12_mutants.py) drawn by hypothesis.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model.encounter import Encounter
from gateway.x12.engine import load
from gateway.x12.engine import validator as validator_module
from gateway.x12.engine.elements import post_function, post_ok
from gateway.x12.validate import validate_x12

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from x12_mutants import _join, _mutate, _segments  # noqa: E402

EXAMPLES = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> list[str]:
    """The segments of a clean 120-claim synthetic 837P (bench/synth837.py)."""
    from synth837 import write_file

    path = tmp_path_factory.mktemp("synth") / "synth-120.x12"
    write_file(path, 120, seed=3)
    return _segments(path.read_text())[0]


def mutated(segs: list[str], seed: int, defects: int) -> bytes:
    rng = random.Random(seed)
    segs = list(segs)
    for _ in range(defects):
        _mutate(rng, segs)
    return _join(segs)


def signature(result) -> list[tuple]:
    return [(f.rule, f.location, f.message, f.segment, f.severity.value,
             sorted((f.context or {}).items())) for f in result.findings]


@EXAMPLES
@given(seed=st.integers(0, 10**9), defects=st.sampled_from([1, 3, 10, 30]))
def test_memo_replay_finds_what_the_detailed_walk_finds(synth, monkeypatch, seed, defects):
    data = mutated(synth, seed, defects)
    fast = signature(validate_x12(data))
    with monkeypatch.context() as m:
        m.setattr(validator_module, "MEMO_SIZE", 0)  # every segment traced and checked
        slow = signature(validate_x12(data))
    assert fast == slow


@EXAMPLES
@given(seed=st.integers(0, 10**9), defects=st.sampled_from([1, 5, 20]))
def test_fast_patterns_find_what_the_detailed_checks_find(synth, monkeypatch, seed, defects):
    data = mutated(synth, seed, defects)
    fast = signature(validate_x12(data))
    with monkeypatch.context() as m:
        m.setattr(validator_module, "MEMO_SIZE", 0)
        m.setattr(validator_module, "fast_pattern", lambda *a, **k: None)  # detailed only
        slow = signature(validate_x12(data))
    assert fast == slow


def _post_nodes():
    root = load("837.5010.X222.A1.xml")
    return [n for n in root.nodes if n.is_segment and n.post]


_VALUES = st.sampled_from(["", "X", "12", "ABK:I10", "HC:G9012:U1", "A:B:C:D", "0", "9Z"])


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 10**6), values=st.lists(_VALUES, max_size=14))
def test_compiled_post_checks_equal_post_ok(index, values):
    nodes = _post_nodes()
    node = nodes[index % len(nodes)]
    fields = [node.id, *values]
    assert post_function(node, ":")(fields) == post_ok(node, fields, ":")


def _note_nodes():
    from gateway.x12.engine.elements import syntax_notes

    nodes = []
    for name in ("837.5010.X222.A1.xml", "835.5010.X221.A1.xml", "834.5010.X220.A1.xml",
                 "837Q3.I.5010.X223.A1.xml", "999.5010.xml"):
        nodes += [n for n in load(name).nodes if n.is_segment and n.post]
    return [(n, syntax_notes(n)) for n in nodes]


@settings(max_examples=400, deadline=None)
@given(index=st.integers(0, 10**6), values=st.lists(st.sampled_from(["", "X", "1"]),
                                                     max_size=70))
def test_syntax_notes_on_bit_masks_equal_post_ok(index, values):
    """The validator evaluates nodes whose post-checks are all syntax notes on a bit mask of
    the elements present (elements.syntax_notes, validator._notes_ok): same answers."""
    nodes = _note_nodes()
    node, notes = nodes[index % len(nodes)]
    fields = [node.id, *values]
    expected = post_ok(node, fields, ":")
    if notes is None:
        assert post_function(node, ":")(fields) == expected
    else:
        assert validator_module._notes_ok(notes, fields) == expected


def test_most_post_checks_are_syntax_notes():
    found = [notes for _, notes in _note_nodes()]
    assert sum(n is not None for n in found) > len(found) // 2
    assert {kind for notes in found if notes for kind, *_ in notes} == {0, 1, 2, 3, 4}


# -- claim reading without the model -----------------------------------------------------------
_ODD = st.sampled_from(["", "0", "1", "25", "-3", "1.5", "1.", ".5", "1e3", "NaN", "Infinity",
                        " 1", "+2", "1_0", "\u0661", "12345678901234567", "20260230",
                        "20261301", "2026091", "20260912", "20260912-20260901", "ABC"])


def _odd_claims(segs: list[str], rng: random.Random, inserted: list[str],
                reach: int) -> list[str]:
    """``segs`` with each of ``inserted`` put 1 to ``reach`` segments after a CLM, then, three
    times in ten, 1 to 5 random mutations (the drawing shared by the light-reading tests)."""
    segs = list(segs)
    for text in inserted:  # somewhere after a CLM
        claims = [i for i, s in enumerate(segs) if s.startswith("CLM*")]
        segs.insert(rng.choice(claims) + rng.randint(1, reach), text)
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 5)):
            _mutate(rng, segs)
    return segs


def _claim_defects(segs: list[str], rng: random.Random, draw) -> list[str]:
    """Odd values in the elements the claim model converts: amounts, units, dates, line
    numbers, pointers, diagnosis lists, addresses."""
    segs = list(segs)
    targets = [i for i, s in enumerate(segs) if s.split("*")[0] in (
        "CLM", "SV1", "DTP", "LX", "HI", "N4", "DMG", "N3")]
    for i in rng.sample(targets, min(len(targets), 6)):
        fields = segs[i].split("*")
        kind = fields[0]
        if kind == "SV1" and rng.random() < 0.3:
            fields[-1 if len(fields) <= 7 else 7] = ":".join(["1"] * rng.randint(1, 6))
        elif kind == "HI" and rng.random() < 0.3:
            fields[1:] = [f"ABF:Z{n:04d}" for n in range(rng.randint(0, 14))] or ["BAD"]
        elif kind in ("N3", "N4") and rng.random() < 0.3:
            segs[i] = "NTE*ADD*NOTE"
            continue
        else:
            k = rng.randrange(1, len(fields))
            fields[k] = draw
        segs[i] = "*".join(fields)
    return segs


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**9), value=_ODD)
def test_claims_judged_without_the_model_get_the_models_verdict(synth, seed, value):
    data = _join(_claim_defects(synth, random.Random(seed), value))
    built = validate_x12(data, keep_encounters=True)  # every encounter built and validated
    judged = validate_x12(data)  # the surely-readable shortcut
    assert [(c.start, c.problem) for c in judged.claims] == \
        [(c.start, c.problem) for c in built.claims]
    assert signature(judged) == signature(built)


def test_the_claim_model_is_the_one_the_shortcut_was_written_for():
    """claims837.surely_valid / ClaimCollector._surely_readable encode which constraints of
    gateway/model/encounter.py the collected data can break. When the model changes, re-check
    them, then update this fingerprint."""
    schema = json.dumps(Encounter.model_json_schema(), sort_keys=True).encode()
    assert hashlib.sha256(schema).hexdigest()[:16] == "e0d84f790da4ec57"


def test_repeats_counted_on_the_memo_path_are_reported(synth, monkeypatch):
    """A segment over its maximum use and a loop over its maximum repeat, both reached by
    replaying memoised plans (the same text from the same node)."""
    segs = list(synth)
    ref = next(i for i, s in enumerate(segs) if s.startswith("REF*G1*"))
    segs[ref:ref + 1] = [segs[ref]] * 4  # 2300 REF*G1 max use 1
    lx = next(i for i, s in enumerate(segs) if s.startswith("LX*"))
    end = next(i for i in range(lx + 1, len(segs)) if segs[i].startswith(("LX*", "CLM*", "HL*")))
    segs[lx:end] = segs[lx:end] * 52  # 2400 repeats at most 50 times
    data = _join(segs)
    fast = signature(validate_x12(data))
    rules = {f[0] for f in fast}
    assert {"X12-IG-SEG-5", "X12-IG-SEG-4"} <= rules, rules
    with monkeypatch.context() as m:
        m.setattr(validator_module, "MEMO_SIZE", 0)
        assert signature(validate_x12(data)) == fast


def test_a_level_changed_after_its_first_claim_is_judged_again(synth):
    """The readability of the billing and subscriber levels is decided once per pair of levels
    (ClaimCollector._levels_readable); an HL 23 keeps the subscriber level open, and segments
    after it may still change it (here a second N3 whose address then lacks its N4): the
    next claim is judged on the level as it is then, as the model judges it."""
    segs = list(synth)
    second = claims = 0  # a claim that follows another one of the same subscriber
    for i, text in enumerate(segs):
        if text.startswith("HL*"):
            claims = 0
        elif text.startswith("CLM*"):
            if claims:
                second = i
                break
            claims += 1
    segs[second:second] = ["HL*99*2*23*0", "PAT*19", "NM1*IL*1*DOE*JANE****MI*90000001A",
                           "N3*1 ELM ST"]
    data = _join(segs)
    built = validate_x12(data, keep_encounters=True)
    judged = validate_x12(data)
    assert [(c.start, c.problem) for c in judged.claims] == \
        [(c.start, c.problem) for c in built.claims]
    assert any(c.problem for c in judged.claims)  # the changed level made a claim unreadable


# -- the light claim reading (claims that only go to a report's counts) -----------------------
def _spans_both_ways(data: bytes):
    """(light, full): the ClaimSpans and findings of a validation whose claims only go to the
    spans (ClaimCollector reads them light, records only for the claims in doubt), and of one
    where every claim is read in full and then added (any other on_claim)."""
    from gateway.x12.acks import ClaimSpans

    light, full = ClaimSpans(), ClaimSpans()
    light_result = validate_x12(data, on_claim=light.add)
    full_result = validate_x12(data, on_claim=lambda claim: full.add(claim))

    def shown(spans):
        return (list(spans.ranges), [spans.keys[i] for i in spans.transactions],
                bytes(spans.problems))

    return (shown(light), signature(light_result)), (shown(full), signature(full_result))


# segments the light reading hands over to the full one when they come inside a claim (they
# may change the header or the levels), and others it follows
_IN_CLAIM = ["NM1*41*2*OTHER SUBMITTER*****46*X1", "NM1*40*2*OTHER RECEIVER*****46*X2",
             "PER*IC*NAME*TE*9165550100", "DMG*D8*20260230*F", "DMG*D8*19800101*F",
             "BHT*0019*00*1*2026*0930*RP", "SBR*S*18*******MC", "NM1*IL*1*DOE*JANE****MI*1",
             "N3*1 ELM ST", "N4*MODESTO*CA*9535", "REF*F8*X", "PRV*PE*PXC*171M00000X",
             "AMT*D*10", "NTE*ADD*NOTE", "SV1*HC:G9012*25*UN*1***1", "DTP*472*D8*20261301",
             "DTP*472*RD8*20260101-", "DTP*472*RD8*20260101-2026", "LX*", "LX*A", "HI*BF:Z00",
             "HI*ABK:I10" + "*ABF:Z9114" * 12, "HL*9*1*23*0", "NM1*82*1*X*Y****XX*1"]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**9), value=_ODD,
       inserted=st.lists(st.sampled_from(_IN_CLAIM), max_size=4))
def test_claims_read_light_get_the_full_readings_spans_and_findings(synth, seed, value,
                                                                     inserted):
    rng = random.Random(seed)
    segs = _odd_claims(_claim_defects(synth, rng, value), rng, inserted, reach=6)
    light, full = _spans_both_ways(_join(segs))
    assert light == full


def test_a_long_claim_is_read_in_full_and_counted_the_same(synth):
    segs = list(synth)
    lx = next(i for i, s in enumerate(segs) if s.startswith("LX*"))
    line = segs[lx:lx + 3]  # LX, SV1, DTP
    segs[lx:lx + 3] = [part for n in range(1, 80) for part in
                       [f"LX*{n}", *line[1:]]]  # 79 lines: more than the model takes
    light, full = _spans_both_ways(_join(segs))
    assert light == full
    assert 1 in light[0][2]  # that claim cannot be read (and the others can)


@settings(max_examples=200, deadline=None)
@given(codes=st.sets(st.text(alphabet="AB0:", min_size=1, max_size=3), min_size=1,
                     max_size=8))
def test_code_lists_as_trees_match_the_same_strings_first_the_longest(codes):
    """elements._alternation writes a code list as a tree of common beginnings: the same
    strings as the plain alternation, longest first (inside possessive groups the first
    match is the one kept)."""
    import itertools
    import re

    from gateway.x12.engine.elements import _alternation

    ordered = sorted(codes, key=lambda c: (-len(c), c))
    tree = re.compile(_alternation(ordered))
    plain = re.compile("(?:" + "|".join(re.escape(c) for c in ordered) + ")")
    for n in range(5):
        for chars in itertools.product("AB0:", repeat=n):
            text = "".join(chars)
            assert bool(tree.fullmatch(text)) == bool(plain.fullmatch(text))
            first, other = tree.match(text), plain.match(text)
            assert (first.end() if first else -1) == (other.end() if other else -1)


def _day_reads(text: str) -> bool:
    from gateway.x12.claims837 import _day

    try:
        _day(text)
    except (ValueError, TypeError):
        return False
    return True


def test_birth_dates_checked_by_hand_as_the_date_reading_decides():
    """claims837._is_day (the light reading's birth-date check, by hand for ASCII digits)
    decides as claims837._day does: every day of leap and common years around the century
    rules, every month and day number 00-99 of a few years, year 0 and 9999."""
    import datetime

    from gateway.x12.claims837 import _is_day

    texts = []
    for year in (1, 4, 100, 1899, 1900, 1996, 1999, 2000, 2023, 2024, 2100, 2400, 9999, 0):
        texts += [f"{year:04d}{month:02d}{day:02d}" for month in range(100)
                  for day in range(100)]
    day = datetime.date(1899, 12, 1)
    while day.year < 1901:
        texts.append(day.strftime("%Y%m%d"))
        day += datetime.timedelta(days=1)
    for text in texts:
        assert _is_day(text) == _day_reads(text), text


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(alphabet="0123456789", min_size=6, max_size=10),
                      st.text(min_size=0, max_size=10),
                      st.text(alphabet="0123456789\u0661\u0662\u00b2 +-_", min_size=8,
                              max_size=8)))
def test_birth_dates_by_hand_and_by_the_date_reading_agree_on_any_text(text):
    from gateway.x12.claims837 import _is_day

    assert _is_day(text) == _day_reads(text)


# -- HL and CLM: the rest after the first element memoised, the first element checked alone ---
def _head_nodes():
    from gateway.x12.engine.elements import head_source

    root = load("837.5010.X222.A1.xml")
    return [n for n in root.nodes if not n.is_loop and n.id in ("HL", "CLM")
            and head_source(n, "00501", "*", ":", "~") is not None]


def test_hl_and_clm_have_a_first_element_pattern():
    assert {n.id for n in _head_nodes()} == {"HL", "CLM"}


@settings(max_examples=300, deadline=None)
@given(first=st.text(alphabet="AZ09 *:~^-.|\u00e9", max_size=40),
       rest=st.sampled_from(["*50***99:B:1*Y*A*Y*Y", "*125***12:B:1*Y*A*Y*Y", "", "*",
                             "*50***99:B:1*Y*A*Y*Y*", "*1*22*0", "**20*1", "*1*22*0*",
                             "*2*23*0", "*x*22*0", "*50***99:B:7*Y*A*Y*Y*P"]),
       separators=st.sampled_from([("*", ":", "~"), ("|", "^", "\n"), ("-", ":", "~")]))
def test_the_first_element_alone_decides_as_the_whole_pattern_does(first, rest, separators):
    """validator._data_segment for HL and CLM: once a rest passed the node's fast pattern (with
    some first element), the fast pattern accepts first element + that rest exactly when the
    first element's own pattern (elements.head_source) accepts the first element."""
    import re

    from gateway.x12.engine.elements import fast_source, head_source

    element, component, segment = separators
    rest = rest.replace("*", element).replace(":", component)
    for node in _head_nodes():
        whole = re.compile(fast_source(node, "00501", element, component, segment),
                           re.ASCII | re.S)
        head = re.compile(head_source(node, "00501", element, component, segment),
                          re.ASCII | re.S)
        known = next((value for value in ("1", "ECM0700000001", "A B")
                      if whole.fullmatch(node.id + element + value + rest)), None)
        if known is None or element in first:
            continue  # (a rest no first element passes with; fields[1] holds no separator)
        assert (whole.fullmatch(node.id + element + first + rest) is not None) == \
            (head.fullmatch(first) is not None), (node.parent.id, first, rest)
