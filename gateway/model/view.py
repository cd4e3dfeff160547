"""A light, read-only view of an encounter: only the fields the ECM rules read.

The canonical :class:`~gateway.model.encounter.Encounter` is a pydantic model: right for
converting, splitting and writing, but building one per claim costs more than all the ECM rules
together. When a validation runs the ECM rules and keeps no encounter, the 837P reader builds
this view straight from the segments it collected (``ClaimCollector`` with
``keep_encounters="rules"``); any other source (invoices, FHIR, a kept encounter) is read
through :func:`view_of`. Both give the rules the same values, so the findings are the same
(tests/test_ecm_fast_path.py).

No pydantic here: slotted classes and plain values.
"""

from __future__ import annotations

from datetime import date


class LineView:
    """A service line: ``units`` is the amount as text (``str(Decimal)`` or the X12 element),
    ``rendering`` the line's rendering provider NPI (None: no 2420A), ``pos`` the line's place
    of service (None: the claim's)."""

    __slots__ = ("number", "code", "modifiers", "units", "pos", "day", "day_end", "rendering")

    def __init__(self, number: int, code: str, modifiers: tuple[str, ...], units: str,
                 pos: str | None, day: date, day_end: date | None,
                 rendering: str | None) -> None:
        self.number = number
        self.code = code
        self.modifiers = modifiers
        self.units = units
        self.pos = pos
        self.day = day
        self.day_end = day_end
        self.rendering = rendering


class ClaimView:
    """A claim: the member's CIN, the billing provider's NPI and TIN, the claim's rendering
    provider NPI (None: no 2310B), the payer id, the claim's place of service and its lines."""

    __slots__ = ("cin", "npi", "tin", "rendering", "payer", "pos", "lines")

    def __init__(self, cin: str, npi: str, tin: str, rendering: str | None, payer: str,
                 pos: str, lines: list[LineView]) -> None:
        self.cin = cin
        self.npi = npi
        self.tin = tin
        self.rendering = rendering
        self.payer = payer
        self.pos = pos
        self.lines = lines


def _units(value) -> str:
    return value if isinstance(value, str) else str(value)


def view_of(encounter) -> ClaimView:
    """The view of a canonical :class:`~gateway.model.encounter.Encounter`."""
    claim = encounter.claim
    rendering = encounter.rendering_provider
    return ClaimView(
        encounter.member.cin, encounter.billing_provider.npi, encounter.billing_provider.tin,
        rendering.npi if rendering is not None else None, encounter.payer.id,
        claim.place_of_service,
        [LineView(line.line_number, line.procedure_code, tuple(line.modifiers),
                  _units(line.units), line.place_of_service, line.service_date,
                  line.service_date_end,
                  line.rendering_provider.npi if line.rendering_provider is not None else None)
         for line in claim.lines])
