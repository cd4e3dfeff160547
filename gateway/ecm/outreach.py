"""The quarterly ECM outreach tracking report (ECM Policy Guide 002:1885-1912) from OTF rows
and MIF assignments: members targeted, members with at least one countable attempt, attempts
by method, successful attempts and hours, per plan and quarter. Pure: rows in, report rows out
(the CLI reads files, the API reads the plan's mailbox and registry). Memory grows with the
number of distinct members, never with the number of OTF rows."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache

import yaml

from gateway.paths import PROFILES

COLUMNS = ["Plan", "Quarter", "Measure", "Method", "Counts As Attempt", "Value", "Label",
           "Source"]
QUARTER = re.compile(r"(\d{4})\s*-?\s*Q([1-4])", re.IGNORECASE)
# the years a report's quarter may name: a decision, not a rule of the ECM Policy Guide (ECM
# began in 2022; a year outside these is a typo, and year 0 or 9999's Q4 are no dates at all)
FIRST_YEAR, LAST_YEAR = 1900, 2100


class QuarterError(ValueError):
    """Not a quarter like 2026Q3."""


@dataclass(frozen=True)
class Quarter:
    year: int
    number: int

    def __post_init__(self) -> None:
        if not FIRST_YEAR <= self.year <= LAST_YEAR:
            raise QuarterError(f"{self.year:04d}Q{self.number} is out of range: the year must be "
                               f"{FIRST_YEAR} to {LAST_YEAR}")
        if not 1 <= self.number <= 4:
            raise QuarterError(f"{self} is not a quarter: write it like 2026Q3")

    @classmethod
    def parse(cls, text: str) -> Quarter:
        """The one reading of a quarter (the command line's ``--quarter``, the API's
        ``quarter``): :class:`QuarterError` for anything but YYYYQn of a year in range."""
        found = QUARTER.fullmatch((text or "").strip())
        if not found:
            raise QuarterError(f"{text!r} is not a quarter: write it like 2026Q3")
        return cls(int(found.group(1)), int(found.group(2)))

    @property
    def first(self) -> date:
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def last(self) -> date:
        following = date(self.year + 1, 1, 1) if self.number == 4 else \
            date(self.year, 3 * self.number + 1, 1)
        return following - timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"

    def covers(self, day: date | None) -> bool:
        return day is not None and self.first <= day <= self.last


@lru_cache(maxsize=1)
def report_spec() -> dict:
    return yaml.safe_load((PROFILES / "reports" / "outreach.yaml").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def methods() -> dict[str, bool]:
    """Outreach method → counts as an attempt (profiles/codesets/outreach-methods.csv)."""
    path = PROFILES / "codesets" / "outreach-methods.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        return {r["code"]: (r.get("counts_as_attempt") or "").strip().lower() == "yes"
                for r in csv.DictReader(handle)}


@dataclass
class _Tally:
    targeted: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)
    by_method: Counter = field(default_factory=Counter)
    successful: int = 0
    minutes: int = 0


class OutreachReport:
    """Feed OTF rows and MIF assignments (typed, canonical field names), then ``rows()``."""

    def __init__(self, plan: str, quarters: list[Quarter]) -> None:
        self.plan = plan
        self.quarters = sorted(set(quarters), key=lambda q: (q.year, q.number))
        self.tally = {q: _Tally() for q in self.quarters}
        self.counts = methods()
        self.include_outreached = bool(report_spec()["targeted"].get("include_outreached"))

    def add_assignments(self, rows: Iterable[dict]) -> None:
        """MIF rows (or registry assignments with the same names)."""
        for row in rows:
            cin = row.get("member_cin") or row.get("cin")
            auth = row.get("authorization_date") or row.get("ecm_benefit_start") \
                or row.get("benefit_start")
            end = row.get("ecm_benefit_end", row.get("benefit_end"))
            if not cin or auth is None:
                continue
            for quarter, tally in self.tally.items():
                if auth <= quarter.last and (end is None or end >= quarter.first):
                    tally.targeted.add(cin)

    def add_outreach(self, rows: Iterable[dict]) -> None:
        spans = [(q.first, q.last, t) for q, t in self.tally.items()]
        for row in rows:
            day = row.get("outreach_date")
            if day is None:
                continue
            for first, last, tally in spans:
                if not first <= day <= last:
                    continue
                cin, method = row["member_cin"], row.get("outreach_method") or ""
                tally.by_method[method] += 1
                if self.include_outreached:
                    tally.targeted.add(cin)
                if self.counts.get(method, False):
                    tally.attempted.add(cin)
                    if row.get("outreach_successful"):
                        tally.successful += 1
                tally.minutes += int(row.get("outreach_minutes") or 0)

    def rows(self) -> list[list]:
        labels = {m["id"]: m for m in report_spec()["measures"]}
        out = []

        def add(quarter, measure, value, method="", counts=""):
            spec = labels[measure]
            out.append([self.plan, str(quarter), measure, method, counts, value, spec["label"],
                        f"ECM Policy Guide {spec['source']}"])

        for quarter in self.quarters:
            tally = self.tally[quarter]
            add(quarter, "targeted_members", len(tally.targeted))
            add(quarter, "members_with_attempt", len(tally.attempted & tally.targeted))
            for method in list(self.counts) + sorted(set(tally.by_method) - set(self.counts)):
                add(quarter, "attempts", tally.by_method.get(method, 0), method,
                    "yes" if self.counts.get(method) else "no")
            add(quarter, "attempts_total",
                sum(n for m, n in tally.by_method.items() if self.counts.get(m)))
            add(quarter, "successful_attempts", tally.successful)
            hours = (Decimal(tally.minutes) / 60).quantize(Decimal("0.01"))
            add(quarter, "outreach_hours", hours)  # a number (Decimal, two places)
        return out


def report_csv(rows: list[list]) -> bytes:
    """The rows as CSV; text cells neutralised (no live formula: gateway/tabular/cells.py)."""
    from gateway.tabular.cells import neutral_row

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(neutral_row(row) for row in rows)
    return out.getvalue().encode("utf-8")


def report_xlsx(rows: list[list]) -> bytes:
    """The rows as XLSX: counts and hours as numbers, text cells neutralised and typed as
    text."""
    from openpyxl import Workbook

    from gateway.tabular.cells import xlsx_row

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Outreach")
    sheet.append(xlsx_row(sheet, COLUMNS))
    for row in rows:
        sheet.append(xlsx_row(sheet, [float(v) if isinstance(v, Decimal) else v for v in row]))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def outreach_from_files(otf: list, mif: list, plan: str, quarters: list[Quarter]):
    """Read OTF and MIF files (streamed, row findings kept) into a report. Returns the report
    rows (None when any file has an error: a report is made from whole files or not at all)
    and a FileReport per file."""
    from pathlib import Path

    from gateway.reports import FileReport
    from gateway.tabular import LayoutError, open_table

    report = OutreachReport(plan, quarters)
    files = []
    ok = True
    for kind, paths, feed in (("mif", mif, report.add_assignments),
                              ("otf", otf, report.add_outreach)):
        for path in paths:
            try:
                reader = open_table(Path(path), kind, _counted_layout(Path(path), kind))
            except LayoutError as exc:
                from gateway.rules import default_catalogue

                finding = default_catalogue().finding("REG-FILE-001", "file", None, kind=kind,
                                                      problem=str(exc))
                files.append(FileReport(str(path), kind, [finding] if finding else []))
                ok = False
                continue
            feed(row for _, row in reader)
            findings = [f for f in reader.findings if f.rule != "FILE-003"]
            file_report = FileReport(str(path), kind, findings,
                                     {"rows": reader.rows_total,
                                      "rejected_rows": reader.rows_rejected})
            ok = ok and file_report.valid
            files.append(file_report)
    return (report.rows() if ok else None), files


# the columns the report counts (the others are not read: a 1M-row OTF in seconds)
COUNTED = {"otf": ("member_cin", "outreach_date", "outreach_method", "outreach_successful",
                   "outreach_minutes"),
           "mif": ("member_cin", "authorization_date", "ecm_benefit_start", "ecm_benefit_end")}


def _counted_layout(path, kind: str):
    """The file's own layout (the one its header matches) narrowed to the counted columns,
    without cross-row checks (their memory grows with the rows)."""
    from dataclasses import replace

    from gateway.tabular import load_layout, open_table

    reader = open_table(path, kind)
    rows = iter(reader)
    rows.close()  # only the header was needed: the source is closed
    if reader.layout_name is None:
        return None  # unreadable: the second reading reports why
    layout = load_layout(kind, reader.layout_name)
    wanted = COUNTED[kind]
    return replace(layout, columns=[c for c in layout.columns if c.field in wanted], checks=[])
