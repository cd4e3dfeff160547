"""The provider-directory model: what a plan reports about its ECM and Community Supports
network, independent of the file format (X12 274, directory roster CSV/XLSX, FHIR Plan-Net).

    Directory            the plan (information source), the receiver, as-of date, contact
      Group              a contracted provider organisation (NM1*QV): NPI, TIN, contract dates
        Site             a service location (NM1*77): address and county, phone, languages,
                         hours, accessibility, age/gender limits, indicators, specialties
          Provider       an individual (NM1*1P): NPI, name, degrees, languages, taxonomies,
                         network roles, ECM/CS flags and the Community Supports it delivers

A group is the unit that streams: readers yield one :class:`Group` at a time (with its sites and
their providers), writers take one at a time, so memory does not grow with the directory.
Fields are plain strings / lists / dates; an empty string or list means "not given".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date


@dataclass(slots=True)
class Hours:
    day: str  # MON TUE WED THU FRI SAT SUN
    opens: str = ""  # HHMM
    closes: str = ""  # HHMM

    def text(self) -> str:
        return f"{self.day} {self.opens}-{self.closes}" if self.opens or self.closes \
            else self.day


@dataclass(slots=True)
class Provider:
    npi: str
    last_name: str
    first_name: str = ""
    middle_name: str = ""
    degrees: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)  # ISO 639-1 / BCP 47 base tags
    taxonomies: list[str] = field(default_factory=list)  # NUCC codes, primary first
    roles: list[str] = field(default_factory=list)  # network roles (TPB)
    ecm: bool = False
    cs: bool = False
    cs_services: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Site:
    id: str
    name: str
    address1: str = ""
    address2: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    county: str = ""
    phone: str = ""
    indicators: list[str] = field(default_factory=list)  # N201, N202 (CLNC, CBAS ...)
    languages: list[str] = field(default_factory=list)
    hours: list[Hours] = field(default_factory=list)
    accessibility: list[str] = field(default_factory=list)
    gender: str = ""  # F or M when the site serves only one; empty: any
    age_min: int | None = None
    age_max: int | None = None
    specialties: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    providers: list[Provider] = field(default_factory=list)


@dataclass(slots=True)
class Group:
    npi: str
    name: str
    tin: str = ""
    contract_start: date | None = None
    contract_end: date | None = None
    specialties: list[str] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)

    def provider_count(self) -> int:
        return sum(len(site.providers) for site in self.sites)


@dataclass(slots=True)
class Directory:
    """The header of a directory; its groups travel separately (streamed)."""

    plan_id: str
    plan_name: str
    receiver_id: str = "DHCS-PROVNETWK"
    receiver_name: str = "DHCS"
    as_of: date | None = None
    reference: str = ""
    contact_name: str = ""
    contact_phone: str = ""


def as_dict(value) -> dict:
    """A model object as plain data (for JSON and for comparisons in tests)."""
    return asdict(value)
