"""A light, read-only view of an encounter: only the fields the ECM rules read.

The canonical :class:`~gateway.model.encounter.Encounter` is a pydantic model: right for
converting, splitting and writing, but building one per claim costs more than all the ECM rules
together. When a validation runs the ECM rules and keeps no encounter, the 837P reader builds
this view straight from the segments it collected (``ClaimCollector`` with
``keep_encounters="rules"``); any other source (invoices, FHIR, a kept encounter) is read
through :func:`view_of`. Both give the rules the same values, so the findings are the same
(tests/test_ecm_fast_path.py).

Plain tuples of plain values, no pydantic, in the field order of :class:`ClaimView` and
:class:`LineView` (those named tuples document it, and wrap a view where names read better):
cheap to build, and the cyclic garbage collector stops tracking a plain tuple of untracked
values at its first look - a named tuple it tracks for ever - so a batch of claims waiting for
the rules is not re-scanned with everything else the process holds.
"""

from __future__ import annotations

from datetime import date
from typing import NamedTuple


class LineView(NamedTuple):
    """A service line: ``units`` is the amount as text (``str(Decimal)`` or the X12 element),
    ``pos`` the line's place of service (None: the claim's), ``rendering`` the line's rendering
    provider NPI (None: no 2420A)."""

    number: int
    code: str
    modifiers: tuple[str, ...]
    units: str
    pos: str | None
    day: date
    day_end: date | None
    rendering: str | None


class ClaimView(NamedTuple):
    """A claim: the member's CIN, the billing provider's NPI and TIN, the claim's rendering
    provider NPI (None: no 2310B), the payer id, the claim's place of service and its lines."""

    cin: str
    npi: str
    tin: str
    rendering: str | None
    payer: str
    pos: str
    lines: tuple[LineView, ...]


def _units(value) -> str:
    return value if isinstance(value, str) else str(value)


def view_of(encounter) -> tuple:
    """The view (a plain tuple in :class:`ClaimView` order) of a canonical
    :class:`~gateway.model.encounter.Encounter`."""
    claim = encounter.claim
    rendering = encounter.rendering_provider
    return (
        encounter.member.cin, encounter.billing_provider.npi, encounter.billing_provider.tin,
        rendering.npi if rendering is not None else None, encounter.payer.id,
        claim.place_of_service,
        tuple((line.line_number, line.procedure_code, tuple(line.modifiers),
               _units(line.units), line.place_of_service, line.service_date,
               line.service_date_end,
               line.rendering_provider.npi if line.rendering_provider is not None else None)
              for line in claim.lines))
