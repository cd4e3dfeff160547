"""Row validation: raw cells -> typed canonical values + findings, driven by a layout.

Converters are compiled once per column (date formats become regexes, results of repeated
values are cached), so a row costs a handful of dictionary look-ups per cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Callable

from gateway.checkdigits import luhn_npi_ok  # noqa: F401 - also imported from here
from gateway.findings import Finding, Severity
from gateway.tabular.layouts import Column, Layout, Slot, load_codeset, normalise_header

EXCEL_EPOCH = date(1899, 12, 30)
_CACHE_MAX = 20_000  # per column: repeated values are common, memory stays bounded


class Invalid(Exception):
    """A value that does not convert: the rule that fires and its message values."""

    def __init__(self, rule: str, **values: object) -> None:
        super().__init__(rule)
        self.rule = rule
        self.values = values


_BAD = object()  # cached "invalid" marker


# --- small helpers -----------------------------------------------------------------------------
def _num_text(value: object) -> str:
    if value.__class__ is str:
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value).strip()


def describe_codes(bad: list[str]) -> str:
    """How a message names bad codes: shown only when at most 3 characters long."""
    if all(len(code) <= 3 for code in bad):
        quoted = ", ".join(f"'{code}'" for code in bad)
        return f"code {quoted}" if len(bad) == 1 else f"codes {quoted}"
    return "the value" if len(bad) == 1 else f"{len(bad)} of the values"


# --- dates -------------------------------------------------------------------------------------
_DIRECTIVES = {"Y": r"(?P<Y>\d{4})", "m": r"(?P<m>\d{1,2})", "d": r"(?P<d>\d{1,2})",
               "y": r"(?P<y>\d{2})", "b": r"(?P<b>[A-Za-z]{3})", "B": r"(?P<B>[A-Za-z]{3,9})"}
_HUMAN = {"Y": "YYYY", "m": "MM", "d": "DD", "y": "YY", "b": "Mon", "B": "Month"}
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_MIDNIGHT = r"(?:[ T]0?0:00(?::00(?:\.0+)?)?)?"


def human_format(fmt: str) -> str:
    return re.sub(r"%(.)", lambda m: _HUMAN.get(m.group(1), m.group(0)), fmt)


def compile_date_format(fmt: str, need_day: bool = True) -> Callable[[str], date | None]:
    """A fast parser for a strptime format made of %Y %m %d %y %b %B and literals; the value may
    carry a midnight time (Excel CSV exports write ``1/5/2025 0:00``)."""
    pattern, pos = "", 0
    for m in re.finditer(r"%(.)", fmt):
        pattern += re.escape(fmt[pos:m.start()])
        code = m.group(1)
        if code == "%":
            pattern += "%"
        elif code in _DIRECTIVES:
            pattern += _DIRECTIVES[code]
        else:
            return _strptime_parser(fmt)
        pos = m.end()
    pattern += re.escape(fmt[pos:])
    regex = re.compile(pattern + _MIDNIGHT + r"\Z", re.IGNORECASE)

    def parse(text: str) -> date | None:
        m = regex.match(text)
        if m is None:
            return None
        g = m.groupdict()
        try:
            if g.get("Y"):
                year = int(g["Y"])
            elif g.get("y"):
                year = int(g["y"])
                year += 2000 if year < 69 else 1900
            else:
                return None
            month_name = g.get("b") or g.get("B")
            if month_name:
                month = _MONTHS.get(month_name[:3].lower())
                if month is None or (g.get("B") and not _full_month_ok(g["B"])):
                    return None
            else:
                month = int(g["m"]) if g.get("m") else None
            if month is None:
                return None
            day = int(g["d"]) if g.get("d") else (None if need_day else 1)
            if day is None:
                return None
            return date(year, month, day)
        except ValueError:
            return None

    return parse


def _full_month_ok(name: str) -> bool:
    full = ["january", "february", "march", "april", "may", "june", "july", "august",
            "september", "october", "november", "december"]
    return name.lower() in full or name.lower()[:3] in _MONTHS and len(name) == 3


def _strptime_parser(fmt: str) -> Callable[[str], date | None]:
    def parse(text: str) -> date | None:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            return None
    return parse


def excel_serial(value: float) -> date | None:
    if 1 <= value < 2958466:
        return EXCEL_EPOCH + timedelta(days=int(value))
    return None


def _date_converter(formats: tuple[str, ...]) -> Callable:
    parsers = [compile_date_format(f) for f in formats]
    expected = " or ".join(human_format(f) for f in formats)
    cache: dict[str, object] = {}

    def conv(value):
        if isinstance(value, str):
            hit = cache.get(value)
            if hit is None:
                hit = _BAD
                for parse in parsers:
                    parsed = parse(value)
                    if parsed is not None:
                        hit = parsed
                        break
                if len(cache) < _CACHE_MAX:
                    cache[value] = hit
            if hit is _BAD:
                raise Invalid("ROW-002", expected=expected)
            return hit
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parsed = excel_serial(value)
            if parsed is not None:
                return parsed
        raise Invalid("ROW-002", expected=expected)

    return conv


_MONTH_FORMATS = ("%Y-%m", "%Y%m", "%m/%Y", "%m-%Y", "%b %Y", "%B %Y", "%Y-%m-%d", "%m/%d/%Y")


def _month_converter(formats: tuple[str, ...]) -> Callable:
    parsers = [compile_date_format(f, need_day=False) for f in formats]
    expected = ("a month: YYYY-MM, YYYYMM, MM/YYYY, Mon YYYY or a date" if formats == _MONTH_FORMATS
                else "a month: " + " or ".join(human_format(f) for f in formats))

    def conv(value):
        if isinstance(value, (datetime, date)):
            return f"{value.year:04d}-{value.month:02d}"
        text = _num_text(value)
        for parse in parsers:
            parsed = parse(text)
            if parsed is not None:
                return f"{parsed.year:04d}-{parsed.month:02d}"
        raise Invalid("ROW-002", expected=expected)

    return conv


# --- other types -------------------------------------------------------------------------------
_CIN = re.compile(r"[0-9]{8}[A-Z]\Z")
_DIGITS10 = re.compile(r"[0-9]{10}\Z")
_TIN = re.compile(r"([0-9]{9})\Z|([0-9]{2})-([0-9]{7})\Z")
_INT = re.compile(r"[+-]?[0-9]+(?:\.0*)?\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
_ZIP = re.compile(r"([0-9]{5})(?:-?([0-9]{4}))?\Z")
_PHONE_STRIP = re.compile(r"[\s().\-/]")
_HMM = re.compile(r"([0-9]+):([0-5][0-9])(?::([0-5][0-9]))?\Z")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")

TRUE_WORDS = ("y", "yes", "true", "t", "1", "x")
FALSE_WORDS = ("n", "no", "false", "f", "0")


def _cin(value):
    text = _num_text(value).upper() if not isinstance(value, str) else value.upper()
    if _CIN.match(text):
        return text
    raise Invalid("ROW-003")


def _npi(value):
    text = value if isinstance(value, str) else _num_text(value)
    if not _DIGITS10.match(text):
        raise Invalid("ROW-004", expected="expected 10 digits")
    if not luhn_npi_ok(text):
        raise Invalid("ROW-004", expected="the check digit does not match (Luhn over 80840)")
    return text


def _tin(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = _num_text(value)
        if text.isdigit() and len(text) <= 9:
            return text.zfill(9)  # Excel drops leading zeros of numeric cells
        raise Invalid("ROW-005")
    m = _TIN.match(value if isinstance(value, str) else _num_text(value))
    if m is None:
        raise Invalid("ROW-005")
    return m.group(1) or m.group(2) + m.group(3)


def _phone(value):
    text = _PHONE_STRIP.sub("", _num_text(value))
    if text.startswith("+1"):
        text = text[2:]
    elif len(text) == 11 and text.startswith("1"):
        text = text[1:]
    if _DIGITS10.match(text):
        return text
    raise Invalid("ROW-015", expected="a 10-digit US phone number")


def _email(value):
    text = _num_text(value)
    if _EMAIL.match(text):
        return text
    raise Invalid("ROW-015", expected="an email address (name@domain)")


def _zip(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = _num_text(value)
        if text.isdigit() and len(text) <= 5:
            return text.zfill(5)
    m = _ZIP.match(_num_text(value))
    if m is None:
        raise Invalid("ROW-015", expected="a 5-digit ZIP code or ZIP+4")
    return m.group(1) + ("-" + m.group(2) if m.group(2) else "")


def _with_range(expected: str, low, high) -> str:
    """``expected`` with the allowed range, as a message names it."""
    if low is not None and high is not None:
        return f"{expected} from {low} to {high}"
    if low is not None:
        return f"{expected} of at least {low}"
    if high is not None:
        return f"{expected} of at most {high}"
    return expected


def _int_converter(options: dict) -> Callable:
    low, high = options.get("min"), options.get("max")
    expected = _with_range("a whole number", low, high)

    def conv(value):
        if isinstance(value, bool):
            raise Invalid("ROW-013", expected=expected)
        if isinstance(value, float):
            if not value.is_integer():
                raise Invalid("ROW-013", expected=expected)
            number = int(value)
        elif isinstance(value, int):
            number = value
        else:
            text = _num_text(value).replace(",", "")
            if not _INT.match(text):
                raise Invalid("ROW-013", expected=expected)
            number = int(text.split(".")[0])
        if (low is not None and number < low) or (high is not None and number > high):
            raise Invalid("ROW-013", expected=expected)
        return number

    return conv


_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?\Z")


def _decimal_converter(options: dict, money: bool) -> Callable:
    """Numbers (units) and amounts; amounts may carry ``$`` and thousands separators and have
    at most two decimal places."""
    low, high = options.get("min"), options.get("max")
    expected = _with_range("an amount such as 1,250.00" if money else "a number", low, high)

    def conv(value):
        if isinstance(value, bool):
            raise Invalid("ROW-013", expected=expected)
        if isinstance(value, (int, float)):
            text = _num_text(value)
        else:
            text = _num_text(value).strip()
            if money:
                text = text.replace("$", "").replace(",", "").replace(" ", "")
        if not _DECIMAL.match(text):
            raise Invalid("ROW-013", expected=expected)
        number = Decimal(text)
        if money and number.as_tuple().exponent < -2:
            raise Invalid("ROW-013", expected=expected)
        if (low is not None and number < Decimal(str(low))) or (
                high is not None and number > Decimal(str(high))):
            raise Invalid("ROW-013", expected=expected)
        return number

    return conv


def _minutes_converter(options: dict) -> Callable:
    hours = options.get("unit", "minutes") == "hours"
    expected = ("a duration in hours (e.g. 1.5) or H:MM" if hours
                else "a duration in whole minutes or H:MM")
    low, high = options.get("min", 0), options.get("max")
    if high is not None:
        expected += f", at most {high} minutes"

    def check(minutes: int) -> int:
        if minutes < low or (high is not None and minutes > high):
            raise Invalid("ROW-013", expected=expected)
        return minutes

    def conv(value):
        if isinstance(value, timedelta):
            return check(round(value.total_seconds() / 60))
        if isinstance(value, time):
            return check(value.hour * 60 + value.minute + round(value.second / 60))
        if isinstance(value, datetime):
            raise Invalid("ROW-013", expected=expected)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if hours:
                return check(round(value * 60))
            if isinstance(value, float) and not value.is_integer():
                if 0 < value < 1:  # an Excel time-of-day fraction
                    return check(round(value * 24 * 60))
                raise Invalid("ROW-013", expected=expected)
            return check(int(value))
        text = _num_text(value).lower()
        for suffix in (" minutes", " minute", " mins", " min", "min", "m"):
            if not hours and text.endswith(suffix) and text[:-len(suffix)].strip().isdigit():
                text = text[:-len(suffix)].strip()
                break
        m = _HMM.match(text)
        if m:
            return check(int(m.group(1)) * 60 + int(m.group(2)) + round(int(m.group(3) or 0) / 60))
        if hours:
            if _NUMBER.fullmatch(text):
                return check(round(float(text) * 60))
        elif text.isdigit():
            return check(int(text))
        raise Invalid("ROW-013", expected=expected)

    return conv


def _words(items) -> set[str]:
    """Yes/no words of a layout; YAML turns unquoted YES/NO/ON/OFF into booleans."""
    words = set()
    for w in items:
        if w is True:
            words.update(("true", "yes", "on"))
        elif w is False:
            words.update(("false", "no", "off"))
        else:
            words.add(str(w).strip().lower())
    return words


def _shown(items) -> list[str]:
    return [("yes" if w is True else "no" if w is False else str(w)) for w in list(items)[:3]]


def _bool_converter(options: dict) -> Callable:
    trues = _words(options.get("true") or TRUE_WORDS)
    falses = _words(options.get("false") or FALSE_WORDS)
    shown = _shown(options.get("true") or TRUE_WORDS) + _shown(options.get("false") or FALSE_WORDS)
    expected = ", ".join(shown)

    def conv(value):
        if isinstance(value, bool):
            return value
        text = _num_text(value).lower()
        if text in trues:
            return True
        if text in falses:
            return False
        raise Invalid("ROW-014", expected=expected)

    return conv


_SEPARATORS = re.compile(r"[\s\-/]+")


class _Codes:
    """Allowed values of a code column: a code set file or an inline list, plus a map of plan
    values to codes. Comparison ignores case unless ``case: keep``."""

    def __init__(self, column: Column) -> None:
        opts = column.options
        self.keep_case = opts.get("case") == "keep"
        self.codeset = load_codeset(opts["codeset"]) if opts.get("codeset") else None
        values = opts.get("values")
        self.values = None if values is None else {self._norm(v) for v in values}
        self.order = {self._norm(v): i for i, v in enumerate(values or [])}
        self.label = (f"code set {opts['codeset']}" if self.codeset is not None else
                      "allowed: " + ", ".join(str(v) for v in list(values or [])[:12])
                      + (" ..." if len(values or []) > 12 else ""))
        self.map = {self._norm(k): str(v) for k, v in (opts.get("map") or {}).items()}
        self.checks = self.codeset is not None or self.values is not None

    def _norm(self, value: object) -> str:
        text = _num_text(value)
        return text if self.keep_case else text.upper()

    def code(self, value: object) -> str:
        """The code for a cell value: mapped, else as written, else with spaces, hyphens and
        slashes turned into underscores when that makes it a known code."""
        text = self._norm(value)
        mapped = self.map.get(text)
        if mapped is not None:
            return mapped
        if self.checks and not self.allowed(text):
            alt = _SEPARATORS.sub("_", text)
            if alt != text and self.allowed(alt):
                return alt
        return text

    def rank(self, code: str) -> int:
        """Lists of codes are kept in code set (or inline list) order, whatever the file's."""
        if self.codeset is not None:
            return self.codeset.rank(code)
        return self.order.get(code, len(self.order))

    def allowed(self, code: str) -> bool:
        if self.codeset is not None:
            return code in self.codeset
        return self.values is None or code in self.values


def _code_converter(column: Column) -> Callable:
    codes = _Codes(column)

    def conv(value):
        code = codes.code(value)
        if not codes.allowed(code):
            raise Invalid("ROW-006", found=describe_codes([code]), codeset=codes.label)
        return code

    return conv


def _list_converter(column: Column) -> Callable:
    codes = _Codes(column)
    seps = column.options.get("separator") or [";", "|", ","]
    seps = seps if isinstance(seps, list) else [seps]
    splitter = re.compile("|".join(re.escape(s) for s in seps))

    def conv(value):
        items = []
        for part in splitter.split(_num_text(value)):
            part = part.strip()
            if part:
                code = codes.code(part) if codes.checks or codes.map else part
                if code not in items:
                    items.append(code)
        bad = [c for c in items if codes.checks and not codes.allowed(c)]
        if bad:
            raise Invalid("ROW-006", found=describe_codes(bad), codeset=codes.label)
        if codes.checks and len(items) > 1:
            items.sort(key=codes.rank)
        return items

    return conv


def _text_converter(column: Column) -> Callable:
    opts = column.options
    pattern = re.compile(opts["pattern"]) if opts.get("pattern") else None
    expected = opts.get("expected") or "the layout's pattern"
    max_length = opts.get("max_length")
    case = opts.get("case")

    def conv(value):
        text = _num_text(value)
        if case == "upper":
            text = text.upper()
        elif case == "lower":
            text = text.lower()
        if max_length and len(text) > max_length:
            raise Invalid("ROW-015", expected=f"at most {max_length} characters")
        if pattern is not None and not pattern.fullmatch(text):
            raise Invalid("ROW-015", expected=expected)
        return text

    return conv


_MISS = object()


def _memo(conv: Callable) -> Callable:
    """Cache a converter's result (or its Invalid) per distinct text: provider ids, codes and
    phone numbers repeat from row to row. Lists are copied so rows never share one."""
    cache: dict[str, object] = {}

    def wrapped(value):
        if value.__class__ is not str:
            return conv(value)
        hit = cache.get(value, _MISS)
        if hit is _MISS:
            try:
                hit = conv(value)
            except Invalid as exc:
                hit = exc
            if len(cache) < _CACHE_MAX:
                cache[value] = hit
        if hit.__class__ is Invalid:
            raise hit
        if hit.__class__ is list:
            return list(hit)
        return hit

    return wrapped


def make_converter(column: Column, layout: Layout) -> Callable:
    conv = _make_converter(column, layout)
    if column.type in ("code", "list", "npi", "tin", "phone", "zip", "email", "bool", "flags",
                       "month", "int", "minutes", "decimal", "money"):
        return _memo(conv)
    return conv


def _make_converter(column: Column, layout: Layout) -> Callable:
    kind = column.type
    opts = column.options
    if kind == "date":
        fmt = opts.get("format") or layout.date_formats
        return _date_converter(tuple(fmt) if isinstance(fmt, list) else
                               (fmt,) if isinstance(fmt, str) else tuple(fmt))
    if kind == "month":
        fmt = opts.get("format") or _MONTH_FORMATS
        return _month_converter(tuple(fmt) if isinstance(fmt, (list, tuple)) else (fmt,))
    if kind == "int":
        return _int_converter(opts)
    if kind == "minutes":
        return _minutes_converter(opts)
    if kind in ("decimal", "money"):
        return _decimal_converter(opts, money=kind == "money")
    if kind in ("bool", "flags"):
        return _bool_converter(opts)
    if kind == "code":
        return _code_converter(column)
    if kind == "list":
        return _list_converter(column)
    if kind == "text":
        return _text_converter(column)
    return {"cin": _cin, "npi": _npi, "tin": _tin, "phone": _phone, "email": _email,
            "zip": _zip}[kind]


# --- header binding ----------------------------------------------------------------------------
@dataclass
class HeaderMatch:
    """How a layout's columns sit in one candidate header row."""
    layout: Layout
    header_row: int
    cells: tuple
    positions: dict  # Slot -> column index
    texts: dict  # Slot -> header text as found
    missing_required: list[str]
    missing_optional: list[str]
    unexpected: list[str]
    duplicates: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing_required

    @property
    def score(self) -> tuple:
        return (self.ok, len(self.positions), -len(self.unexpected))


def match_header(layout: Layout, row_number: int, cells) -> HeaderMatch:
    positions: dict[Slot, int] = {}
    texts: dict[Slot, str] = {}
    unexpected, duplicates = [], []
    for index, cell in enumerate(cells):
        if cell is None:
            continue
        text = str(cell).strip()
        if not text:
            continue
        slot = layout.slot_for(text)
        if slot is None:
            unexpected.append(text)
        elif slot in positions:
            duplicates.append(text)
        else:
            positions[slot] = index
            texts[slot] = text
    missing_required, missing_optional = [], []
    flag_fields_seen = {s.column.field for s in positions if s.flag is not None}
    for slot in layout.slots:
        if slot in positions:
            continue
        (missing_required if slot.required else missing_optional).append(slot.label)
    for col in layout.columns:
        if col.type == "flags" and col.required and col.field not in flag_fields_seen:
            missing_required.append(f"{col.field} (none of its yes/no columns)")
    return HeaderMatch(layout, row_number, tuple(cells), positions, texts, missing_required,
                       missing_optional, unexpected, duplicates)


# --- row validation ----------------------------------------------------------------------------
class RowValidator:
    """Validates the data rows under one matched header."""

    def __init__(self, match: HeaderMatch, catalogue, canonical: dict[str, Column],
                 check_width: bool) -> None:
        self.layout = layout = match.layout
        self.catalogue = catalogue
        self.match = match
        self.header_width = max(match.positions.values(), default=-1) + 1
        last = 0
        for i, cell in enumerate(match.cells):
            if cell is not None and str(cell).strip():
                last = i + 1
        self.header_width = max(self.header_width, last)
        self.check_width = check_width
        self.header_of: dict[str, str] = {}
        self.plain: list[tuple] = []  # (field, index, header, converter, required)
        # (field, [(index, header, code, conv)], required, label, code set for the order)
        self.flag_groups: list[tuple] = []
        self.empty_row: dict[str, object] = {}
        for name, col in canonical.items():
            self.empty_row[name] = col.empty
        for col in layout.columns:
            self.empty_row[col.field] = col.empty
            conv = make_converter(col, layout)
            if col.type == "flags":
                members = []
                for slot, index in match.positions.items():
                    if slot.column is col:
                        members.append((index, match.texts[slot], slot.flag.code, conv))
                members.sort()
                label = ", ".join(h for _, h, _, _ in members) or col.headers[0]
                self.header_of[col.field] = label
                if members:
                    order = (load_codeset(col.options["codeset"])
                             if col.options.get("codeset") else None)
                    self.flag_groups.append((col.field, members, col.required, label, order))
                continue
            slot = next((s for s in match.positions if s.column is col), None)
            if slot is None:
                self.header_of[col.field] = col.headers[0]
                continue
            self.header_of[col.field] = match.texts[slot]
            self.plain.append((col.field, match.positions[slot], match.texts[slot], conv,
                               col.required))
        self.after = [(c.field, c.after) for c in layout.columns if c.after]
        self.conditional = [(c.field, c.required_with) for c in layout.columns if c.required_with]
        self.effective = [(c.field, c.effective_on, load_codeset(c.options["codeset"]))
                          for c in layout.columns if c.effective_on and c.options.get("codeset")]
        self.business = [c for c in layout.checks if c.check == "business_days"]
        self.unique = [(c, {}) for c in layout.checks if c.check == "unique"]

    # ------------------------------------------------------------------------------------------
    def _add(self, out: list, rule: str, location: str, **values) -> None:
        finding = self.catalogue.finding(rule, location, **values)
        if finding is not None:
            out.append(finding)

    def validate(self, number: int, cells) -> tuple[dict, list[Finding], bool]:
        values = dict(self.empty_row)
        findings: list[Finding] = []
        bad: set[str] = set()
        width = len(cells)
        for name, index, header, conv, required in self.plain:
            raw = cells[index] if index < width else None
            if raw.__class__ is str:
                raw = raw.strip()
                if not raw:
                    raw = None
            if raw is None:
                if required:
                    self._add(findings, "ROW-001", f"row {number}, column {header}",
                              column=header)
                    bad.add(name)
                continue
            try:
                values[name] = conv(raw)
            except Invalid as exc:
                self._add(findings, exc.rule, f"row {number}, column {header}", column=header,
                          **exc.values)
                bad.add(name)
        for name, members, required, label, order in self.flag_groups:
            codes = []
            for index, header, code, conv in members:
                raw = cells[index] if index < width else None
                if raw.__class__ is str:
                    raw = raw.strip() or None
                if raw is None:
                    continue
                try:
                    if conv(raw):
                        codes.append(code)
                except Invalid as exc:
                    self._add(findings, exc.rule, f"row {number}, column {header}",
                              column=header, **exc.values)
                    bad.add(name)
            if order is not None and len(codes) > 1:
                codes.sort(key=order.rank)
            values[name] = codes
            if required and not codes and name not in bad:
                self._add(findings, "ROW-018", f"row {number}", column=label)
                bad.add(name)
        if self.check_width and width > self.header_width:
            extra = [c for c in cells[self.header_width:] if c is not None and str(c).strip()]
            if extra:
                self._add(findings, "ROW-016", f"row {number}",
                          found=self.header_width + len(extra), expected=self.header_width)
        self._cross_checks(number, values, bad, findings)
        has_error = any(f.severity is Severity.ERROR for f in findings)
        if not has_error:
            for check, seen in self.unique:
                key = tuple(tuple(v) if isinstance(v, list) else v
                            for v in (values[f] for f in check.params["fields"]))
                first = seen.get(key)
                if first is None:
                    seen[key] = number
                else:
                    self._add(findings, check.rule, f"row {number}", first_row=first,
                              fields=" and ".join(self.header_of[f]
                                                  for f in check.params["fields"]))
        return values, findings, has_error

    def _cross_checks(self, number: int, values: dict, bad: set, findings: list) -> None:
        for name, other in self.after:
            later, earlier = values.get(name), values.get(other)
            if later is not None and earlier is not None and name not in bad \
                    and other not in bad and later < earlier:
                header = self.header_of[name]
                self._add(findings, "ROW-007", f"row {number}, column {header}", column=header,
                          other=self.header_of[other])
        for name, conditions in self.conditional:
            if name in bad or values.get(name) not in (None, []):
                continue
            for cond in conditions:
                other = values.get(cond.field)
                if other in (None, []) or cond.field in bad:
                    continue
                if cond.values is not None and not _value_in(other, cond.values):
                    continue
                header = self.header_of[name]
                condition = ("filled" if cond.values is None else str(cond.values[0])
                             if len(cond.values) == 1 else
                             "one of " + ", ".join(str(v) for v in cond.values))
                self._add(findings, cond.rule, f"row {number}, column {header}", column=header,
                          other=self.header_of[cond.field], condition=condition)
                bad.add(name)
                break
        for name, date_field, codeset in self.effective:
            day = values.get(date_field)
            codes = values.get(name)
            if day is None or not codes or name in bad:
                continue
            codes = codes if isinstance(codes, list) else [codes]
            stale = [c for c in codes if c in codeset and not codeset.in_effect(c, day)]
            if stale:
                header = self.header_of[name]
                self._add(findings, "ROW-017", f"row {number}, column {header}", column=header,
                          found=describe_codes(stale), other=self.header_of[date_field],
                          codeset=f"code set {codeset.name}")
        for check in self.business:
            start, end = values.get(check.params["from"]), values.get(check.params["to"])
            if start is None or end is None or end <= start:
                continue
            limit = check.params["limit"]
            holidays = check.params["holidays"]
            if business_days_between(start, end, holidays) > limit:
                header = self.header_of[check.params["to"]]
                self._add(findings, check.rule, f"row {number}, column {header}", column=header,
                          other=self.header_of[check.params["from"]], limit=limit,
                          holidays=" and listed holidays" if holidays else "")


def _value_in(value: object, allowed: tuple) -> bool:
    if isinstance(value, bool):
        return any(a is value or (isinstance(a, str) and a.lower() in
                                  (TRUE_WORDS if value else FALSE_WORDS)) for a in allowed)
    norm = {normalise_header(a) for a in allowed}
    if isinstance(value, list):
        return any(normalise_header(v) in norm for v in value)
    return normalise_header(value) in norm


def business_days_between(start: date, end: date, holidays=frozenset()) -> int:
    """Business days after ``start`` up to and including ``end`` (weekends and ``holidays``
    excluded): told on the day of authorization = 0, on the next business day = 1."""
    if end <= start:
        return 0
    full_weeks, rest = divmod((end - start).days, 7)
    count = full_weeks * 5
    weekday = start.weekday()
    for offset in range(1, rest + 1):
        if (weekday + offset) % 7 < 5:
            count += 1
    if holidays:
        count -= sum(1 for h in holidays if start < h <= end and h.weekday() < 5)
    return count
