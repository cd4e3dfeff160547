"""Identifier check digits, in one place for every format that carries the identifier (X12
SNIP 5, the tabular layouts, FHIR mappings, the provider directory). No imports: the X12
validator loads it on its fast path."""

from __future__ import annotations


def luhn_npi_ok(npi: str) -> bool:
    """NPI check digit: Luhn over the constant prefix 80840 + the first nine digits (CMS, NPI
    check digit standard). ``npi`` must be 10 characters."""
    total = 0
    for i, ch in enumerate(reversed("80840" + npi[:9])):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == ord(npi[9]) - 48
