"""Column layouts of the member-level tabular files, as data.

A layout is one YAML file ``mappings/layouts/<kind>/<name>.yaml`` (kind: ``mif``, ``rtf``,
``otf``, ``roster``). It names, for every canonical field, the column header(s) that carry it in
the file, the value type and format, whether it is required, and the cross-field checks. A plan
analyst adds a plan's variant by copying ``default.yaml`` and editing it; no Python changes.

Layout file keys (unknown keys are refused, so a typo is caught when the layout is loaded):

``kind``, ``description``; ``formats`` (``[csv, xlsx]`` by default); ``sheet`` (XLSX: the sheet
read first; other visible sheets are searched too); ``header_search_rows`` (how many rows at the
top may hold a title block before the header row, default 20); ``date_format`` (default strptime
format(s) of date columns); ``columns`` (list); ``checks`` (list).

Column keys: ``field`` (canonical name), ``header`` (text or list of accepted texts; matching
ignores case, spaces and punctuation), ``type`` (see :data:`TYPES`), ``required``, ``format``,
``codeset`` (a file ``profiles/codesets/<name>.csv``) or ``values`` (inline list), ``map``
(plan value -> code), ``separator`` (list types), ``min``/``max`` (numbers), ``unit``
(``minutes``/``hours`` for durations), ``pattern`` + ``expected`` (text), ``true``/``false``
(yes/no words), ``flags`` (one yes/no column per code), ``after`` (this date must be the same
day or later than that field's), ``required_with`` (conditions), ``effective_on`` (codes must be in
effect on that date field).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

import yaml

from gateway.paths import MAPPINGS, PROFILES
from gateway.periods import within

KINDS = ("mif", "rtf", "otf", "roster", "invoice", "cs-auth", "claims", "directory")
# Where a kind's layouts live, under mappings/ (default: layouts/<kind>).
KIND_FOLDERS = {"invoice": Path("invoice") / "layouts"}

TYPES = {
    "text", "code", "list", "flags", "date", "month", "int", "minutes", "bool",
    "cin", "npi", "tin", "phone", "email", "zip", "decimal", "money",
}

_LAYOUT_KEYS = {"kind", "description", "formats", "sheet", "header_search_rows", "date_format",
                "columns", "checks"}
_COLUMN_KEYS = {"field", "header", "type", "required", "format", "codeset", "values", "map",
                "separator", "min", "max", "unit", "pattern", "expected", "true", "false",
                "flags", "after", "required_with", "effective_on", "case", "max_length",
                "description"}
_CHECKS = {"unique": {"fields", "rule"},
           "business_days": {"from", "to", "limit", "holidays", "rule"}}
_DEFAULT_RULES = {"unique": "ROW-012", "business_days": "ROW-011", "required_with": "ROW-008"}


class LayoutDefinitionError(ValueError):
    """A layout file itself is wrong (a configuration error, not a problem of the input)."""


def layouts_dir() -> Path:
    return MAPPINGS / "layouts"


def codesets_dir() -> Path:
    return PROFILES / "codesets"


def normalise_header(text: object) -> str:
    """Header comparison key: case, spacing and punctuation do not matter."""
    if text is None:
        return ""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split())


# --- code sets ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeSet:
    name: str
    codes: dict[str, tuple[date | None, date | None]]

    def __contains__(self, code: str) -> bool:
        return code in self.codes

    def rank(self, code: str) -> int:
        """Position of a code in the file (lists of codes are kept in this order)."""
        return self._order.get(code, len(self._order))

    @property
    def _order(self) -> dict[str, int]:
        order = self.__dict__.get("_order_cache")
        if order is None:
            order = {code: i for i, code in enumerate(self.codes)}
            object.__setattr__(self, "_order_cache", order)
        return order

    def in_effect(self, code: str, day: date) -> bool:
        start, end = self.codes.get(code, (None, None))
        return within(day, start, end)


def _iso(text: str | None) -> date | None:
    text = (text or "").strip()
    return date.fromisoformat(text) if text else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def load_codeset(name: str, folder: str | None = None) -> CodeSet:
    """A code set file ``profiles/codesets/<name>.csv`` (read again when the file changes)."""
    path = Path(folder or codesets_dir()) / f"{name}.csv"
    return _load_codeset(str(path), name, _mtime(path))


@lru_cache(maxsize=64)
def _load_codeset(path_text: str, name: str, _mtime: float) -> CodeSet:
    path = Path(path_text)
    if not path.is_file():
        raise LayoutDefinitionError(f"code set {name!r} not found ({path})")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        lines = (line for line in handle if not line.lstrip().startswith("#"))
        codes = {}
        for row in csv.DictReader(lines):
            code = (row.get("code") or "").strip()
            if code:
                codes[code] = (_iso(row.get("effective_from")), _iso(row.get("effective_to")))
    return CodeSet(name, codes)


# --- layout model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """``field`` filled (or, with ``values``, equal to one of them) makes the column required."""
    field: str
    values: tuple | None
    rule: str


@dataclass(frozen=True)
class Flag:
    headers: tuple[str, ...]
    code: str


@dataclass(frozen=True)
class Column:
    field: str
    headers: tuple[str, ...]
    type: str
    required: bool = False
    options: dict = field(default_factory=dict, hash=False, compare=False)
    after: str | None = None
    required_with: tuple[Condition, ...] = ()
    flags: tuple[Flag, ...] = ()
    effective_on: str | None = None

    @property
    def empty(self):
        return [] if self.type in ("list", "flags") else None


@dataclass(frozen=True)
class Check:
    check: str
    rule: str
    params: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Slot:
    """One physical column the layout expects: a column, or one yes/no column of a flags field."""
    column: Column
    flag: Flag | None
    headers: tuple[str, ...]
    required: bool

    @property
    def label(self) -> str:
        return self.headers[0]


@dataclass
class Layout:
    kind: str
    name: str
    columns: list[Column]
    description: str = ""
    formats: tuple[str, ...] = ("csv", "xlsx")
    sheet: str | None = None
    header_search_rows: int = 20
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    checks: list[Check] = field(default_factory=list)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.slots: list[Slot] = []
        self._by_key: dict[str, Slot] = {}
        for col in self.columns:
            if col.type == "flags":
                for flag in col.flags:
                    self.slots.append(Slot(col, flag, flag.headers, False))
            else:
                self.slots.append(Slot(col, None, col.headers, col.required))
        for slot in self.slots:
            for header in slot.headers:
                self._by_key.setdefault(normalise_header(header), slot)

    @property
    def fields(self) -> list[str]:
        return [c.field for c in self.columns]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.field == name), None)

    def slot_for(self, header: object) -> Slot | None:
        return self._by_key.get(normalise_header(header))

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, name: str, kind: str | None = None,
                  path: Path | None = None, catalogue=None) -> "Layout":
        where = f"layout {path or name}"

        def fail(msg: str) -> LayoutDefinitionError:
            return LayoutDefinitionError(f"{where}: {msg}")

        if not isinstance(data, dict):
            raise fail("must be a mapping")
        unknown = set(data) - _LAYOUT_KEYS
        if unknown:
            raise fail(f"unknown keys {sorted(unknown)}")
        kind = kind or data.get("kind")
        if kind not in KINDS:
            raise fail(f"kind must be one of {KINDS}")
        if data.get("kind") not in (None, kind):
            raise fail(f"says kind {data.get('kind')!r} but sits in the {kind} folder")
        formats = tuple(_as_list(data.get("formats") or ["csv", "xlsx"]))
        if not set(formats) <= {"csv", "xlsx"}:
            raise fail("formats must be csv and/or xlsx")
        date_formats = tuple(_as_list(data.get("date_format") or "%Y-%m-%d"))
        columns: list[Column] = []
        for raw in data.get("columns") or []:
            columns.append(_column(raw, fail))
        if not columns:
            raise fail("has no columns")
        names = [c.field for c in columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise fail(f"fields defined twice: {sorted(dupes)}")
        checks = []
        for raw in data.get("checks") or []:
            if not isinstance(raw, dict) or raw.get("check") not in _CHECKS:
                raise fail(f"a check must say check: one of {sorted(_CHECKS)}")
            extra = set(raw) - _CHECKS[raw["check"]] - {"check"}
            if extra:
                raise fail(f"check {raw['check']}: unknown keys {sorted(extra)}")
            params = {k: v for k, v in raw.items() if k not in ("check", "rule")}
            if raw["check"] == "unique":
                params["fields"] = tuple(_as_list(params.get("fields")))
                refs = params["fields"]
            else:
                params["limit"] = int(params.get("limit", 10))
                params["holidays"] = frozenset(_holiday(d, fail) for d in
                                               params.get("holidays") or [])
                refs = (params.get("from"), params.get("to"))
            for ref in refs:
                if ref not in names:
                    raise fail(f"check {raw['check']} refers to unknown field {ref!r}")
            checks.append(Check(raw["check"], raw.get("rule") or _DEFAULT_RULES[raw["check"]],
                                params))
        layout = cls(kind=kind, name=name, columns=columns,
                     description=str(data.get("description") or ""), formats=formats,
                     sheet=data.get("sheet"),
                     header_search_rows=int(data.get("header_search_rows") or 20),
                     date_formats=date_formats, checks=checks, path=path)
        layout._validate(fail, catalogue)
        return layout

    def _validate(self, fail, catalogue) -> None:
        names = set(self.fields)
        for col in self.columns:
            if col.after and col.after not in names:
                raise fail(f"{col.field}: after refers to unknown field {col.after!r}")
            if col.effective_on and col.effective_on not in names:
                raise fail(f"{col.field}: effective_on refers to unknown field "
                           f"{col.effective_on!r}")
            for cond in col.required_with:
                if cond.field not in names:
                    raise fail(f"{col.field}: required_with refers to unknown field {cond.field!r}")
            codeset = col.options.get("codeset")
            if codeset:
                codes = load_codeset(codeset)
                unknown = [f.code for f in col.flags if f.code not in codes]
                if unknown:
                    raise fail(f"{col.field}: flag codes {unknown} are not in code set {codeset}")
        seen: dict[str, str] = {}
        for slot in self.slots:
            for header in slot.headers:
                key = normalise_header(header)
                if key in seen and seen[key] != slot.label:
                    raise fail(f"header {header!r} is used by two columns")
                seen[key] = slot.label
        if catalogue is None:
            from gateway.rules import default_catalogue
            catalogue = default_catalogue()
        rules = [c.rule for c in self.checks]
        rules += [cond.rule for col in self.columns for cond in col.required_with]
        for rule in rules:
            if rule not in catalogue:
                raise fail(f"unknown rule id {rule!r}")


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _holiday(value, fail) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise fail(f"holiday {value!r} is not a YYYY-MM-DD date") from None


def _column(raw: dict, fail) -> Column:
    if not isinstance(raw, dict) or not raw.get("field"):
        raise fail("every column needs a field")
    # YAML reads the keys `true:` / `false:` as booleans
    raw = {("true" if k is True else "false" if k is False else k): v for k, v in raw.items()}
    name = raw["field"]
    unknown = set(raw) - _COLUMN_KEYS
    if unknown:
        raise fail(f"column {name}: unknown keys {sorted(unknown)}")
    ctype = raw.get("type", "text")
    if ctype not in TYPES:
        raise fail(f"column {name}: unknown type {ctype!r} (known: {sorted(TYPES)})")
    headers = tuple(str(h) for h in _as_list(raw.get("header")))
    flags: tuple[Flag, ...] = ()
    if ctype == "flags":
        flags = tuple(Flag(tuple(str(h) for h in _as_list(f.get("header"))), str(f["code"]))
                      for f in raw.get("flags") or [])
        if not flags or any(not f.headers for f in flags):
            raise fail(f"column {name}: a flags column needs flags: [{{header, code}}, ...]")
        headers = headers or (f"{name} yes/no columns",)
    elif not headers:
        raise fail(f"column {name}: needs a header")
    conditions = []
    for cond in _as_list(raw.get("required_with")):
        if isinstance(cond, str):
            cond = {"field": cond}
        values = cond.get("values")
        conditions.append(Condition(
            cond["field"],
            tuple(_as_list(values)) if values is not None else None,
            cond.get("rule") or _DEFAULT_RULES["required_with"]))
    options = {k: raw[k] for k in ("format", "codeset", "values", "map", "separator", "min",
                                   "max", "unit", "pattern", "expected", "true", "false",
                                   "case", "max_length", "description") if k in raw}
    if ctype == "code" and "codeset" not in options and "values" not in options:
        raise fail(f"column {name}: a code column needs codeset or values")
    if "pattern" in options:
        try:
            re.compile(options["pattern"])
        except re.error as exc:
            raise fail(f"column {name}: bad pattern ({exc})") from None
    return Column(field=name, headers=headers, type=ctype, required=bool(raw.get("required")),
                  options=options, after=raw.get("after"), required_with=tuple(conditions),
                  flags=flags, effective_on=raw.get("effective_on"))


def _layout_order(name: str) -> tuple[int, str]:
    return (0 if name == "default" else 1, name)


def kind_dir(kind: str, folder: Path | None = None) -> Path:
    """The folder of a kind's layouts: ``<folder>/<kind>`` when a folder is given, else
    ``mappings/layouts/<kind>`` (invoices: ``mappings/invoice/layouts``)."""
    if folder is not None:
        return Path(folder) / kind
    if kind in KIND_FOLDERS:
        return MAPPINGS / KIND_FOLDERS[kind]
    return layouts_dir() / kind


def layout_names(kind: str, folder: Path | None = None) -> list[str]:
    base = kind_dir(kind, folder)
    return sorted((p.stem for p in base.glob("*.yaml")), key=_layout_order)


def load_layout(kind: str, name: str, folder: Path | None = None) -> Layout:
    """The layout ``<name>.yaml`` of a kind (read again when the file changes);
    FileNotFoundError when there is none."""
    base = kind_dir(kind, folder)
    return _load_layout(kind, name, str(base), _mtime(base / f"{name}.yaml"))


@lru_cache(maxsize=64)
def _load_layout(kind: str, name: str, folder: str, _mtime: float) -> Layout:
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LayoutDefinitionError(f"layout {path}: not valid YAML ({exc})") from None
    return Layout.from_dict(data, name=name, kind=kind, path=path)


def load_layouts(kind: str, folder: Path | None = None) -> list[Layout]:
    """Every layout of a kind, ``default`` first."""
    return [load_layout(kind, n, folder) for n in layout_names(kind, folder)]


def default_fields(kind: str, folder: Path | None = None) -> dict[str, Column]:
    """The canonical fields of a kind (its default layout's columns); every typed row carries
    each of them, empty when a plan's layout has no such column."""
    try:
        layout = load_layout(kind, "default", folder)
    except FileNotFoundError:
        return {}
    return {c.field: c for c in layout.columns}
