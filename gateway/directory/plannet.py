"""Provider directory <-> FHIR Da Vinci PDex Plan-Net 1.2.0 Bundle.

Out: ``mappings/fhir/directory-to-plannet.yaml`` (templates, rendered by the FHIR mapping
engine) one group at a time, the Bundle written entry by entry (memory stays flat).

In: ``mappings/fhir/plannet-to-directory.yaml`` (field paths). The Bundle is read entry by entry
(:func:`iter_entries` never holds the JSON text of more than one entry); each resource is reduced
at once to the few fields the 274 carries, then PractitionerRoles are assembled into groups,
sites and providers. Problems are findings located by FHIRPath (``Bundle.entry[3].resource...``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TextIO

from gateway.directory.model import Directory, Group, Hours, Provider, Site
from gateway.fhir.mapping.engine import CollectionBundleWriter, TemplateEntries, load_spec, stable_uuid, systems
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular.validate import luhn_npi_ok

SPEC_OUT = "directory-to-plannet"
SPEC_IN = "plannet-to-directory"
_DAY_TO_FHIR = {"MON": "mon", "TUE": "tue", "WED": "wed", "THU": "thu", "FRI": "fri",
                "SAT": "sat", "SUN": "sun"}
_DAY_FROM_FHIR = {v: k for k, v in _DAY_TO_FHIR.items()}


class PlanNetError(ValueError):
    """The input is not a FHIR Bundle / resource we can read at all (usage-level)."""


@lru_cache(maxsize=4)
def _crosswalk(codeset: str, reverse: bool = False) -> dict[str, str]:
    import csv

    from gateway.tabular.layouts import codesets_dir

    with open(codesets_dir() / f"{codeset}.csv", encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        pairs = [(row["code"], row["plannet"]) for row in rows]
    return {p: c for c, p in pairs} if reverse else dict(pairs)


def _time(hhmm: str) -> str:
    return f"{hhmm[:2]}:{hhmm[2:4]}:00" if len(hhmm) == 4 else ""


def _ages(site: Site) -> str:
    if site.age_min is None and site.age_max is None:
        return ""
    return f"{'' if site.age_min is None else site.age_min}-" \
           f"{'' if site.age_max is None else site.age_max}"


# -- out ----------------------------------------------------------------------------------------
class PlanNetBundleWriter(CollectionBundleWriter):
    """Writes the Bundle entry by entry, one line per entry; :meth:`write` takes a group."""

    def __init__(self, out: TextIO, directory: Directory) -> None:
        self.directory = directory
        self._sys = systems()
        super().__init__(out, TemplateEntries(SPEC_OUT, self._view))

    def _view(self, group: Group, position: int) -> dict:
        d = self.directory
        group_key = f"{group.npi}|{position}"
        sites, roles, practitioners = [], [], []
        for site in group.sites:
            site_key = f"{group_key}|{site.id}"
            location_ref = stable_uuid("Location", f"location|{site_key}")
            service_ref = stable_uuid("HealthcareService", f"service|{site_key}")
            sites.append({
                "key": site_key, "id": site.id, "name": site.name, "phone": site.phone,
                "address1": site.address1, "address2": site.address2, "city": site.city,
                "state": site.state, "zip": site.zip, "county": site.county,
                "location_ref": location_ref,
                "hours": [{"day": _DAY_TO_FHIR.get(h.day, h.day.lower()),
                           "opens": _time(h.opens), "closes": _time(h.closes)}
                          for h in site.hours],
                "accessibility": [_crosswalk("directory-accessibility").get(c, c)
                                  for c in site.accessibility],
                "indicators": site.indicators, "languages": site.languages,
                "roles": site.roles, "specialties": site.specialties,
                "gender": site.gender, "ages": _ages(site)})
            for p in site.providers:
                # one Practitioner per NPI; should one NPI come with other details (the Plan-Net
                # examples reuse one NPI), each version is kept as its own Practitioner
                person = f"{p.npi}|{p.last_name}|{p.first_name}|{p.middle_name}|" \
                         f"{','.join(p.degrees)}|{','.join(p.languages)}"
                practitioners.append({
                    "key": person, "npi": p.npi, "last_name": p.last_name,
                    "first_name": p.first_name, "middle_name": p.middle_name,
                    "degrees": p.degrees, "languages": p.languages})
                roles.append({
                    "key": f"{site_key}|{p.npi}",
                    "practitioner_ref": stable_uuid("Practitioner", f"practitioner|{person}"),
                    "location_ref": location_ref, "service_ref": service_ref,
                    "phone": site.phone,
                    "taxonomies": p.taxonomies, "roles": p.roles,
                    "ecm": "Y" if p.ecm else "", "cs": "Y" if p.cs else "",
                    "cs_services": p.cs_services})
        first = group.sites[0] if group.sites else None
        address = {"line1": first.address1, "line2": first.address2, "city": first.city,
                   "state": first.state, "zip": first.zip,
                   "county": first.county} if first else {}
        return {"plan": {"id": d.plan_id, "name": d.plan_name,
                         "network_name": f"{d.plan_name} ECM and Community Supports network"},
                "group": {"key": group_key, "npi": group.npi, "tin": group.tin,
                          "name": group.name, "contract_start": group.contract_start,
                          "contract_end": group.contract_end,
                          "specialties": group.specialties, "address": address},
                "sites": sites, "roles": roles, "practitioners": practitioners,
                "sys": self._sys}



# -- reading entries one at a time ------------------------------------------------------------
_WS = re.compile(r"\s*")
_CHUNK = 1 << 16


class _Stream:
    def __init__(self, handle) -> None:
        self.handle = handle
        self.buf = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        if self.eof:
            return False
        block = self.handle.read(_CHUNK)
        if not block:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + block
        self.pos = 0
        return True

    def skip_ws(self) -> str:
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def expect(self, char: str) -> None:
        if self.skip_ws() != char:
            raise PlanNetError(f"not a FHIR JSON Bundle (expected {char!r})")
        self.pos += 1

    def value(self, decoder: json.JSONDecoder):
        self.skip_ws()
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if self.more():
                    continue
                raise PlanNetError("not valid JSON") from None
            # a number at the end of the buffer may continue in the next block
            if end == len(self.buf) and not self.eof and self.more():
                continue
            self.pos = end
            return value


def iter_entries(path: Path) -> Iterator[tuple[int, str, dict]]:
    """``(index, fullUrl, resource)`` of each Bundle entry (or ``(0, "", resource)`` for a lone
    resource), reading the file entry by entry."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:
        s = _Stream(handle)
        s.expect("{")
        top: dict = {}
        index = 0
        first = True
        while True:
            char = s.skip_ws()
            if char == "}":
                break
            if not first:
                s.expect(",")
            first = False
            key = s.value(decoder)
            s.expect(":")
            if key == "entry" and top.get("resourceType") == "Bundle":
                s.expect("[")
                if s.skip_ws() == "]":
                    s.pos += 1
                    continue
                while True:
                    entry = s.value(decoder)
                    resource = entry.get("resource") if isinstance(entry, dict) else None
                    if isinstance(resource, dict):
                        url = entry.get("fullUrl")
                        yield index, url if isinstance(url, str) else "", resource
                    index += 1
                    char = s.skip_ws()
                    s.pos += 1
                    if char == "]":
                        break
                    if char != ",":
                        raise PlanNetError("not valid JSON in Bundle.entry")
                continue
            top[key] = s.value(decoder)
        if top.get("resourceType") not in (None, "Bundle"):
            yield 0, "", top
        elif "resourceType" not in top:
            raise PlanNetError("not a FHIR resource (no resourceType)")


# -- the small path language -----------------------------------------------------------------
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?|where\(([^=]+?)\s*=\s*([^)]+)\)")


@lru_cache(maxsize=512)
def _compile(path: str, constants_key: int = 0) -> tuple:
    steps = []
    rest = path
    consts = systems()
    while rest:
        if rest.startswith("where("):
            close = rest.index(")")
            inner = rest[6:close]
            left, _, right = inner.partition("=")
            right = right.strip()
            if right.startswith("%"):
                value = consts[right[1:]]
            else:
                value = right.strip("'\"")
            steps.append(("where", tuple(left.strip().split(".")), value))
            rest = rest[close + 1:].lstrip(".")
            continue
        name, _, tail = rest.partition(".")
        index = None
        if "[" in name:
            name, _, idx = name.partition("[")
            index = int(idx.rstrip("]"))
        steps.append(("name", name, index))
        rest = tail
    return tuple(steps)


def _walk(nodes: list, steps: tuple) -> list:
    for step in steps:
        if step[0] == "name":
            _, name, index = step
            out = []
            for node in nodes:
                if isinstance(node, dict) and name in node:
                    value = node[name]
                    out.extend(value if isinstance(value, list) else [value])
            if index is not None:
                out = out[index:index + 1]
            nodes = out
        else:
            _, sub, value = step
            sub_steps = tuple(("name", n, None) for n in sub)
            nodes = [n for n in nodes if value in _walk([n], sub_steps)]
    return nodes


@dataclass(frozen=True)
class _Field:
    name: str
    paths: tuple[tuple, ...]
    texts: tuple[str, ...]
    required: bool = False
    many: bool = False
    crosswalk: str | None = None


@lru_cache(maxsize=2)
def _fields(_mtime: float) -> dict[str, list[_Field]]:
    spec = load_spec(SPEC_IN)
    out: dict[str, list[_Field]] = {}
    for section, entries in spec.items():
        fields = []
        for name, raw in entries.items():
            raw = raw if isinstance(raw, dict) else {"path": raw}
            paths = raw["path"] if isinstance(raw["path"], list) else [raw["path"]]
            fields.append(_Field(name, tuple(_compile(p) for p in paths), tuple(paths),
                                 bool(raw.get("required")), bool(raw.get("many")),
                                 raw.get("crosswalk")))
        out[section] = fields
    return out


def spec_fields() -> dict[str, list[_Field]]:
    from gateway.paths import MAPPINGS

    return _fields((MAPPINGS / "fhir" / f"{SPEC_IN}.yaml").stat().st_mtime)


def _first_key(path_text: str) -> str:
    head = path_text.split(".")[0]
    return head.split("[")[0]


# -- in ----------------------------------------------------------------------------------------
@dataclass
class _Record:
    kind: str
    index: int
    values: dict
    refs: dict = field(default_factory=dict)


class PlanNetReader:
    """Read a Plan-Net Bundle (or one resource) into the directory model."""

    def __init__(self, path: Path, *, catalogue: RuleCatalogue | None = None) -> None:
        self.path = Path(path)
        self.catalogue = catalogue or default_catalogue()
        self.findings: list[Finding] = []
        self.directory = Directory(plan_id="", plan_name="")
        self.stats = {"resources": 0, "groups": 0, "sites": 0, "providers": 0,
                      "skipped_roles": 0}

    def _add(self, rule: str, location: str, **values) -> None:
        finding = self.catalogue.finding(rule, location, **values)
        if finding is not None:
            self.findings.append(finding)

    def _extract(self, section: str, resource: dict, base: str, kind: str) -> dict | None:
        values = {}
        ok = True
        for f in spec_fields()[section]:
            found: list = []
            for steps in f.paths:
                found = [v for v in _walk([resource], steps) if v not in (None, "")]
                if found:
                    break
            if f.crosswalk:
                table = _crosswalk(f.crosswalk, reverse=True)
                found = [table.get(v, v) for v in found]
            if f.required and not found:
                self._add("DIR-FHIR-001", f"{base}.{_first_key(f.texts[0])}", resource=kind,
                          what=f.name.replace("_", " "))
                ok = False
            if f.many:
                seen = []
                for v in found:
                    if isinstance(v, str) and v not in seen:
                        seen.append(v)
                values[f.name] = seen
            else:
                values[f.name] = str(found[0]) if found else ""
        return values if ok else None

    def read(self) -> tuple[Directory, list[Group]]:
        by_ref: dict[str, _Record] = {}
        roles: list[_Record] = []
        affiliations: list[_Record] = []
        services: list[_Record] = []
        plan_orgs: list[dict] = []
        for index, url, resource in iter_entries(self.path):
            self.stats["resources"] += 1
            kind = resource.get("resourceType")
            base = f"Bundle.entry[{index}].resource"
            refs = self._own_refs(resource, url)
            if kind == "Organization":
                types = {c.get("code") for t in resource.get("type") or []
                         for c in (t.get("coding") or []) if isinstance(c, dict)}
                if "payer" in types:
                    plan_orgs.append(self._extract("plan", resource, base, kind) or {})
                    continue
                if "ntwk" in types:
                    continue
                values = self._extract("group", resource, base, kind)
                if values is not None and values["npi"] and not luhn_npi_ok_text(values["npi"]):
                    self._add("DIR-FHIR-006", f"{base}.identifier", resource=kind)
                    values["npi"] = ""
                record = _Record("group", index, values or {"invalid": True})
            elif kind == "Location":
                values = self._extract("site", resource, base, kind)
                if values is not None:
                    values["hours"] = _hours(resource)
                    values["managing"] = _ref(resource.get("managingOrganization"))
                record = _Record("site", index, values or {"invalid": True})
            elif kind == "Practitioner":
                values = self._extract("practitioner", resource, base, kind)
                if values is not None and not luhn_npi_ok_text(values["npi"]):
                    self._add("DIR-FHIR-006", f"{base}.identifier", resource=kind)
                    values = None
                record = _Record("practitioner", index, values or {"invalid": True})
            elif kind == "PractitionerRole":
                values = self._extract("role", resource, base, kind) or {}
                values["practitioner"] = _ref(resource.get("practitioner"))
                values["organization"] = _ref(resource.get("organization"))
                locations = resource.get("location") or []
                values["location"] = _ref(locations[0]) if locations else ""
                roles.append(_Record("role", index, values))
                continue
            elif kind == "OrganizationAffiliation":
                values = self._extract("affiliation", resource, base, kind) or {}
                values["participant"] = _ref(resource.get("participatingOrganization"))
                affiliations.append(_Record("affiliation", index, values))
                continue
            elif kind == "HealthcareService":
                values = self._extract("service", resource, base, kind) or {}
                values["locations"] = [_ref(r) for r in resource.get("location") or []]
                services.append(_Record("service", index, values))
                continue
            else:
                if kind not in ("InsurancePlan", "Endpoint"):
                    self._add("DIR-FHIR-005", base, resource=kind or "an entry")
                continue
            record.refs = refs
            for ref in refs:
                by_ref[ref] = record
        if plan_orgs:
            self.directory.plan_id = plan_orgs[0].get("id", "")
            self.directory.plan_name = plan_orgs[0].get("name", "")
        return self.directory, self._assemble(by_ref, roles, affiliations, services)

    @staticmethod
    def _own_refs(resource: dict, url: str) -> list[str]:
        refs = [url] if url else []
        if resource.get("id"):
            refs.append(f"{resource.get('resourceType')}/{resource['id']}")
        return refs

    def _assemble(self, by_ref, roles, affiliations, services) -> list[Group]:
        contract = {}
        for aff in affiliations:
            contract.setdefault(aff.values.get("participant"), aff.values)
        site_services = {}
        for svc in services:
            for loc in svc.values.get("locations", []):
                site_services.setdefault(loc, svc.values)
        groups: dict[int, Group] = {}
        sites: dict[tuple[int, int], Site] = {}
        for role in roles:
            base = f"Bundle.entry[{role.index}].resource"
            v = role.values
            if not v.get("practitioner"):
                self._skip(base + ".practitioner", "PractitionerRole", "practitioner")
                continue
            if not v.get("location"):
                self._skip(base + ".location", "PractitionerRole", "location (site)")
                continue
            practitioner = by_ref.get(v["practitioner"])
            location = by_ref.get(v["location"])
            for name, rec, ref in (("practitioner", practitioner, v["practitioner"]),
                                   ("location", location, v["location"])):
                if rec is None:
                    self._add("DIR-FHIR-002", f"{base}.{name}", resource="PractitionerRole",
                              target=ref[:80])
                    self.stats["skipped_roles"] += 1
                    break
            else:
                if practitioner.values.get("invalid") or location.values.get("invalid"):
                    self.stats["skipped_roles"] += 1
                    continue
                org_ref = v.get("organization") or location.values.get("managing", "")
                if not org_ref:
                    self._skip(base + ".organization", "PractitionerRole",
                               "organization (provider group)")
                    continue
                org = by_ref.get(org_ref)
                if org is None:
                    self._add("DIR-FHIR-002", f"{base}.organization",
                              resource="PractitionerRole", target=org_ref[:80])
                    self.stats["skipped_roles"] += 1
                    continue
                if org.values.get("invalid"):
                    self.stats["skipped_roles"] += 1
                    continue
                group = groups.get(id(org))
                if group is None:
                    gv = org.values
                    terms = next((contract[r] for r in [org_ref, *org.refs] if r in contract),
                                 {})
                    group = Group(npi=gv["npi"], name=gv["name"], tin=gv["tin"],
                                  contract_start=_date(terms.get("contract_start", "")),
                                  contract_end=_date(terms.get("contract_end", "")),
                                  specialties=list(terms.get("specialties") or []))
                    groups[id(org)] = group
                site = sites.get((id(org), id(location)))
                if site is None:
                    site = _site(location.values, self._service_for(location, by_ref,
                                                                     site_services))
                    sites[(id(org), id(location))] = site
                    group.sites.append(site)
                pv = practitioner.values
                site.providers.append(Provider(
                    npi=pv["npi"], last_name=pv["last_name"], first_name=pv["first_name"],
                    middle_name=pv["middle_name"], degrees=pv["degrees"],
                    languages=pv["languages"], taxonomies=v.get("taxonomies", []),
                    roles=v.get("roles", []), ecm="ECM" in v.get("programs", []),
                    cs="CS" in v.get("programs", []),
                    cs_services=v.get("cs_services", [])))
        out = list(groups.values())
        self.stats["groups"] = len(out)
        self.stats["sites"] = len(sites)
        self.stats["providers"] = sum(g.provider_count() for g in out)
        return out

    @staticmethod
    def _service_for(location: _Record, by_ref: dict, site_services: dict) -> dict:
        return next((site_services[r] for r in location.refs if r in site_services), {})

    def _skip(self, where: str, resource: str, what: str) -> None:
        self._add("DIR-FHIR-001", where, resource=resource, what=what)
        self.stats["skipped_roles"] += 1


def luhn_npi_ok_text(npi: str) -> bool:
    return len(npi) == 10 and npi.isdigit() and luhn_npi_ok(npi)


def _ref(value) -> str:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return value["reference"]
    return ""


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def _hours(resource: dict) -> list[Hours]:
    out = []
    for entry in resource.get("hoursOfOperation") or []:
        if not isinstance(entry, dict):
            continue
        opens = (entry.get("openingTime") or "")[:5].replace(":", "")
        closes = (entry.get("closingTime") or "")[:5].replace(":", "")
        for day in entry.get("daysOfWeek") or []:
            if day in _DAY_FROM_FHIR:
                out.append(Hours(_DAY_FROM_FHIR[day], opens, closes))
    return out


def _site(values: dict, service: dict) -> Site:
    age_min = age_max = None
    ages = service.get("ages") or ""
    if "-" in ages:
        low, _, high = ages.partition("-")
        age_min = int(low) if low.isdigit() else None
        age_max = int(high) if high.isdigit() else None
    return Site(id=values["id"], name=values["name"], address1=values["address1"],
                address2=values["address2"], city=values["city"], state=values["state"],
                zip=values["zip"], county=values["county"], phone=values["phone"],
                indicators=list(service.get("indicators") or [])[:2],
                languages=list(service.get("languages") or []),
                hours=values.get("hours") or [],
                accessibility=list(values.get("accessibility") or []),
                gender=service.get("gender") or "", age_min=age_min, age_max=age_max,
                specialties=list(service.get("specialties") or []),
                roles=list(service.get("roles") or []))
