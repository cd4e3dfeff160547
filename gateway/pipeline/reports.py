"""Reports the server makes for a plan from what it holds: the quarterly outreach tracking
report (ECM Policy Guide 002:1885-1912) from the OTF rows providers sent the plan (documents
routed to it) and the plan's MIF assignments in the registry."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import select

from gateway.ecm.outreach import OutreachReport, Quarter
from gateway.pipeline.registries import PLAN_PREFIX, server_registry
from gateway.registry.store import assignments


class ReportError(ValueError):
    """A report the partner cannot have (not a plan)."""


def outreach_for_plan(store, partner, quarters: list[Quarter]) -> list[list]:
    from gateway.tabular import LayoutError, open_table

    if partner.role != "plan":
        raise ReportError("the outreach report is for plans")
    report = OutreachReport(partner.id, quarters)
    registry = server_registry(store)
    c = assignments.c
    with registry.engine.connect() as conn:
        report.add_assignments(dict(r) for r in conn.execute(
            select(c.cin, c.authorization_date, c.benefit_start, c.benefit_end)
            .where(c.source.like(f"{PLAN_PREFIX}{partner.id}:%"))).mappings())
    for document in store.mailbox(partner.id):
        if document["role"] != "routed-otf":
            continue
        content = store.document(document["id"])["content"]
        suffix = Path(document["name"]).suffix or ".csv"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"otf{suffix}"
            path.write_bytes(content)
            try:
                reader = open_table(path, "otf")
            except LayoutError:
                continue  # the gateway wrote it from a valid OTF: cannot happen
            report.add_outreach(row for _, row in reader)
    return report.rows()
