"""The ISA/GS date and time checks (gateway/x12/envelope.py ``_parses``) decide by hand what
``datetime.strptime`` decides, without paying its first use: the two must agree on every input.
Exhaustive where the space is small, hypothesis over digit strings elsewhere, and the corners
named: Feb 29 (1900-rule years through %y: 00 -> 2000, 68 -> 2068, 69 -> 1969, 99 -> 1999),
year 0000, hour 24, minute/second 60 and 61 (strptime's %S takes 61, datetime does not)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.x12.envelope import _DATE_FORMATS, _parses

PATTERNS = ("%y%m%d", "%Y%m%d", "%H%M", "%H%M%S")
LENGTH = {"%y%m%d": 6, "%Y%m%d": 8, "%H%M": 4, "%H%M%S": 6}


def strptime_accepts(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def test_the_patterns_are_the_ones_the_envelope_uses():
    assert {pattern for pattern, _ in _DATE_FORMATS.values()} == set(PATTERNS)


def test_hhmm_every_value():
    for n in range(10_000):
        text = f"{n:04d}"
        assert _parses(text, "%H%M") == strptime_accepts(text, "%H%M"), text


def test_yymmdd_every_year_month_and_day():
    for yy in range(100):
        for mm in range(14):
            for dd in range(33):
                text = f"{yy:02d}{mm:02d}{dd:02d}"
                assert _parses(text, "%y%m%d") == strptime_accepts(text, "%y%m%d"), text


def test_ccyymmdd_leap_years_and_month_ends():
    for year in (0, 1, 4, 100, 1600, 1700, 1899, 1900, 1969, 1999, 2000, 2024, 2068, 2100, 2400, 9999):
        for mm in range(14):
            for dd in range(33):
                text = f"{year:04d}{mm:02d}{dd:02d}"
                assert _parses(text, "%Y%m%d") == strptime_accepts(text, "%Y%m%d"), text


def test_hhmmss_every_second_of_some_minutes():
    for hh in (0, 9, 19, 23, 24, 29, 99):
        for mm in (0, 5, 59, 60, 61, 99):
            for ss in range(100):
                text = f"{hh:02d}{mm:02d}{ss:02d}"
                assert _parses(text, "%H%M%S") == strptime_accepts(text, "%H%M%S"), text


@pytest.mark.parametrize("text,fmt,ok", [
    ("000229", "%y%m%d", True), ("680229", "%y%m%d", True), ("690229", "%y%m%d", False),
    ("720229", "%y%m%d", True), ("990229", "%y%m%d", False), ("19000229", "%Y%m%d", False),
    ("20000229", "%Y%m%d", True), ("00000101", "%Y%m%d", False), ("2400", "%H%M", False),
    ("235960", "%H%M%S", False), ("235961", "%H%M%S", False), ("235959", "%H%M%S", True),
])
def test_named_corners(text, fmt, ok):
    assert _parses(text, fmt) is ok
    assert strptime_accepts(text, fmt) is ok


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(PATTERNS), st.data())
def test_any_digit_string_of_the_length_used(fmt, data):
    text = data.draw(st.text("0123456789", min_size=LENGTH[fmt], max_size=LENGTH[fmt]))
    assert _parses(text, fmt) == strptime_accepts(text, fmt)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(PATTERNS), st.text(st.characters(), max_size=10))
def test_any_text_at_all(fmt, text):
    """Other lengths and non-ASCII digits (``"²"``, ``"٢"``) are strptime's to judge."""
    assert _parses(text, fmt) == strptime_accepts(text, fmt)
