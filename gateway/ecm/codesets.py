"""Effective-dated code sets (``profiles/codesets/``): ECM and Community Supports HCPCS and
modifier combinations, modifier roles, places of service, other programs and their overlap
approach, and the utilization code lists behind the POF evidence. Every row carries its
effective dates and its source; rows the domain spec calls unconfirmed say ``confirmed=no``."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import yaml

from gateway.paths import PROFILES
from gateway.periods import within


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Effective:
    start: date | None
    end: date | None

    def covers(self, day: date) -> bool:
        return within(day, self.start, self.end)


@dataclass(frozen=True)
class ServiceCode:
    code: str
    modifier: str  # the program modifier that makes the code an ECM / CS service
    program: str  # ECM or CS
    service: str  # ECM, ECM_OUTREACH, HOUSING_NAVIGATION, MEALS ...
    unit_limit_per_day: int | None
    effective: Effective


@dataclass(frozen=True)
class ProgramRule:
    """How ECM meets another program on the days of ``effective``: excluded, either_or, wrap
    or eligible; ``exceptions``: programs whose enrolment lifts an exclusion (the HHP/WPC
    dual-eligible exception, 002:1159-1160); ``county``: a county-level override."""

    code: str
    approach: str
    exceptions: frozenset[str]
    effective: Effective
    county: str = ""


@dataclass(frozen=True)
class PofAges:
    """The ages a Population of Focus is for: ``age_from <= age < age_below``."""

    code: str
    age_from: int | None
    age_below: int | None

    def fits(self, age: int) -> bool:
        return (self.age_from is None or age >= self.age_from) and (
            self.age_below is None or age < self.age_below)

    def shown(self) -> str:
        if self.age_from is not None and self.age_below is not None:
            return f"ages {self.age_from} to {self.age_below - 1}"
        if self.age_from is not None:
            return f"age {self.age_from} and over"
        return f"under age {self.age_below}"


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class Modifier:
    modifier: str
    role: str  # program, outreach, delivery, fee_for_service_telehealth
    effective: Effective


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


class CodeSets:
    def __init__(self, folder: Path) -> None:
        self.services: dict[str, list[ServiceCode]] = defaultdict(list)
        for row in _rows(folder / "ecm-services.csv"):
            self.services[row["code"]].append(ServiceCode(
                code=row["code"], modifier=row["modifiers"], program=row["program"],
                service=row["service"],
                unit_limit_per_day=int(row["unit_limit_per_day"])
                if row.get("unit_limit_per_day") else None,
                effective=Effective(_day(row["effective_from"]), _day(row["effective_to"]))))
        self.modifiers = {row["modifier"]: Modifier(
            row["modifier"], row["role"],
            Effective(_day(row["effective_from"]), _day(row["effective_to"])))
            for row in _rows(folder / "modifiers.csv")}
        self.places = {row["code"]: Effective(_day(row["effective_from"]),
                                              _day(row["effective_to"]))
                       for row in _rows(folder / "places-of-service.csv")}
        self.program_rules = self._programs(folder / "programs.csv")
        self.county_rules = self._county_overrides(folder / "program-county-overrides.csv")
        self.county_go_live: dict[tuple[str, str], date] = {}
        if (folder / "ecm-go-live-by-county.csv").is_file():
            for row in _rows(folder / "ecm-go-live-by-county.csv"):
                for pof in (row.get("pof_codes") or "").split(";"):
                    if pof:
                        self.county_go_live[(row["county"].strip().upper(), pof)] = \
                            date.fromisoformat(row["go_live"])
        self.pof_ages = {row["code"]: PofAges(
            row["code"], int(row["age_from"]) if row.get("age_from") else None,
            int(row["age_below"]) if row.get("age_below") else None)
            for row in _rows(folder / "pof.csv")}
        self.utilization = yaml.safe_load((folder / "utilization.yaml").read_text("utf-8"))
        # the oldest a member can plausibly be (an assumption, member-ages.yaml); None: no limit
        ages = folder / "member-ages.yaml"
        self.max_age_years: int | None = (yaml.safe_load(ages.read_text("utf-8")) or {}).get(
            "max_age_years") if ages.is_file() else None
        self.event_by_place, self.event_by_code = event_index(self.utilization)

    @staticmethod
    def _programs(path: Path) -> dict[str, list[ProgramRule]]:
        """Program code → its effective-dated overlap rows."""
        found: dict[str, list[ProgramRule]] = defaultdict(list)
        if not path.is_file():
            return found
        for row in _rows(path):
            found[row["code"]].append(ProgramRule(
                row["code"], (row.get("approach") or "").strip(),
                frozenset(p for p in (row.get("exception_programs") or "").split(";") if p),
                Effective(_day(row.get("effective_from")), _day(row.get("effective_to")))))
        return found

    @staticmethod
    def _county_overrides(path: Path) -> dict[tuple[str, str], list[ProgramRule]]:
        """(program, county) → effective-dated approach in that county (e.g. a comprehensive
        county TCM is either/or there: 002:1014-1016)."""
        found: dict[tuple[str, str], list[ProgramRule]] = defaultdict(list)
        if not path.is_file():
            return found
        for row in _rows(path):
            county = (row.get("county") or "").strip().upper()
            found[(row["program"], county)].append(ProgramRule(
                row["program"], row["approach"].strip(), frozenset(),
                Effective(_day(row.get("effective_from")), _day(row.get("effective_to"))),
                county))
        return found

    def program_rule(self, program: str, day: date, county: str = "") -> ProgramRule | None:
        """The overlap rule of ``program`` on ``day`` (a county override first)."""
        if county:
            for rule in self.county_rules.get((program, county.strip().upper()), ()):
                if rule.effective.covers(day):
                    return rule
        return next((r for r in self.program_rules.get(program, ())
                     if r.effective.covers(day)), None)

    def services_for(self, code: str, modifiers: list[str], day: date) -> list[ServiceCode]:
        """The code-set rows this line matches on ``day`` (program modifier in any position)."""
        return [s for s in self.services.get(code, ()) if s.modifier in modifiers
                and s.effective.covers(day)]

    def is_service_code(self, code: str) -> bool:
        return code in self.services

    def place_valid(self, pos: str, day: date) -> bool:
        effective = self.places.get(pos)
        return effective is not None and effective.covers(day)


EVENT_PRIORITY = ("inpatient_stay", "snf_stay", "ed_visit")  # a line is one event


def event_index(spec: dict) -> tuple[dict[str, str], dict[str, str]]:
    """Place of service → event kind and procedure code → event kind."""
    by_place: dict[str, str] = {}
    by_code: dict[str, str] = {}
    for kind in EVENT_PRIORITY:
        lists = spec.get(kind) or {}
        for place in lists.get("places_of_service", ()):
            by_place.setdefault(str(place), kind)
        for code in lists.get("procedure_codes", ()):
            by_code.setdefault(str(code), kind)
    return by_place, by_code


@lru_cache(maxsize=4)
def load_codesets(folder: str | None = None) -> CodeSets:
    return CodeSets(Path(folder) if folder else PROFILES / "codesets")
