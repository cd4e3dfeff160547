"""The ECM profiles (``profiles/fhir/StructureDefinition-*.json``) applied to resources whose
base structure fhir.resources has already accepted.

A profile's differential elements are checked on the JSON form of the resource:

* ``min`` / ``max`` cardinality (for every instance of the parent element);
* ``fixed[x]`` (equal) and ``pattern[x]`` (contains) values;
* ``binding`` with a ``valueSet`` of ``profiles/fhir/ValueSet-*.json``: required → error,
  extensible → warning. A ValueSet lists its codes, or names a code-set CSV of
  ``profiles/codesets/`` (extension ``.../StructureDefinition/codeset-file``; column ``code``);
* ``mustSupport`` elements that are absent → information;
* ``constraint`` invariants (FHIRPath on each instance of the element: on the JSON itself when
  plain, see :func:`gateway.fhir.mapping.engine.plain_invariant`, else with fhirpathpy),
  compiled once when the profile set is loaded.

Plus the ECM rules on CarePlan activities (:func:`ecm_careplan_rules`): a completed activity
coded with a HCPCS ECM/CS code must carry a modifier that makes it an ECM or Community Supports
service on the activity's date (``profiles/codesets/ecm-services.csv``).

The profile is chosen by ``meta.profile`` when it names one of ours, else the ECM default for
the resource type (an ECM endpoint expects the ECM profile).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from gateway.fhir.mapping.engine import plain_invariant

from gateway.fhir import (
    ECM_PROFILES,
    HCPCS_MODIFIER_EXT,
    HCPCS_MODIFIER_SYSTEM,
    HCPCS_SYSTEM,
    PERFORMED_DATE_EXT,
    PROFILE_BASE,
)
from gateway.fhir.parse import Collector
from gateway.paths import PROFILES

CODESET_EXT = f"{PROFILE_BASE}/codeset-file"


@dataclass
class ValueSet:
    url: str
    name: str
    codes: frozenset  # (system, code)

    def has(self, system: str | None, code: str | None) -> bool:
        return (system, code) in self.codes

    def has_code(self, code: str | None) -> bool:
        return any(c == code for _, c in self.codes)


@dataclass
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    evaluate: object  # the compiled FHIRPath


@dataclass
class ElementRule:
    path: str  # e.g. CarePlan.activity.detail.code
    parent: tuple[str, ...]  # ("activity", "detail")
    name: str  # "code" (or "value[x]")
    min: int = 0
    max: str = "*"
    fixed: object = None
    pattern: object = None
    binding: tuple[str, ValueSet] | None = None  # (strength, value set)
    must_support: bool = False
    invariants: list[Invariant] = field(default_factory=list)


@dataclass
class Profile:
    url: str
    name: str
    type: str
    rules: list[ElementRule]


def _codes_of_include(include: dict, folder: Path) -> set:
    system = include.get("system")
    found = {(system, c["code"]) for c in include.get("concept", ())}
    for ext in include.get("extension", ()):
        if ext.get("url") == CODESET_EXT:
            with open(folder / ext["valueString"], encoding="utf-8", newline="") as handle:
                found |= {(system, row["code"]) for row in csv.DictReader(handle)}
    return found


class ProfileSet:
    """Every StructureDefinition and ValueSet of a folder, loaded and compiled once."""

    def __init__(self, folder: Path, codesets: Path) -> None:
        self.valuesets: dict[str, ValueSet] = {}
        for path in sorted(folder.glob("ValueSet-*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            codes = set()
            for include in data.get("compose", {}).get("include", ()):
                codes |= _codes_of_include(include, codesets)
            self.valuesets[data["url"]] = ValueSet(data["url"], data.get("title", data["name"]),
                                                   frozenset(codes))
        self.profiles: dict[str, Profile] = {}
        for path in sorted(folder.glob("StructureDefinition-*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("kind") != "resource":
                continue
            self.profiles[data["url"]] = self._profile(data)

    def _profile(self, data: dict) -> Profile:
        model = fhirpath_models["r4"]
        rules = []
        for element in data["differential"]["element"]:
            parts = element["path"].split(".")[1:]
            rule = ElementRule(path=element["path"], parent=tuple(parts[:-1]),
                               name=parts[-1] if parts else "",
                               min=int(element.get("min", 0)), max=str(element.get("max", "*")),
                               must_support=bool(element.get("mustSupport")))
            for key, value in element.items():
                if key.startswith("fixed"):
                    rule.fixed = value
                elif key.startswith("pattern"):
                    rule.pattern = value
            binding = element.get("binding")
            if binding and binding.get("valueSet") in self.valuesets:
                rule.binding = (binding["strength"], self.valuesets[binding["valueSet"]])
            elif binding:
                raise ValueError(f"{data['url']} {element['path']}: unknown value set "
                                 f"{binding.get('valueSet')}")
            for c in element.get("constraint", ()):
                rule.invariants.append(Invariant(
                    c["key"], c.get("severity", "error"), c["human"], c["expression"],
                    plain_invariant(c["expression"],
                                    fhirpathpy.compile(c["expression"], model=model))))
            rules.append(rule)
        return Profile(data["url"], data.get("title", data["name"]), data["type"], rules)

    def select(self, resource: dict, col: Collector, path: str) -> Profile | None:
        """The profile named in meta.profile, else the ECM default of the resource type."""
        rtype = resource.get("resourceType")
        default = self.profiles.get(ECM_PROFILES.get(rtype, ""))
        claimed = (resource.get("meta") or {}).get("profile") or []
        ours = [self.profiles[u.split("|")[0]] for u in claimed
                if isinstance(u, str) and u.split("|")[0] in self.profiles]
        for profile in ours:
            if profile.type == rtype:
                return profile
        if claimed and default is not None:
            col.add("FHIR-PROFILE-009", f"{path}.meta.profile", used=default.url)
        return default

    def validate(self, resource: dict, col: Collector, path: str,
                 profile: Profile | None = None) -> Profile | None:
        """Check ``resource`` (JSON form, structure already valid) against its profile;
        findings to ``col`` with FHIRPath locations under ``path``."""
        profile = profile or self.select(resource, col, path)
        if profile is None:
            return None
        values = {"profile": profile.url, "profile_name": profile.name}
        for rule in profile.rules:
            for where, parent in _instances(resource, path, rule.parent):
                if not rule.name:  # the resource itself: invariants only
                    self._invariants(rule, parent, where, col, values)
                    continue
                key, children = _children(parent, rule.name)
                here = f"{where}.{key}"
                element = f"{profile.type}.{'.'.join(rule.parent + (rule.name,))}"
                if len(children) < rule.min:
                    col.add("FHIR-PROFILE-001", here, element=element, min=rule.min, **values)
                    continue
                if not children:
                    if rule.must_support:
                        col.add("FHIR-PROFILE-006", here, element=element, **values)
                    continue
                if rule.max != "*" and len(children) > int(rule.max):
                    col.add("FHIR-PROFILE-002", here, element=element, count=len(children),
                            max=rule.max, **values)
                listed = isinstance(parent.get(key), list)
                for i, child in enumerate(children):
                    at = f"{here}[{i}]" if listed else here
                    if rule.fixed is not None and child != rule.fixed:
                        col.add("FHIR-PROFILE-003", at, element=element,
                                expected=json.dumps(rule.fixed), **values)
                    if rule.pattern is not None and not _matches(child, rule.pattern):
                        col.add("FHIR-PROFILE-003", at, element=element,
                                expected="like " + json.dumps(rule.pattern), **values)
                    if rule.binding is not None and not _bound(child, rule.binding[1]):
                        strength, valueset = rule.binding
                        if strength in ("required", "extensible"):
                            col.add("FHIR-PROFILE-004" if strength == "required"
                                    else "FHIR-PROFILE-005", at, element=element,
                                    valueset=valueset.url, valueset_name=valueset.name,
                                    **values)
                    if rule.invariants and isinstance(child, dict):
                        self._invariants(rule, child, at, col, values)
        return profile

    @staticmethod
    def _invariants(rule: ElementRule, node: dict, where: str, col: Collector,
                    values: dict) -> None:
        for inv in rule.invariants:
            try:
                result = inv.evaluate(node)
            except Exception:  # noqa: BLE001 - an expression that cannot run on odd data fails
                result = [False]
            if result == [True]:
                continue
            col.add("FHIR-PROFILE-007" if inv.severity == "error" else "FHIR-PROFILE-008",
                    where, key=inv.key, human=inv.human, **values)


def _instances(resource: dict, path: str, parent: tuple[str, ...]) -> list[tuple[str, dict]]:
    """Every instance of the element ``parent`` (a path under the resource), with its
    FHIRPath."""
    found = [(path, resource)]
    for name in parent:
        nxt = []
        for where, node in found:
            key, children = _children(node, name)
            listed = isinstance(node.get(key), list)
            for i, child in enumerate(children):
                if isinstance(child, dict):
                    nxt.append((f"{where}.{key}[{i}]" if listed else f"{where}.{key}", child))
        found = nxt
    return found


def _children(node: dict, name: str) -> tuple[str, list]:
    """The JSON key and values of element ``name`` (a choice ``value[x]`` matches
    ``valueString`` ...)."""
    if name.endswith("[x]"):
        stem = name[:-3]
        for key, value in node.items():
            if key.startswith(stem) and key[len(stem):len(stem) + 1].isupper():
                return key, value if isinstance(value, list) else [value]
        return stem, []
    value = node.get(name)
    if value is None:
        return name, []
    return name, value if isinstance(value, list) else [value]


def _matches(value, pattern) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(value.get(k), v)
                                               for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value)
                                               for p in pattern)
    return value == pattern


def _bound(value, valueset: ValueSet) -> bool:
    if isinstance(value, str):  # code
        return valueset.has_code(value)
    if isinstance(value, dict):
        if "coding" in value or "text" in value:  # CodeableConcept
            return any(isinstance(c, dict) and valueset.has(c.get("system"), c.get("code"))
                       for c in value.get("coding") or ())
        return valueset.has(value.get("system"), value.get("code"))  # Coding
    return False


# -- ECM rules -------------------------------------------------------------------------------------

def activity_day(detail: dict) -> date | None:
    """The service date of a CarePlan activity: scheduledPeriod.start, else scheduledString
    when it is a date, else the performed-date extension (as the CarePlan mappings read it)."""
    candidates = [(detail.get("scheduledPeriod") or {}).get("start"),
                  detail.get("scheduledString")]
    candidates += [e.get("valueDateTime") for e in detail.get("extension") or ()
                   if isinstance(e, dict) and e.get("url") == PERFORMED_DATE_EXT]
    for text in candidates:
        if isinstance(text, str) and len(text) >= 10:
            try:
                return date.fromisoformat(text[:10])
            except ValueError:
                continue
    return None


def modifiers_of(detail: dict) -> list[str]:
    """The HCPCS modifiers of an activity: the hcpcs-modifier extensions (valueCode, or
    valueCoding), else codings of the modifier code system beside the HCPCS code."""
    found = []
    for e in detail.get("extension") or ():
        if isinstance(e, dict) and e.get("url") == HCPCS_MODIFIER_EXT:
            value = e.get("valueCode") or (e.get("valueCoding") or {}).get("code")
            if isinstance(value, str):
                found.append(value)
    if found:
        return found
    return [c["code"] for c in (detail.get("code") or {}).get("coding") or ()
            if isinstance(c, dict) and c.get("system") == HCPCS_MODIFIER_SYSTEM
            and isinstance(c.get("code"), str)]


def ecm_careplan_rules(resource: dict, col: Collector, path: str) -> None:
    """Completed activities are performed services: dated, and coded with a HCPCS code and
    modifier that make an ECM or Community Supports service on that date."""
    from gateway.ecm.codesets import load_codesets

    codesets = load_codesets()
    for i, activity in enumerate(resource.get("activity") or ()):
        detail = activity.get("detail") if isinstance(activity, dict) else None
        if not isinstance(detail, dict) or detail.get("status") != "completed":
            continue
        where = f"{path}.activity[{i}].detail"
        codes = [c.get("code") for c in (detail.get("code") or {}).get("coding") or ()
                 if isinstance(c, dict) and c.get("system") == HCPCS_SYSTEM]
        if not codes:
            continue  # the binding check reports an uncoded activity
        day = activity_day(detail)
        if day is None:
            col.add("FHIR-ECM-002", where)
            continue
        modifiers = modifiers_of(detail)
        for code in codes:
            if not codesets.services_for(code, modifiers, day):
                col.add("FHIR-ECM-001", f"{where}.code", code=code,
                        modifiers="+".join(modifiers) or "(none)", day=day.isoformat())


ECM_RULES = {"CarePlan": ecm_careplan_rules}


@lru_cache(maxsize=2)
def load_profiles(folder: str | None = None) -> ProfileSet:
    return ProfileSet(Path(folder) if folder else PROFILES / "fhir", PROFILES / "codesets")


def check_resource(resource: dict, col: Collector, path: str) -> None:
    """Profile and ECM rules for one structurally valid resource."""
    profiles = load_profiles()
    profiles.validate(resource, col, path)
    rules = ECM_RULES.get(resource.get("resourceType"))
    if rules is not None:
        rules(resource, col, path)
