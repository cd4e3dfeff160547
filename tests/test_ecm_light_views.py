"""The ECM rules' rows of claims read light (claims837.RulesSpansCollector, used when the rules
run in their worker and the claims only go to a report's counts: text rows, shipped marshal'd,
which the worker views with claims837.light_claim_row, or view rows) are exactly the views and
places the full reading gives
(ClaimCollector with keep_encounters="rules", viewed as the worker takes them): the same
claims, in the same order, over synthetic 837Ps with odd values, segments inserted inside
claims (other payers' loops, rendering providers of claims and lines, repeated SV1 and DTP,
date ranges, segments the light reading skips) and random defects, drawn by hypothesis."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model.view import view_of
from gateway.x12.acks import ClaimSpans
from gateway.ecm.pipelined import _pack, _unpack
from gateway.x12.claims837 import ClaimCollector, RulesSpansCollector, light_claim_row
from gateway.x12.reader import X12Reader

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from test_x12_fast_paths import _IN_CLAIM, _ODD, _claim_defects, _odd_claims  # noqa: E402
from x12_mutants import _join, _segments  # noqa: E402

_VIEW_PARTS = ["NM1*82*1*ROE*RAY****XX*1999999984", "NM1*82*2*CLINIC*****XX*",
               "SBR*S*18*******MC", "NM1*PR*2*OTHER PAYER*****PI*99", "LX*7",
               "SV1*HC:G9008:U1:GQ*25*UN*2*11**1", "SV1*HC:T2041:U6*10*UN*1.50***1",
               "DTP*472*RD8*20260901-20260905", "DTP*472*D8*20260903", "DTP*472*RD8*20260902-",
               "DTP*431*D8*20260101", "N3*2 OAK ST", "N4*FRESNO*CA*93701", "AMT*D*10",
               "NTE*ADD*NOTE", "K3*NOTE",
               # (light_claim_row: an NM1*82 short of NM109, a DTP*472 whose date cannot be
               # read (the full reading fails on it inside a line, passes it over outside),
               # a negative LX01, a REF, PRV and HI it passes over by their first letter)
               "NM1*82*1*ROE", "DTP*472*D8*20261340", "DTP*472*RD8*20260901-2026", "LX*-1",
               "REF*9F*X", "PRV*PE*PXC*171M00000X", "HI*ABK:Z5900"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> list[str]:
    from synth837 import write_file

    path = tmp_path_factory.mktemp("synth") / "synth-120.x12"
    write_file(path, 120, seed=3)
    return _segments(path.read_text())[0]


def _row(claim) -> tuple:
    encounter = claim.encounter
    view = encounter if encounter.__class__ is tuple else view_of(encounter)
    return (view, claim.transaction, claim.index, claim.subscriber_index, claim.start,
            claim.claim_id, list(claim.line_refs))


def rows_both_ways(data: bytes, as_text: bool = True) -> tuple[list, list, int]:
    """(light, full) rows in claim order, and how many claims were read light (``as_text``:
    shipped as text rows and viewed as the worker views them, else as view rows)."""
    light: list = []
    full: list = []
    read_light = [0]

    rows: list = []
    meanings: dict = {}  # (what the stream's segment texts mean, as the worker memoises them)

    def on_claim(claim):  # (a record: the claims read light before it go first)
        on_full()
        if claim.encounter is not None:
            light.append(_row(claim))

    def on_full():
        read_light[0] += len(rows)
        if not rows:
            return
        shipped = _pack(rows)  # (as the pipe ships a batch: text rows marshal'd)
        assert shipped[:1] == (b"M" if as_text else b"P")
        for row in _unpack(shipped):
            assert (row[0].__class__ is str) == as_text  # (a text row: the claim's text)
            if as_text:  # (viewed in the worker)
                row = light_claim_row(row, meanings)
            light.append((row[0], *row[1:6], list(row[6])))
        rows.clear()

    with X12Reader(data) as reader:
        spans = ClaimSpans()
        collector = RulesSpansCollector(reader.delimiters, on_claim, spans, rows, 3, on_full)
        collector.as_text = as_text
        for seg in reader:
            collector.feed(seg)
        collector.finish()
        on_full()
    with X12Reader(data) as reader:
        collector = ClaimCollector(
            reader.delimiters, lambda c: c.encounter is not None and full.append(_row(c)),
            keep_encounters="rules")
        for seg in reader:
            collector.feed(seg)
        collector.finish()
    return light, full, read_light[0]


@pytest.mark.parametrize("as_text", [True, False], ids=["text", "views"])
def test_clean_file_every_claim_read_light(synth, as_text):
    light, full, read_light = rows_both_ways(_join(synth), as_text)
    assert light == full
    assert read_light == len(full) == 120


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**9), value=_ODD,
       inserted=st.lists(st.sampled_from(_IN_CLAIM + _VIEW_PARTS * 3), max_size=8))
def test_rows_of_claims_read_light_are_the_full_readings(synth, seed, value, inserted):
    rng = random.Random(seed)
    segs = _claim_defects(synth, rng, value) if rng.random() < 0.5 else list(synth)
    data = _join(_odd_claims(segs, rng, inserted, reach=8))
    for as_text in (True, False):
        light, full, read_light = rows_both_ways(data, as_text)
        assert light == full
        assert read_light > 0 or not full
