"""Writing X12: segments with trailing empty elements trimmed, fixed-width ISA, envelopes with
counts computed as segments are written. Every X12 file the gateway produces (837P, 999, TA1,
277CA) goes through :class:`X12Writer`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TextIO

from pydantic import BaseModel, ConfigDict

from gateway.x12.envelope_profiles import UnknownProfile, envelope_profile_data  # noqa: F401
from gateway.x12.reader import Delimiters

DEFAULT_DELIMITERS = Delimiters(element="*", component=":", repetition="^", segment="~")


class PartyProfile(BaseModel):
    name: str
    id: str
    contact_name: str | None = None
    contact_phone: str | None = None


class EnvelopeSettings(BaseModel):
    """Envelope values for one receiving partner (profiles/envelopes/*.yaml)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    sender_qualifier: str = "ZZ"
    sender_id: str
    receiver_qualifier: str = "ZZ"
    receiver_id: str
    application_sender: str
    application_receiver: str
    usage: str = "P"
    acknowledgment_requested: str = "0"
    submitter: PartyProfile
    receiver: PartyProfile
    claims_per_transaction: int = 5000
    line_break: bool = True
    # ISA01/ISA02 and ISA12: 00 / blank / 00501 unless a receiver asks otherwise (the DHCS 274:
    # ISA01 03, ISA12 00405 — profiles/envelopes/dhcs-274.yaml)
    authorization_qualifier: str = "00"
    authorization: str = ""
    interchange_version: str = "00501"

    def parties(self):
        """The 837P submitter (1000A) and receiver (1000B) of encounters made for this
        partner, as canonical :class:`~gateway.model.encounter.Party` objects."""
        from gateway.model.encounter import Party  # the model imports nothing from here

        return (Party(name=self.submitter.name, id=self.submitter.id,
                      contact_name=self.submitter.contact_name,
                      contact_phone=self.submitter.contact_phone),
                Party(name=self.receiver.name, id=self.receiver.id))


@lru_cache(maxsize=32)
def envelope_settings(name: str) -> EnvelopeSettings:
    """The envelope profile ``name`` (``profiles/envelopes/<name>.yaml``); raises
    :class:`UnknownProfile` when there is none."""
    return EnvelopeSettings(**envelope_profile_data(name))


@dataclass(frozen=True)
class ControlNumbers:
    interchange: int  # ISA13
    group: int  # GS06
    transaction: int = 1  # first ST02


def amount(value: Decimal) -> str:
    """X12 R type: no exponent, no trailing zeros after the point."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def fixed(value: str, width: int) -> str:
    return value[:width].ljust(width)


class X12Writer:
    """Writes segments and keeps the counts the trailers need."""

    def __init__(self, out: TextIO, delimiters: Delimiters = DEFAULT_DELIMITERS,
                 line_break: bool = True) -> None:
        self.out = out
        self.d = delimiters
        self.terminator = delimiters.segment + ("\n" if line_break else "")
        self.segments_in_transaction = 0
        self.transactions_in_group = 0
        self.groups_in_interchange = 0
        self.total_segments = 0

    def segment(self, seg_id: str, *elements: object) -> None:
        values = ["" if e is None else str(e) for e in elements]
        while values and values[-1] == "":
            values.pop()
        self.out.write(self.d.element.join([seg_id, *values]) + self.terminator)
        self.segments_in_transaction += 1
        self.total_segments += 1

    def composite(self, *parts: object) -> str:
        values = ["" if p is None else str(p) for p in parts]
        while values and values[-1] == "":
            values.pop()
        return self.d.component.join(values)

    # envelopes ------------------------------------------------------------------------------
    def isa(self, *, sender_qualifier: str, sender_id: str, receiver_qualifier: str,
            receiver_id: str, when: datetime, control: int, usage: str,
            ack_requested: str = "0", authorization_qualifier: str = "00",
            authorization: str = "", version: str = "00501") -> None:
        self._isa13 = f"{control:09d}"
        fields = [authorization_qualifier, fixed(authorization, 10), "00", " " * 10,
                  fixed(sender_qualifier, 2),
                  fixed(sender_id, 15), fixed(receiver_qualifier, 2), fixed(receiver_id, 15),
                  when.strftime("%y%m%d"), when.strftime("%H%M"), self.d.repetition, version,
                  self._isa13, ack_requested, usage, self.d.component]
        self.out.write(self.d.element.join(["ISA", *fields]) + self.terminator)
        self.total_segments += 1
        self.groups_in_interchange = 0

    def iea(self) -> None:
        self.out.write(self.d.element.join(["IEA", str(self.groups_in_interchange),
                                            self._isa13]) + self.terminator)
        self.total_segments += 1

    def gs(self, *, functional_id: str, sender: str, receiver: str, when: datetime,
           control: int, version: str) -> None:
        self._gs06 = str(control)
        self.segment("GS", functional_id, sender, receiver, when.strftime("%Y%m%d"),
                     when.strftime("%H%M"), self._gs06, "X", version)
        self.transactions_in_group = 0
        self.groups_in_interchange += 1

    def ge(self) -> None:
        self.segment("GE", self.transactions_in_group, self._gs06)

    def st(self, transaction: str, control: str, version: str) -> None:
        self._st02 = control
        self.segments_in_transaction = 0
        self.segment("ST", transaction, control, version)
        self.transactions_in_group += 1

    def se(self) -> None:
        self.segment("SE", self.segments_in_transaction + 1, self._st02)
