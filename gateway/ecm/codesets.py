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
        self.programs = self._programs(folder / "programs.csv")
        self.utilization = yaml.safe_load((folder / "utilization.yaml").read_text("utf-8"))
        self.event_by_place, self.event_by_code = event_index(self.utilization)

    @staticmethod
    def _programs(path: Path) -> dict[str, str]:
        """Program code → overlap approach (excluded, either_or, wrap)."""
        if not path.is_file():
            return {}
        found = {}
        for row in _rows(path):
            approach = row.get("approach") or row.get("overlap") or row.get("overlap_approach")
            found[row["code"]] = (approach or "").strip()
        return found

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
