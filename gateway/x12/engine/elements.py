"""Element-level checks of one segment against its map node.

Two levels:

- :func:`is_clean` — one compiled regular expression over the segment text (plus the few
  post-checks a regex cannot carry), built by :func:`compile_fast` from the node. It is
  *sound*: when it accepts, the detailed checks would find nothing. Most segments of a real
  file stop here.
- :func:`check` — the detailed checks, run only when the fast test fails. They follow the
  X12 element semantics pyx12 implements (same error codes, same order), so our findings and
  pyx12's line up: required/not-used, length (digits only for N and R), character set, code
  lists (inline and external), data types (N, R, DT/D8/D6/RD8, TM, ID/AN, B), the DTP
  date-format qualifier and the 1250/1251 pair, map regexes and the syntax notes P/R/C/E/L.

Errors are tuples ``(code, element_or_None, value)``; ``element`` None means a segment-level
error (too many elements or components, syntax notes, composite usage), reported by the
validator as a segment error (IK304 8).
"""

from __future__ import annotations

import re

from gateway.x12.engine.nodes import Composite, Element, Segment, code_sets

# pyx12's character sets (validation.py): basic, extended, extended for 00501
_EXT = r"""A-Z0-9!"&'()*+,\-./:;?= a-z%~@\[\]_{}\\|<>#$"""
_EXT5 = r"""A-Z0-9!"&'()*+,\-./:;?= a-z%~@\[\]_{}\\|<>^`#$"""
_BAD_EXT = re.compile(f"[^{_EXT}]", re.S | re.ASCII)
_BAD_EXT5 = re.compile(f"[^{_EXT5}]", re.S | re.ASCII)
_NUM = re.compile(r"-?[0-9]+", re.S | re.ASCII)
_REAL = re.compile(r"-?[0-9]*(\.[0-9]+)?", re.S | re.ASCII)
_DIGITS = re.compile(r"[0-9]*", re.ASCII)
_CONTROL = {"\x07": "BEL", "\x09": "HT", "\x0a": "LF", "\x0b": "VT", "\x0c": "FF", "\x0d": "CR",
            "\x1c": "FS", "\x1d": "GS", "\x1e": "RS", "\x1f": "US", "\x01": "SOH", "\x02": "STX",
            "\x03": "ETX", "\x04": "EOT", "\x05": "ENQ", "\x06": "ACK", "\x11": "DC1",
            "\x12": "DC2", "\x13": "DC3", "\x14": "DC4", "\x15": "NAK", "\x16": "SYN",
            "\x17": "ETB"}
_DATE_TYPES = ("RD8", "DT", "D8", "D6")


# -- data types ---------------------------------------------------------------------------------
def valid_date(data_type: str, val: str) -> bool:
    if data_type == "D8" and len(val) != 8 or data_type == "D6" and len(val) != 6:
        return False
    if not _DIGITS.fullmatch(val) or len(val) not in (6, 8, 12):
        return False
    if len(val) == 6:
        val = ("20" if int(val[0:2]) < 50 else "19") + val
    year, month, day = int(val[0:4]), int(val[4:6]), int(val[6:8])
    if year < 1800 or not 1 <= month <= 12:
        return False
    if month in (1, 3, 5, 7, 8, 10, 12):
        top = 31
    elif month in (4, 6, 9, 11):
        top = 30
    elif not year % 4 and not (not year % 100 and year % 400):
        top = 29
    else:
        top = 28
    if not 1 <= day <= top:
        return False
    return len(val) != 12 or valid_time(val[8:12])


def valid_time(val: str) -> bool:
    if not _DIGITS.fullmatch(val):
        return False
    if val[0:2] > "23" or val[2:4] > "59":
        return False
    if len(val) > 4:
        if len(val) < 6 or val[4:6] > "59" or len(val) > 8:
            return False
    return True


def valid_type(val: str, data_type: str | None, icvn: str) -> bool:
    if not data_type:
        return True
    if data_type[0] == "N":
        return _NUM.fullmatch(val) is not None
    if data_type == "R":
        return _REAL.fullmatch(val) is not None
    if data_type in ("ID", "AN"):
        return not (_BAD_EXT5 if icvn == "00501" else _BAD_EXT).search(val)
    if data_type == "RD8":
        if "-" not in val:
            return False
        parts = val.split("-")
        return len(parts) == 2 and valid_date("D8", parts[0]) and valid_date("D8", parts[1])
    if data_type in ("DT", "D8", "D6"):
        return valid_date(data_type, val)
    if data_type == "TM":
        return valid_time(val)
    return data_type == "B"


# -- detailed checks ----------------------------------------------------------------------------
def _when_empty(el: Element) -> list:
    if el.usage == "R" and (el.seq != 1 or not el.parent.is_composite() or
                            el.parent.usage == "R"):
        return [("1", el, None)]
    return []


def _element(el: Element, value: str | None, icvn: str, comp_sep: str,
             type_list: list | None = None) -> list:
    if value is not None and comp_sep in value and el.parent.is_segment:
        return [("6", el, value)]  # a composite where a simple element belongs
    if not value:
        return _when_empty(el)
    if el.usage == "N":
        return [("10", el, None)]
    errors = []
    dt = el.data_type
    measured = value.replace("-", "").replace(".", "") if dt and (dt == "R" or dt[0] == "N") \
        else value
    if len(measured) < el.min_len:
        errors.append(("4", el, value))
    if len(measured) > el.max_len:
        errors.append(("5", el, value))
    for ch in value:
        if ch in _CONTROL:
            errors.append(("6", el, f"<{_CONTROL[ch]}>"))
            return errors
    if dt in ("AN", "ID") and value[-1] == " " and len(value.rstrip()) >= el.min_len:
        errors.append(("6", el, value))
    if (el.codes or el.external) and value not in el.codes and not (
            el.external and value in code_sets()[el.external]):
        errors.append(("7", el, value))
    if not valid_type(value, dt, icvn):
        code = "8" if dt in _DATE_TYPES else "9" if dt == "TM" else "6"
        errors.append((code, el, value))
    if type_list:
        if not any(t is not None and valid_type(value, t, "00401") for t in type_list):
            if "TM" in type_list:
                errors.append(("9", el, value))
            elif any(t in type_list for t in _DATE_TYPES):
                errors.append(("8", el, value))
    if el.regex is not None and not el.regex.search(value):
        errors.append(("7", el, value))
    return errors


def _composite(comp: Composite, value: str | None, icvn: str, comp_sep: str) -> list:
    parts = value.split(comp_sep) if value is not None else None
    empty = parts is None or not any(parts)
    if empty and comp.usage in ("N", "S"):
        return []
    if comp.usage == "R" and empty:
        return [("1", None, comp.refdes)]
    if comp.usage == "N":
        return [("5", None, comp.refdes)]
    errors = []
    count = len(comp.children)
    if len(parts) > count:
        errors.append(("13", None, comp.refdes))
    for i, child in enumerate(comp.children):
        errors += _element(child, parts[i] if i < len(parts) else None, icvn, comp_sep)
    return errors


def check(node: Segment, fields: list[str], icvn: str, comp_sep: str) -> list:
    """Every element-level error of one segment (``fields[0]`` is the segment id)."""
    errors = []
    children = node.elements
    present = len(fields) - 1
    if present > len(children):
        errors.append(("3", None, None))
    dtype: list = []
    type_list: list = []
    for i, child in enumerate(children):
        value = fields[i + 1] if i < present else None
        if isinstance(child, Composite):
            errors += _composite(child, value, icvn, comp_sep)
            continue
        if i >= present:
            errors += _element(child, None, icvn, comp_sep)
            continue
        if i == 1 and node.id == "DTP" and value in ("RD8", "D8", "D6", "DT", "TM"):
            dtype = [value]
        if child.data_ele == "1250":
            type_list.extend(child.valid_codes)
        if i == 2 and node.id == "DTP":
            errors += _element(child, value, icvn, comp_sep, dtype)
        elif child.data_ele == "1251" and type_list:
            errors += _element(child, value, icvn, comp_sep, type_list)
        else:
            errors += _element(child, value, icvn, comp_sep)
    for kind, positions in node.syntax:
        if not syntax_ok(kind, positions, fields):
            errors.append(("10" if kind == "E" else "2", None, (kind, positions)))
    return errors


def syntax_ok(kind: str, positions: tuple, fields: list[str]) -> bool:
    n = len(fields)

    def has(p: int) -> bool:
        return p < n and fields[p] != ""

    if len(positions) < 2:
        return False
    if kind == "P":
        count = sum(has(p) for p in positions)
        return count in (0, len(positions))
    if kind == "R":
        return any(has(p) for p in positions)
    if kind == "E":
        return sum(has(p) for p in positions) <= 1
    if kind == "C":
        return not has(positions[0]) or all(has(p) for p in positions[1:])
    if kind == "L":
        return not has(positions[0]) or any(has(p) for p in positions[1:])
    return False


# -- the fast path ------------------------------------------------------------------------------
_MONTH_DAY = (r"(?:(?:0[13578]|1[02])(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)"
              r"(?:0[1-9]|[12][0-9]|30)|02(?:0[1-9]|1[0-9]|2[0-8]))")
_D8 = r"(?:1[89]|[2-9][0-9])[0-9]{2}" + _MONTH_DAY
_D6 = r"[0-9]{2}" + _MONTH_DAY
_TM = r"(?:[01][0-9]|2[0-3])[0-5][0-9](?:[0-5][0-9][0-9]{0,2})?"
_LARGE_CODESET = 300


class _NoFast(Exception):
    """This element cannot be expressed soundly in the fast pattern."""


# placeholders in a compiled pattern source, replaced once per file's delimiters
_P_ELEMENT, _P_COMPONENT, _P_ANY, _P_NOSPACE, _P_RAW = "\x1d", "\x1e", "\x1c", "\x1b", "\x1a"


def _charclass(icvn: str, delims: str, space: bool = True) -> str:
    return _P_ANY if space else _P_NOSPACE


def _type_pattern(dt: str | None) -> str | None:
    return {"D8": _D8, "RD8": f"{_D8}-{_D8}", "TM": _TM, "D6": _D6}.get(dt or "")


def _value_pattern(el: Element, icvn: str, delims: str, post: list, path: tuple,
                   type_list: list | None = None) -> str:
    """A pattern for a present (non-empty), valid value of ``el``."""
    if el.usage == "N":
        raise _NoFast
    dt = el.data_type
    lo, hi = max(el.min_len, 1), el.max_len
    if el.regex is not None:
        post.append(("regex", path, el.regex))
    if el.codes or el.external:
        codes = set(el.codes)
        if el.external:
            ext = code_sets()[el.external]
            if len(ext) > _LARGE_CODESET:
                post.append(("codes", path, el.codes | ext))
                codes = None
            else:
                codes |= ext
        if codes is not None:
            good = sorted((c for c in codes if c and not _element(el, c, icvn, "\x00",
                                                                    type_list)),
                          key=lambda c: (-len(c), c))
            if not good:
                return "(?!)"
            if not all(ch not in delims for c in good for ch in c):
                raise _NoFast
            return _alternation(good)
    if dt is None:
        raise _NoFast
    if dt[0] == "N":
        return f"-?[0-9]{{{lo},{hi}}}"
    if dt == "R":
        return (f"-?(?=(?:\\.?[0-9]){{{lo},{hi}}}(?![0-9.]))"
                r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
    if dt in ("ID", "AN"):
        if type_list:
            alts = [_type_pattern(t) for t in type_list]
            if any(a is None for a in alts):
                raise _NoFast
            return f"(?=[0-9-]{{{lo},{hi}}}(?![0-9-]))(?:" + "|".join(alts) + ")"
        anyc = _charclass(icvn, delims)
        last = _charclass(icvn, delims, space=False)
        return f"{anyc}{{{lo - 1},{hi - 1}}}{last}"
    if dt in ("D8", "RD8", "D6", "TM") or dt == "DT":
        if dt == "DT":
            alts = []
            if lo <= 8 <= hi:
                alts.append(_D8)
            if lo <= 6 <= hi:
                alts.append(_D6)
            if not alts:
                raise _NoFast
            return "(?:" + "|".join(alts) + ")"
        if dt == "TM":
            return f"(?=[0-9]{{{lo},{hi}}}(?![0-9]))" + _TM
        pattern = _type_pattern(dt)
        length = {"D8": 8, "D6": 6, "RD8": 17}[dt]
        if not lo <= length <= hi:
            return "(?!)"
        return pattern
    if dt == "B":
        return f"{_P_RAW}{{{lo},{hi}}}"
    raise _NoFast


def _alternation(codes: list[str]) -> str:
    """A pattern matching exactly the strings ``codes`` (non-empty), written as a tree of
    their common beginnings (``(?:A[BC]|D)``, not ``(?:AB|AC|D)``): the same strings, and
    the regular expression parser reads a code list of hundreds (countries, states) in a
    fraction of the time. Where a code is the beginning of a longer one, the longer is tried
    first (the order ``(?:AB|A)`` had)."""
    tree: dict = {}
    for code in codes:
        node = tree
        for char in code:
            node = node.setdefault(char, {})
        node[""] = {}  # a code ends here
    return _tree_pattern(tree)


def _tree_pattern(tree: dict) -> str:
    ends = "" in tree
    singles = [c for c, sub in tree.items() if c and sub.keys() == {""}]
    parts = []
    if len(singles) > 1:
        parts.append("[" + "".join(_escape_in_class(ord(c)) if ord(c) < 128 else re.escape(c)
                                   for c in sorted(singles)) + "]")
    elif singles:
        parts.append(re.escape(singles[0]))
    for char in sorted(c for c in tree if c and c not in singles):
        parts.append(re.escape(char) + _tree_pattern(tree[char]))
    if not parts:
        return ""
    body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
    if ends:  # a code ends here and longer ones go on: the longer first
        return f"(?:{body})?"
    return body


def _optional_chain(items: list[tuple[str, bool]], sep: str) -> str:
    """items: (pattern for the item, required). Builds sep item1 (sep item2 (...)?+)?+ with the
    tail omissible only where nothing after it is required. The optional groups are
    possessive (``?+``): once one matched, the matcher does not come back to try it shorter
    or skipped (no item holds a separator, so that could not succeed for a value that reads
    to the next separator, while each try costs time). A possessive group only ever matches
    less, so the pattern stays sound: what it accepts, the detailed checks accept."""
    out = ""
    out_required = False
    for pattern, required in reversed(items):
        # (an empty item, a "not used" element: no ``(?:)?+``, the same language for less to
        # parse; the 837P's HI pattern had 84 of them)
        piece = re.escape(sep) + (pattern if required or not pattern else f"(?:{pattern})?+") + out
        out_required = required or out_required
        out = piece if out_required else f"(?:{piece})?+"
    return out


def _dtp_pattern(node: Segment, icvn: str, delims: str) -> str:
    """DTP02 and DTP03 together: the date format qualifier decides DTP03's type."""
    q, v = node.elements[1], node.elements[2]
    alts = []
    for code in sorted(q.codes):
        if _element(q, code, icvn, "\x00"):
            continue
        types = [code] if code in ("RD8", "D8", "D6", "DT", "TM") else []
        if not types:
            raise _NoFast
        value = _value_pattern(v, icvn, delims, [], (3, 0), types)
        alts.append(re.escape(code) + re.escape(delims[0]) + value)
    if not alts:
        raise _NoFast
    return "(?:" + "|".join(alts) + ")"


def compile_fast(node: Segment, icvn: str) -> None:
    """Set ``node.fast`` (pattern source, or None) and ``node.post`` for a segment node.
    The delimiters are placeholders (\\x1d element, \\x1e component) substituted per file."""
    node.fast = None
    node.post = ()
    post: list = []
    delims = _P_ELEMENT + _P_COMPONENT
    try:
        items = []
        children = node.elements
        type_list: list = []
        skip = False
        for i, child in enumerate(children):
            if skip:
                skip = False
                continue
            if node.id == "DTP" and i == 1 and len(children) > 2 and \
                    isinstance(children[2], Element) and children[1].usage == "R" and \
                    children[2].usage == "R":
                items.append((_dtp_pattern(node, icvn, delims), True))
                skip = True
                continue
            if isinstance(child, Composite):
                if child.usage == "N":
                    items.append(("", False))
                    continue
                comps = []
                for sub in child.children:
                    if sub.usage == "N":
                        comps.append(("", False))
                        continue
                    comps.append((_value_pattern(sub, icvn, delims, post, (i + 1, sub.seq)),
                                  sub.usage == "R"))
                first, first_required = comps[0]
                if child.usage == "R" and not first_required:
                    raise _NoFast
                chain = _optional_chain(comps[1:], "\x1e")
                body = (first if first_required or not first else f"(?:{first})?") + chain
                items.append((body, child.usage == "R"))
                continue
            if child.data_ele == "1250":
                type_list.extend(child.valid_codes)
            tl = type_list if child.data_ele == "1251" and type_list else None
            if child.usage == "N":
                items.append(("", False))
                continue
            items.append((_value_pattern(child, icvn, delims, post, (i + 1, 0), tl),
                          child.usage == "R"))
        body = _optional_chain(items, "\x1d") if items else ""
        node.fast = re.escape(node.id) + body
    except _NoFast:
        node.fast = None
    for kind, positions in node.syntax:
        post.append(("syntax", kind, positions))
    node.post = tuple(post)


# Memos keyed by a node's identity: each entry holds its node, so the id cannot be reused by
# another node while the entry lives (a map dropped and another loaded would otherwise find
# the first map's patterns under a recycled id).
_COMPILED: dict[tuple[int, str, str, str, str], tuple[Segment, re.Pattern | None]] = {}


_CLASSES: dict[tuple[str, str, bool], str] = {}


def _class(icvn: str, delimiters: str, space: bool) -> str:
    """The character class of the characters allowed in a value, as ranges of consecutive
    characters (``[ -)+-9;-}]``, not one escaped character after another: the same set, and
    the regular expression parser, which reads a class character by character, has a tenth
    of it to read)."""
    key = (icvn, delimiters, space)
    found = _CLASSES.get(key)
    if found is not None:
        return found
    allowed = re.compile(f"[{_EXT5 if icvn == '00501' else _EXT}]", re.ASCII)
    codes = [c for c in range(32, 127) if allowed.match(chr(c)) and chr(c) not in
             delimiters and (space or c != 32)]
    runs: list[list[int]] = []
    for c in codes:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    parts = []
    for lo, hi in runs:
        parts.append(_escape_in_class(lo) if lo == hi else
                     f"{_escape_in_class(lo)}-{_escape_in_class(hi)}")
    found = _CLASSES[key] = "[" + "".join(parts) + "]"
    return found


def _escape_in_class(code: int) -> str:
    """One character written safely inside ``[...]`` (as a hex escape unless alphanumeric)."""
    char = chr(code)
    return char if char.isalnum() else f"\\x{code:02x}"


def fast_source(node: Segment, icvn: str, element: str, component: str, segment: str):
    """The text of the node's fast pattern for one file's delimiters (None: it has none)."""
    if node.fast is None:
        return None
    return _for_file(node.fast, icvn, element, component, segment)


def _for_file(template: str, icvn: str, element: str, component: str, segment: str) -> str:
    """A pattern template with one file's delimiters and character classes in."""
    delimiters = element + component + segment
    return (template.replace(_P_ELEMENT, re.escape(element))
            .replace(_P_COMPONENT, re.escape(component))
            .replace(_P_ANY, _class(icvn, delimiters, True))
            .replace(_P_NOSPACE, _class(icvn, delimiters, False))
            .replace(_P_RAW, "[^" + re.escape(delimiters) + "]"))


def head_source(node: Segment, icvn: str, element: str, component: str, segment: str):
    """The pattern of the node's first element alone, for one file's delimiters, when the
    node's fast pattern is the segment id, an element separator, that element's pattern and
    then the rest (nothing, or what begins with an element separator): a required AN or ID
    element without codes, whose pattern is a class of characters holding no delimiter. Then
    in any text the fast pattern accepts, the first element is exactly the text between the
    first two element separators (``fields[1]``), so the fast pattern accepts a text if and
    only if this one accepts ``fields[1]`` and the rest of the text (from the second element
    separator on) is a rest the fast pattern accepted after some first element. None when
    the node's pattern is not of that shape."""
    if node.fast is None or not node.elements:
        return None
    first = node.elements[0]
    if not isinstance(first, Element) or first.usage != "R" or first.codes or \
            first.external or first.data_type not in ("AN", "ID") or \
            first.data_ele in ("1250", "1251"):
        return None
    try:
        item = _value_pattern(first, icvn, _P_ELEMENT + _P_COMPONENT, [], (1, 0))
    except _NoFast:
        return None
    # (a class with its repeat bounds and a last class: no group, no look-around, no code)
    if not item.startswith(_P_ANY) or not item.endswith(_P_NOSPACE) or "(" in item:
        return None
    prefix = re.escape(node.id) + _P_ELEMENT + item
    rest = node.fast[len(prefix):]
    if not node.fast.startswith(prefix) or rest and not rest.startswith(
            (_P_ELEMENT, "(?:" + _P_ELEMENT)):
        return None
    return _for_file(item, icvn, element, component, segment)


def fast_pattern(node: Segment, icvn: str, element: str, component: str, segment: str,
                 store=None):
    """The node's fast pattern compiled for one file's delimiters (memoised; compiled by
    ``store``, a :class:`gateway.diskcache.Patterns`, when given)."""
    key = (id(node), icvn, element, component, segment)
    entry = _COMPILED.get(key)
    if entry is not None and entry[0] is node:
        found = entry[1]
    else:
        source = fast_source(node, icvn, element, component, segment)
        if source is None:
            found = None
        else:
            try:
                found = re.compile(source, re.ASCII | re.S) if store is None else \
                    store.compile(source, re.ASCII | re.S)
            except re.error:
                found = None
        _COMPILED[key] = (node, found)
    return found


def post_ok(node: Segment, fields: list[str], comp_sep: str) -> bool:
    for check_ in node.post:
        if check_[0] == "syntax":
            if not syntax_ok(check_[1], check_[2], fields):
                return False
            continue
        position, component = check_[1]
        value = fields[position] if position < len(fields) else ""
        if component:
            parts = value.split(comp_sep)
            value = parts[component - 1] if component <= len(parts) else ""
        if not value:
            continue
        if check_[0] == "regex":
            if not check_[2].search(value):
                return False
        elif value not in check_[2]:
            return False
    return True


# syntax-note kinds as syntax_notes numbers them
NOTE_KINDS = {"P": 0, "R": 1, "E": 2, "C": 3, "L": 4}
MAX_NOTE_POSITION = 62  # positions a note may name to be evaluated on a bit mask


def syntax_notes(node: Segment) -> tuple | None:
    """``node.post`` as bit masks when it holds syntax notes only (the usual): per note
    (kind, mask of its positions, mask of its first, mask of the others), evaluated on the
    mask of the elements present by the validator (``validator._notes_ok``: the decisions of
    :func:`syntax_ok`); None when some post-check is not such a note (then
    :func:`post_function` decides)."""
    notes = []
    for check_ in node.post:
        if check_[0] != "syntax" or check_[1] not in NOTE_KINDS or len(check_[2]) < 2 or \
                len(set(check_[2])) != len(check_[2]) or \
                not all(0 < p <= MAX_NOTE_POSITION for p in check_[2]):
            return None
        first, *rest = check_[2]
        rest_mask = 0
        for p in rest:
            rest_mask |= 1 << p
        notes.append((NOTE_KINDS[check_[1]], (1 << first) | rest_mask, 1 << first, rest_mask))
    return tuple(notes)


def _has(p: int) -> str:
    return f"(n > {p} and f[{p}] != '')"


def _syntax_source(kind: str, positions: tuple) -> str:
    """A Python expression (over ``f`` the fields and ``n`` their count) true when the syntax
    note holds; the same decisions as :func:`syntax_ok`."""
    if len(positions) < 2:
        return "False"
    has = [_has(p) for p in positions]
    if kind == "P":
        return f"(({' and '.join(has)}) or not ({' or '.join(has)}))"
    if kind == "R":
        return f"({' or '.join(has)})"
    if kind == "E":
        return f"(({' + '.join(has)}) <= 1)"
    if kind == "C":
        return f"(not {has[0]} or ({' and '.join(has[1:])}))"
    if kind == "L":
        return f"(not {has[0]} or ({' or '.join(has[1:])}))"
    return "False"


_POST_FUNCTIONS: dict[tuple[int, str], tuple[Segment, object]] = {}  # (holds its node: above)


def post_function(node: Segment, comp_sep: str):
    """``node.post`` compiled into one Python function ``(fields) -> bool`` (memoised per node
    and component separator): the same answer as :func:`post_ok`, without its loop and calls.
    None when the node has no post-checks."""
    key = (id(node), comp_sep)
    entry = _POST_FUNCTIONS.get(key)
    if entry is not None and entry[0] is node:
        return entry[1]
    if not node.post:
        _POST_FUNCTIONS[key] = (node, None)
        return None
    lines = ["def post(f):", "    n = len(f)"]
    env: dict = {}
    for i, check_ in enumerate(node.post):
        if check_[0] == "syntax":
            lines.append(f"    if not {_syntax_source(check_[1], check_[2])}: return False")
            continue
        position, component = check_[1]
        lines.append(f"    v = f[{position}] if n > {position} else ''")
        if component:
            lines.append(f"    p = v.split({comp_sep!r})")
            lines.append(f"    v = p[{component - 1}] if len(p) >= {component} else ''")
        env[f"c{i}"] = check_[2]
        if check_[0] == "regex":
            lines.append(f"    if v and not c{i}.search(v): return False")
        else:
            lines.append(f"    if v and v not in c{i}: return False")
    lines.append("    return True")
    exec("\n".join(lines), env)  # noqa: S102 - source built above from the compiled map
    found = env["post"]
    _POST_FUNCTIONS[key] = (node, found)
    return found
