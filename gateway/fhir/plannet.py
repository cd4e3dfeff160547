"""Checking resources against the Da Vinci PDex Plan-Net 1.2.0 StructureDefinitions.

The profiles come from the npm package ``hl7.fhir.us.davinci-pdex-plan-net`` 1.2.0, unpacked by
the Makefile (``make fhir-packages``) under ``build/fhir-packages/`` - never fetched at run
time. Each resource is checked for its base structure by ``fhir.resources`` (R4B models, via
:func:`gateway.fhir.parse.validate_one`) and then, on the profile's *snapshot* (so the US Core
constraints the Plan-Net profiles inherit are included):

* ``min`` / ``max`` cardinality for every instance of the parent element;
* ``fixed[x]`` and ``pattern[x]`` values;
* ``required`` bindings whose value set the package enumerates (its own CodeSystems);
* invariants (FHIRPath, compiled once with fhirpathpy) other than the core ``ele-``/``dom-``/
  ``ext-``/``txt-`` ones.

Slices (element ids with ``:``) are not checked one by one [a limit of this checker]; the
slice-level rules the gateway's own output depends on are covered by the golden tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from gateway.fhir.parse import Collector, validate_one
from gateway.fhir.profiles import _children, _instances, _matches
from gateway.paths import HOME

PACKAGE = "hl7.fhir.us.davinci-pdex-plan-net#1.2.0"
PLANNET_BASE = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/"
_CORE_INVARIANTS = ("ele-", "dom-", "ext-", "txt-")


class PackageMissing(RuntimeError):
    """The Plan-Net package is not installed: run `make fhir-packages`."""


def package_dir() -> Path:
    return HOME / "build" / "fhir-packages" / PACKAGE / "package"


@dataclass
class _Rule:
    path: str
    parent: tuple[str, ...]
    name: str
    min: int
    max: str
    fixed: object = None
    pattern: object = None
    codes: frozenset | None = None  # required binding: allowed (system, code)
    invariants: list = field(default_factory=list)


@dataclass
class _Profile:
    url: str
    name: str
    type: str
    rules: list[_Rule]


class PlanNetProfiles:
    def __init__(self, folder: Path) -> None:
        if not (folder / "package.json").is_file():
            raise PackageMissing(f"the Plan-Net package is not installed in {folder}: "
                                 "run `make fhir-packages`")
        systems: dict[str, set] = {}
        for path in folder.glob("CodeSystem-*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            systems[data["url"]] = {c["code"] for c in _concepts(data.get("concept", []))}
        self.valuesets: dict[str, frozenset | None] = {}
        for path in folder.glob("ValueSet-*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            codes: set | None = set()
            for include in data.get("compose", {}).get("include", []):
                system = include.get("system")
                if include.get("concept"):
                    codes |= {(system, c["code"]) for c in include["concept"]}
                elif system in systems and not include.get("filter"):
                    codes |= {(system, c) for c in systems[system]}
                else:
                    codes = None  # not enumerable here (NUCC, US Core, ...): not checked
                    break
            self.valuesets[data["url"]] = frozenset(codes) if codes is not None else None
        model = fhirpath_models["r4"]
        self.profiles: dict[str, _Profile] = {}
        for path in folder.glob("StructureDefinition-*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("kind") != "resource" or "snapshot" not in data:
                continue
            rules = []
            for element in data["snapshot"]["element"]:
                if ":" in element["id"]:
                    continue
                parts = element["path"].split(".")[1:]
                rule = _Rule(element["path"], tuple(parts[:-1]), parts[-1] if parts else "",
                             int(element.get("min", 0)), str(element.get("max", "*")))
                for key, value in element.items():
                    if key.startswith("fixed"):
                        rule.fixed = value
                    elif key.startswith("pattern"):
                        rule.pattern = value
                binding = element.get("binding") or {}
                if binding.get("strength") == "required":
                    rule.codes = self.valuesets.get(binding.get("valueSet", "").split("|")[0])
                for c in element.get("constraint", []):
                    if c["key"].startswith(_CORE_INVARIANTS) or "expression" not in c:
                        continue
                    try:
                        compiled = fhirpathpy.compile(c["expression"], model=model)
                    except Exception:  # noqa: BLE001 - an expression fhirpathpy cannot run
                        continue
                    rule.invariants.append((c["key"], c.get("severity", "error"),
                                            c.get("human", ""), compiled))
                rules.append(rule)
            self.profiles[data["url"]] = _Profile(data["url"], data.get("title", data["name"]),
                                                  data["type"], rules)

    def check(self, resource: dict, path: str, col: Collector) -> None:
        """Findings (``DIR-FHIR-004`` structure, ``DIR-FHIR-003`` profile) into ``col`` for the
        resource against each Plan-Net profile its ``meta.profile`` names."""
        before = len(col.findings)
        validate_one(resource, path, col)
        if len(col.findings) > before and any(f.is_error for f in col.findings[before:]):
            return  # the structure is broken: the profile rules would only repeat it
        for url in (resource.get("meta") or {}).get("profile") or []:
            profile = self.profiles.get(str(url).split("|")[0])
            if profile is not None and profile.type == resource.get("resourceType"):
                self._check(profile, resource, path, col)

    def _check(self, profile: _Profile, resource: dict, path: str, col: Collector) -> None:
        def problem(where: str, text: str) -> None:
            col.add("DIR-FHIR-003", where, problem=f"{profile.name}: {text}")

        for rule in profile.rules:
            for where, parent in _instances(resource, path, rule.parent):
                if not rule.name:
                    self._invariants(rule, parent, where, problem)
                    continue
                key, children = _children(parent, rule.name)
                here = f"{where}.{key}"
                if len(children) < rule.min:
                    problem(here, f"{rule.path} is required (min {rule.min})")
                    continue
                if rule.max != "*" and len(children) > int(rule.max):
                    problem(here, f"{rule.path} allows at most {rule.max}, found "
                                  f"{len(children)}")
                listed = isinstance(parent.get(key), list)
                for i, child in enumerate(children):
                    at = f"{here}[{i}]" if listed else here
                    if rule.fixed is not None and child != rule.fixed:
                        problem(at, f"{rule.path} must be {json.dumps(rule.fixed)}")
                    if rule.pattern is not None and not _matches(child, rule.pattern):
                        problem(at, f"{rule.path} must be like {json.dumps(rule.pattern)}")
                    if rule.codes is not None and not _coded(child, rule.codes):
                        problem(at, f"{rule.path} is not in its required value set")
                    if rule.invariants and isinstance(child, dict):
                        self._invariants(rule, child, at, problem)

    @staticmethod
    def _invariants(rule: _Rule, node: dict, where: str, problem) -> None:
        for key, severity, human, evaluate in rule.invariants:
            try:
                result = evaluate(node)
            except Exception:  # noqa: BLE001 - odd data: the invariant fails
                result = [False]
            if result != [True] and severity == "error":
                problem(where, f"invariant {key} failed: {human}")


def _concepts(concepts: list) -> list:
    out = []
    for c in concepts:
        out.append(c)
        out.extend(_concepts(c.get("concept", [])))
    return out


def _coded(value, codes: frozenset) -> bool:
    if isinstance(value, str):
        return any(code == value for _, code in codes)
    if isinstance(value, dict):
        codings = value.get("coding") if ("coding" in value or "text" in value) else [value]
        return any(isinstance(c, dict) and (c.get("system"), c.get("code")) in codes
                   for c in codings or [])
    return False


@lru_cache(maxsize=1)
def plannet_profiles() -> PlanNetProfiles:
    return PlanNetProfiles(package_dir())


def check_bundle_file(path: Path) -> list:
    """Every finding of a Plan-Net Bundle file, entry by entry (located by FHIRPath)."""
    from gateway.directory.plannet import iter_entries

    profiles = plannet_profiles()
    col = Collector()
    for index, _url, resource in iter_entries(path):
        profiles.check(resource, f"Bundle.entry[{index}].resource", col)
    return col.findings
