"""verdict_counts' search per error (acks._errors_by_sorted_ranges) against the search per claim
it replaces where the claims' ranges never go back: the same claims errored, the same errors
covered, over random files of claims, HL levels (some missing) and error ordinals."""

from __future__ import annotations

import random
from array import array

import pytest

from gateway.x12.acks import _errors_by_sorted_ranges


def per_claim(ranges, ordinals):
    errored, covered = bytearray(len(ranges) // 6), bytearray(len(ordinals))
    for claim in range(len(ranges) // 6):
        for k in (0, 2, 4):
            lo, hi = ranges[claim * 6 + k], ranges[claim * 6 + k + 1]
            for i, o in enumerate(ordinals):
                if lo <= o <= hi:
                    errored[claim] = 1
                    covered[i] = 1
    return errored, covered


def random_file(rng: random.Random, missing: bool) -> array:
    """Claims as ClaimCollector records them: billing level, subscriber level, claim."""
    ranges = array("i")
    ordinal = 3
    billing = subscriber = (0, -1)
    for _ in range(rng.randint(0, 60)):
        if rng.random() < 0.1 or billing == (0, -1):
            ordinal += 1
            billing = (ordinal, ordinal + rng.randint(0, 4))
            ordinal = billing[1]
            subscriber = (0, -1)
        if rng.random() < 0.4 or subscriber == (0, -1):
            ordinal += 1
            subscriber = (ordinal, ordinal + rng.randint(0, 6))
            ordinal = subscriber[1]
        start = ordinal + 1
        ordinal = start + rng.randint(0, 12)
        sub = (0, -1) if missing and rng.random() < 0.2 else subscriber
        ranges.extend((start, ordinal, *billing, *sub))
    return ranges


@pytest.mark.parametrize("seed", range(300))
def test_search_per_error_marks_what_the_search_per_claim_does(seed):
    rng = random.Random(seed)
    ranges = random_file(rng, missing=seed % 3 == 0)
    top = max(ranges[1::6], default=10) + 5
    ordinals = sorted(rng.randint(1, top) for _ in range(rng.randint(1, 12)))
    errored, covered = bytearray(len(ranges) // 6), bytearray(len(ordinals))
    if _errors_by_sorted_ranges(ranges, ordinals, errored, covered):
        assert (errored, covered) == per_claim(ranges, ordinals)
    else:  # a column goes back (a missing level): nothing marked, the caller searches per claim
        assert not any(errored) and not any(covered)
        assert seed % 3 == 0


def test_a_missing_level_falls_back():
    ranges = array("i", [10, 12, 1, 3, 4, 9, 13, 15, 1, 3, 0, -1])
    errored, covered = bytearray(2), bytearray(1)
    assert not _errors_by_sorted_ranges(ranges, [5], errored, covered)


@pytest.mark.parametrize("seed", range(50))
def test_clean_claims_counted_as_one_by_one(seed):
    from gateway.x12.acks import _clean

    rng = random.Random(seed)
    n = rng.randint(0, 40)
    errored = bytearray(rng.random() < 0.2 for _ in range(n))
    problems = bytearray(rng.random() < 0.2 for _ in range(n))
    assert _clean(errored, problems) == sum(
        1 for e, p in zip(errored, problems) if not e and not p)
