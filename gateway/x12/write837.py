"""Canonical encounters → 837P 005010X222A1 (BHT06 ``RP``: encounter reporting).

Consecutive encounters that share a billing provider share one 2000A HL level, and consecutive
encounters of the same member with that provider share one 2000B level, so the HL hierarchy of
a parsed file is reproduced when its encounters are written back in order. A transaction set
holds at most ``claims_per_transaction`` claims (the TR3 recommends 5,000).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from gateway.model.encounter import Address, Encounter, RenderingProvider
from gateway.x12.writer import ControlNumbers, EnvelopeSettings, X12Writer, amount

GUIDE = "005010X222A1"
_SECONDARY_DX = {"ABK": "ABF", "BK": "BF"}


@dataclass
class WriteStats:
    claims: int = 0
    lines: int = 0
    transactions: int = 0
    segments: int = 0


def _billing_key(e: Encounter) -> tuple:
    return (e.billing_provider.model_dump_json(), e.submitter.model_dump_json(),
            e.receiver.model_dump_json())


def _member_key(e: Encounter) -> tuple:
    return (e.member.model_dump_json(), e.payer.model_dump_json(), e.payer_responsibility,
            e.claim_filing_indicator)


class Encounter837Writer:
    def __init__(self, out: TextIO, settings: EnvelopeSettings, controls: ControlNumbers,
                 when: datetime, preserve_envelope: bool = False) -> None:
        self.w = X12Writer(out, line_break=settings.line_break)
        self.settings = settings
        self.controls = controls
        self.when = when
        self.preserve = preserve_envelope
        self.stats = WriteStats()
        self._open_st = False
        self._claims_in_st = 0
        self._hl = 0
        self._billing: tuple | None = None
        self._member: tuple | None = None
        self._billing_hl = 0
        self._first: Encounter | None = None
        self._envelope_written = False

    # -- envelope ----------------------------------------------------------------------------
    def _open_interchange(self, first: Encounter) -> None:
        s, env = self.settings, first.envelope
        keep = self.preserve and env.interchange_control_number
        self.w.isa(sender_qualifier=s.sender_qualifier,
                   sender_id=env.sender_id if keep else s.sender_id,
                   receiver_qualifier=s.receiver_qualifier,
                   receiver_id=env.receiver_id if keep else s.receiver_id, when=self.when,
                   control=int(env.interchange_control_number) if keep
                   else self.controls.interchange,
                   usage=env.usage if keep else s.usage,
                   ack_requested=s.acknowledgment_requested)
        self.w.gs(functional_id="HC",
                  sender=env.application_sender if keep else s.application_sender,
                  receiver=env.application_receiver if keep else s.application_receiver,
                  when=self.when,
                  control=int(env.group_control_number) if keep and
                  env.group_control_number.isdigit() else self.controls.group,
                  version=GUIDE)
        self._envelope_written = True

    def _open_transaction(self, e: Encounter) -> None:
        number = self.controls.transaction + self.stats.transactions
        control = e.envelope.transaction_control_number if (
            self.preserve and e.envelope.transaction_control_number) else f"{number:04d}"
        self.w.st("837", control, GUIDE)
        reference = e.envelope.reference if self.preserve and e.envelope.reference else \
            f"{self.controls.interchange:09d}{number:04d}"
        created = e.envelope.created if self.preserve and e.envelope.created else self.when
        self.w.segment("BHT", "0019", "00", reference, created.strftime("%Y%m%d"),
                       self.when.strftime("%H%M"), "RP")
        sub = e.submitter if self.preserve else self.settings.submitter
        self.w.segment("NM1", "41", "2", sub.name, "", "", "", "", "46", sub.id)
        self.w.segment("PER", "IC", sub.contact_name or sub.name, "TE",
                       sub.contact_phone or "0000000000")
        rec = e.receiver if self.preserve else self.settings.receiver
        self.w.segment("NM1", "40", "2", rec.name, "", "", "", "", "46", rec.id)
        self._open_st, self._claims_in_st, self._hl = True, 0, 0
        self._billing = self._member = None
        self.stats.transactions += 1

    def _close_transaction(self) -> None:
        if self._open_st:
            self.w.se()
            self._open_st = False

    # -- body --------------------------------------------------------------------------------
    def _address(self, a: Address) -> None:
        self.w.segment("N3", a.line1, a.line2)
        self.w.segment("N4", a.city, a.state, a.postal_code)

    def _billing_level(self, e: Encounter) -> None:
        b = e.billing_provider
        self._hl += 1
        self._billing_hl = self._hl
        self.w.segment("HL", self._hl, "", "20", "1")
        if b.taxonomy:
            self.w.segment("PRV", "BI", "PXC", b.taxonomy)
        if b.first_name:
            self.w.segment("NM1", "85", "1", b.name, b.first_name, "", "", "", "XX", b.npi)
        else:
            self.w.segment("NM1", "85", "2", b.name, "", "", "", "", "XX", b.npi)
        self._address(b.address)
        self.w.segment("REF", "EI", b.tin)

    def _member_level(self, e: Encounter) -> None:
        m = e.member
        self._hl += 1
        self.w.segment("HL", self._hl, self._billing_hl, "22", "0")
        self.w.segment("SBR", e.payer_responsibility, "18", "", "", "", "", "", "",
                       e.claim_filing_indicator)
        self.w.segment("NM1", "IL", "1", m.last_name, m.first_name, m.middle_name, "", "",
                       "MI", m.cin)
        if m.address:
            self._address(m.address)
        if m.birth_date:
            # DMG03 is required with the birth date: U (unknown) when the source has no gender
            self.w.segment("DMG", "D8", m.birth_date.strftime("%Y%m%d"), m.gender or "U")
        self.w.segment("NM1", "PR", "2", e.payer.name, "", "", "", "", "PI", e.payer.id)

    def _rendering(self, r: RenderingProvider) -> None:
        self.w.segment("NM1", "82", "1" if r.is_person else "2", r.last_name, r.first_name,
                       "", "", "", "XX", r.npi)
        if r.taxonomy:
            self.w.segment("PRV", "PE", "PXC", r.taxonomy)

    def _claim(self, e: Encounter) -> None:
        c, w = e.claim, self.w
        w.segment("CLM", c.id, amount(c.total_charge), "", "",
                  w.composite(c.place_of_service, "B", c.frequency_code),
                  c.provider_signature, c.assignment, c.benefits_assignment,
                  c.release_of_information)
        if c.payer_claim_control_number:
            w.segment("REF", "F8", c.payer_claim_control_number)
        if c.prior_authorization:
            w.segment("REF", "G1", c.prior_authorization)
        secondary = _SECONDARY_DX.get(c.diagnosis_qualifier, "ABF")
        w.segment("HI", *[w.composite(c.diagnosis_qualifier if i == 0 else secondary, code)
                          for i, code in enumerate(c.diagnosis_codes)])
        if e.rendering_provider:
            self._rendering(e.rendering_provider)
        for line in c.lines:
            w.segment("LX", line.line_number)
            w.segment("SV1", w.composite("HC", line.procedure_code, *line.modifiers),
                      amount(line.charge), line.unit_type, amount(line.units),
                      line.place_of_service, "",
                      w.composite(*line.diagnosis_pointers))
            if line.service_date_end is not None:
                w.segment("DTP", "472", "RD8", f"{line.service_date:%Y%m%d}-"
                                               f"{line.service_date_end:%Y%m%d}")
            else:
                w.segment("DTP", "472", "D8", f"{line.service_date:%Y%m%d}")
            if line.line_control_number:
                w.segment("REF", "6R", line.line_control_number)
            if line.rendering_provider:
                self._rendering(line.rendering_provider)
            self.stats.lines += 1
        self.stats.claims += 1

    def write(self, encounter: Encounter) -> None:
        if not self._envelope_written:
            self._open_interchange(encounter)
        # submitter and receiver (1000A/B) belong to the transaction set: a change needs a new one
        boundary = self.preserve and self._open_st and self._first is not None and (
            encounter.envelope.transaction_control_number
            != self._first.envelope.transaction_control_number
            or encounter.submitter != self._first.submitter
            or encounter.receiver != self._first.receiver)
        if self._open_st and (self._claims_in_st >= self.settings.claims_per_transaction
                              or boundary):
            self._close_transaction()
        if not self._open_st:
            self._open_transaction(encounter)
            self._first = encounter
        billing, member = _billing_key(encounter), _member_key(encounter)
        if billing != self._billing:
            self._billing_level(encounter)
            self._billing, self._member = billing, None
        if member != self._member:
            self._member_level(encounter)
            self._member = member
        self._claim(encounter)
        self._claims_in_st += 1

    def close(self) -> WriteStats:
        if not self._envelope_written:
            raise ValueError("no encounters to write")
        self._close_transaction()
        self.w.ge()
        self.w.iea()
        self.stats.segments = self.w.total_segments
        return self.stats


def write_837p(encounters: Iterable[Encounter], out: TextIO, settings: EnvelopeSettings,
               controls: ControlNumbers, when: datetime,
               preserve_envelope: bool = False) -> WriteStats:
    writer = Encounter837Writer(out, settings, controls, when, preserve_envelope)
    for encounter in encounters:
        writer.write(encounter)
    return writer.close()
