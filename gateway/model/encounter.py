"""The canonical encounter: one claim (an 837P 2300 loop) with everything around it.

Every format the gateway converts (837P, invoices, FHIR CarePlan activities, the flat CSV)
goes through this model. It is denormalised on purpose: each encounter carries its billing
provider, member and payer, so that encounters can be streamed, split and routed one by one;
the 837P writer groups consecutive encounters back under shared HL levels.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Address(_Model):
    line1: str
    line2: str | None = None
    city: str
    state: str
    postal_code: str


class Party(_Model):
    """A submitter, receiver or payer: an organisation name and its identifier."""

    name: str
    id: str
    contact_name: str | None = None
    contact_phone: str | None = None


class BillingProvider(_Model):
    name: str  # organisation name (NM103), or last name for a person
    first_name: str | None = None  # set when the billing provider is a person (NM102 = 1)
    npi: str
    tin: str
    taxonomy: str | None = None
    address: Address


class RenderingProvider(_Model):
    last_name: str
    first_name: str | None = None
    is_person: bool = True
    npi: str
    taxonomy: str | None = None


class Member(_Model):
    """The subscriber, who is the patient for Medi-Cal (SBR02 = 18)."""

    cin: str  # Medi-Cal Client Index Number (NM109, qualifier MI)
    last_name: str
    first_name: str | None = None
    middle_name: str | None = None
    birth_date: date | None = None
    gender: str | None = None  # F, M, U; an 837P carries it only with the birth date (DMG)
    address: Address | None = None


class ServiceLine(_Model):
    line_number: int
    procedure_code: str  # HCPCS
    modifiers: list[str] = Field(default_factory=list, max_length=4)
    charge: Decimal
    unit_type: str = "UN"  # UN units, MJ minutes
    units: Decimal
    place_of_service: str | None = None  # only when it differs from the claim's
    diagnosis_pointers: list[int] = Field(default_factory=lambda: [1], max_length=4)
    service_date: date
    service_date_end: date | None = None  # set for a date range (RD8)
    rendering_provider: RenderingProvider | None = None  # 2420A, when it differs
    line_control_number: str | None = None  # REF*6R


class Claim(_Model):
    id: str  # CLM01, the patient control number
    total_charge: Decimal
    place_of_service: str  # CLM05-1
    frequency_code: str = "1"  # CLM05-3: 1 original, 7 replacement, 8 void
    provider_signature: str = "Y"
    assignment: str = "A"
    benefits_assignment: str = "Y"
    release_of_information: str = "Y"
    diagnosis_qualifier: str = "ABK"  # ABK ICD-10-CM (secondary codes ABF); BK/BF ICD-9
    diagnosis_codes: list[str] = Field(min_length=1, max_length=12)  # no decimal point
    prior_authorization: str | None = None  # REF*G1
    payer_claim_control_number: str | None = None  # REF*F8, for replacements and voids
    lines: list[ServiceLine] = Field(min_length=1, max_length=50)


class Envelope(_Model):
    """Where the encounter came from (or is going): interchange and transaction identifiers."""

    sender_id: str = ""  # ISA06 (trimmed)
    receiver_id: str = ""  # ISA08 (trimmed)
    interchange_control_number: str = ""  # ISA13
    application_sender: str = ""  # GS02
    application_receiver: str = ""  # GS03
    group_control_number: str = ""  # GS06
    transaction_control_number: str = ""  # ST02
    reference: str = ""  # BHT03
    created: date | None = None  # BHT04
    usage: str = "P"  # ISA15


class Encounter(_Model):
    envelope: Envelope = Field(default_factory=Envelope)
    submitter: Party
    receiver: Party
    billing_provider: BillingProvider
    member: Member
    payer: Party
    claim_filing_indicator: str = "MC"  # SBR09: MC = Medicaid
    payer_responsibility: str = "P"  # SBR01
    rendering_provider: RenderingProvider | None = None
    claim: Claim
