"""Presumptive authorization re-checked when the plan's MIF arrives (ECM Policy Guide
002:1536-1542: a trusted provider authorizes and is paid "for a fixed period of time until
Contractor authorizes or denies"). ECM lines a trusted provider billed for a member before the
member was in any MIF sit in the encounter history; when a MIF assigns that member, each such
provider's lines (with the presumptive lines the server recorded from the provider's own
submissions: :meth:`~gateway.registry.store.Registry.presumptive_periods`) are compared with
the assignment: another provider, or a benefit that starts
after the lines, is a warning on the MIF row (ECM-MEM-006) for the plan to settle."""

from __future__ import annotations

from gateway.ecm.codesets import load_codesets
from gateway.findings import Finding
from gateway.registry.store import Registry
from gateway.rules import RuleCatalogue, default_catalogue


def recheck(registry: Registry, rows: list[tuple[int, dict]], arrangement,
            catalogue: RuleCatalogue | None = None, header: str = "Member CIN"
            ) -> list[Finding]:
    """Findings on the MIF ``rows`` (row number, typed row) for presumptive lines of the
    arrangement's providers that the new assignments do not cover."""
    if arrangement is None or not rows:
        return []
    catalogue = catalogue or default_catalogue()
    codes = sorted(c for c, found in load_codesets().services.items()
                   if any(s.program == "ECM" for s in found))
    by_cin: dict[str, list[tuple[int, dict]]] = {}
    for number, row in rows:
        by_cin.setdefault(row["member_cin"], []).append((number, row))
    found: list[Finding] = []
    periods = registry.presumptive_periods(by_cin, arrangement.providers, codes)
    for (cin, npi), (first, last) in sorted(periods.items()):
        why = _uncovered(by_cin[cin], npi, first)
        if why is None:
            continue
        number = by_cin[cin][0][0]
        finding = catalogue.finding("ECM-MEM-006", f"row {number}, column {header}", None,
                                    npi=npi, day=first.isoformat(), first=first.isoformat(),
                                    last=last.isoformat(), why=why)
        if finding:
            found.append(finding)
    return found


def _uncovered(assigned: list[tuple[int, dict]], npi: str, first) -> str | None:
    mine = [row for _, row in assigned if (row.get("ecm_provider_npi") or "") == npi]
    if not mine:
        others = sorted({row.get("ecm_provider_npi") or "" for _, row in assigned})
        return f"assigns the member to provider NPI {', '.join(others)}"
    starts = [row.get("ecm_benefit_start") for row in mine]
    if all(s is not None and s > first for s in starts):
        return f"starts the member's ECM benefit on {min(starts).isoformat()}, after them"
    return None
