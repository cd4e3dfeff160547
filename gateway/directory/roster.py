"""Provider-directory roster (CSV/XLSX, one row per provider and site; columns in
``mappings/layouts/directory/*.yaml``) to and from the directory model.

Reading streams through :mod:`gateway.tabular` (row-level findings ``row N, column H``); rows of
a group come together, so a group is complete when the next one starts. A group that comes back
after others becomes a second group loop (DIR-ROW-002) rather than holding every row in memory.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from gateway.directory.model import Group, Hours, Provider, Site
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import load_layout, open_table

KIND = "directory"
_HOURS = re.compile(r"^(MON|TUE|WED|THU|FRI|SAT|SUN)\s+([0-2]\d[0-5]\d)\s*-\s*([0-2]\d[0-5]\d)$",
                    re.I)
_TAXONOMY = re.compile(r"^[0-9]{3}[0-9A-Z]{6}X$")

GROUP_FIELDS = ("group_name", "group_tin", "contract_start", "contract_end", "group_taxonomies")
SITE_FIELDS = ("site_name", "site_address1", "site_address2", "site_city", "site_state",
               "site_zip", "site_county", "site_phone", "site_indicators", "site_languages",
               "site_hours", "site_accessibility", "site_gender", "site_age_min",
               "site_age_max", "site_taxonomies", "site_roles")


def _header(layout, field: str) -> str:
    for column in layout.columns:
        if column.field == field:
            return column.headers[0]
    return field


class DirectoryRosterReader:
    """Iterate for groups; ``findings`` and ``stats`` are complete when iteration ends.
    Raises :class:`gateway.tabular.LayoutError` when no directory layout fits the header."""

    def __init__(self, path: Path, layout: str | None = None, *,
                 catalogue: RuleCatalogue | None = None) -> None:
        self.catalogue = catalogue or default_catalogue()
        self.table = open_table(Path(path), KIND, layout, catalogue=self.catalogue)
        self.findings: list[Finding] = self.table.findings
        self.layout = load_layout(KIND, self.table.layout_name or "default") \
            if self.table.layout_name else None
        self.stats = {"rows": 0, "accepted_rows": 0, "rejected_rows": 0, "groups": 0,
                      "sites": 0, "providers": 0}

    def _add(self, rule: str, location: str, **values) -> None:
        finding = self.catalogue.finding(rule, location, **values)
        if finding is not None:
            self.findings.append(finding)

    def _extra_checks(self, number: int, row: dict) -> bool:
        """Hours and taxonomy formats the column types do not cover. True when the row is OK."""
        ok = True
        hours = []
        for entry in row.get("site_hours") or []:
            match = _HOURS.match(entry.strip())
            if not match:
                self._add("DIR-ROW-003", f"row {number}, column "
                                         f"{_header(self.layout, 'site_hours')}",
                          column=_header(self.layout, "site_hours"), found=entry[:20])
                ok = False
                continue
            hours.append(Hours(match.group(1).upper(), match.group(2), match.group(3)))
        row["site_hours"] = hours
        for field in ("provider_taxonomies", "site_taxonomies", "group_taxonomies"):
            for code in row.get(field) or []:
                if not _TAXONOMY.match(code):
                    header = _header(self.layout, field)
                    self._add("DIR-ROW-004", f"row {number}, column {header}", column=header,
                              found=code[:12])
                    ok = False
        return ok

    def __iter__(self) -> Iterator[Group]:
        group: Group | None = None
        group_key = None
        group_rows: dict[str, tuple[int, dict]] = {}  # group npi -> first row (for DIR-ROW-001)
        site_rows: dict[str, tuple[int, dict]] = {}
        sites: dict[str, Site] = {}
        seen_groups: dict[str, int] = {}
        for number, row in self.table:
            if not self._extra_checks(number, row):
                self.table.rows_rejected += 1
                continue
            key = row["group_npi"]
            if key != group_key:
                if group is not None:
                    yield self._done(group)
                if key in seen_groups:
                    self._add("DIR-ROW-002", f"row {number}, column "
                                             f"{_header(self.layout, 'group_npi')}",
                              key=key, first=seen_groups[key])
                else:
                    seen_groups[key] = number
                group_key = key
                group = Group(npi=key, name=row["group_name"], tin=row.get("group_tin") or "",
                              contract_start=row.get("contract_start"),
                              contract_end=row.get("contract_end"),
                              specialties=list(row.get("group_taxonomies") or []))
                group_rows = {key: (number, row)}
                site_rows, sites = {}, {}
            else:
                self._same("group", key, number, row, group_rows[key], GROUP_FIELDS)
            site_key = row["site_id"]
            site = sites.get(site_key)
            if site is None:
                site = Site(id=site_key, name=row["site_name"],
                            address1=row.get("site_address1") or "",
                            address2=row.get("site_address2") or "",
                            city=row.get("site_city") or "", state=row.get("site_state") or "",
                            zip=row.get("site_zip") or "", county=row.get("site_county") or "",
                            phone=row.get("site_phone") or "",
                            indicators=list(row.get("site_indicators") or [])[:2],
                            languages=[c.lower() for c in row.get("site_languages") or []],
                            hours=row["site_hours"],
                            accessibility=list(row.get("site_accessibility") or []),
                            gender=row.get("site_gender") or "",
                            age_min=row.get("site_age_min"), age_max=row.get("site_age_max"),
                            specialties=list(row.get("site_taxonomies") or []),
                            roles=list(row.get("site_roles") or []))
                sites[site_key] = site
                site_rows[site_key] = (number, row)
                group.sites.append(site)
            else:
                self._same("site", site_key, number, row, site_rows[site_key], SITE_FIELDS)
            site.providers.append(Provider(
                npi=row["provider_npi"], last_name=row["provider_last_name"],
                first_name=row.get("provider_first_name") or "",
                middle_name=row.get("provider_middle_name") or "",
                degrees=list(row.get("provider_degrees") or []),
                languages=[c.lower() for c in row.get("provider_languages") or []],
                taxonomies=list(row.get("provider_taxonomies") or []),
                roles=list(row.get("provider_roles") or []),
                ecm=bool(row.get("ecm")), cs=bool(row.get("cs")),
                cs_services=list(row.get("cs_services") or [])))
        if group is not None:
            yield self._done(group)
        self.stats.update(rows=self.table.rows_total,
                          accepted_rows=self.table.rows_total - self.table.rows_rejected,
                          rejected_rows=self.table.rows_rejected)

    def _same(self, what: str, key: str, number: int, row: dict, first: tuple[int, dict],
              fields: tuple[str, ...]) -> None:
        first_number, first_row = first
        differ = [_header(self.layout, f) for f in fields if row.get(f) != first_row.get(f)]
        if differ:
            self._add("DIR-ROW-001", f"row {number}", what=what, key=key, first=first_number,
                      fields=", ".join(differ))

    def _done(self, group: Group) -> Group:
        self.stats["groups"] += 1
        self.stats["sites"] += len(group.sites)
        self.stats["providers"] += group.provider_count()
        return group


# -- writing ------------------------------------------------------------------------------------
def _join(values: Iterable) -> str:
    return "; ".join(str(v) for v in values)


def roster_rows(group: Group) -> Iterator[dict]:
    """The roster rows (canonical field -> cell text) of one group."""
    base = {"group_npi": group.npi, "group_name": group.name, "group_tin": group.tin,
            "contract_start": group.contract_start.isoformat() if group.contract_start else "",
            "contract_end": group.contract_end.isoformat() if group.contract_end else "",
            "group_taxonomies": _join(group.specialties)}
    for site in group.sites:
        site_cells = {
            "site_id": site.id, "site_name": site.name, "site_address1": site.address1,
            "site_address2": site.address2, "site_city": site.city, "site_state": site.state,
            "site_zip": site.zip, "site_county": site.county, "site_phone": site.phone,
            "site_indicators": _join(site.indicators), "site_languages": _join(site.languages),
            "site_hours": _join(h.text() for h in site.hours),
            "site_accessibility": _join(site.accessibility), "site_gender": site.gender,
            "site_age_min": "" if site.age_min is None else str(site.age_min),
            "site_age_max": "" if site.age_max is None else str(site.age_max),
            "site_taxonomies": _join(site.specialties), "site_roles": _join(site.roles)}
        for p in site.providers:
            yield {**base, **site_cells,
                   "provider_npi": p.npi, "provider_last_name": p.last_name,
                   "provider_first_name": p.first_name,
                   "provider_middle_name": p.middle_name,
                   "provider_degrees": _join(p.degrees),
                   "provider_languages": _join(p.languages),
                   "provider_taxonomies": _join(p.taxonomies),
                   "provider_roles": _join(p.roles),
                   "ecm": "Y" if p.ecm else "N", "cs": "Y" if p.cs else "N",
                   "cs_services": _join(p.cs_services)}


class DirectoryRosterWriter:
    """CSV in the column order and headers of a directory layout (default ``default``)."""

    def __init__(self, out: TextIO, layout: str = "default") -> None:
        columns = load_layout(KIND, layout).columns
        self.fields = [c.field for c in columns]
        self.writer = csv.writer(out, lineterminator="\n")
        self.writer.writerow([c.headers[0] for c in columns])
        self.rows = 0

    def write(self, group: Group) -> None:
        for row in roster_rows(group):
            self.writer.writerow([row.get(f, "") for f in self.fields])
            self.rows += 1
