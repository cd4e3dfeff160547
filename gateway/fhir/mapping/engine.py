"""The generic part of the FHIR mappings: read a mapping spec (``mappings/fhir/*.yaml``), compile
its FHIRPath expressions once, and apply them to a resource.

A *field* of a spec takes a value from the resource::

    - target: member_cin                      # the name in the record / row being built
      path: "subject.resolve().identifier.where(system = %cin_system).value"
      type: cin                               # text date datetime cin npi tin phone email
                                              # code decimal int bool
      required: true                          # FHIR-MAP-001 when nothing is found
      many: true                              # keep every value (a list), else the first
      pick: max                               # for many values: first last min max count
      map: {urgent: expedited}                # code translation (case is ignored)
      unmapped: keep                          # keep | default | warn (FHIR-MAP-004 + default)
      default: routine                        # when nothing is found (or not translated)
      codeset: pof                            # every code must be in profiles/codesets/pof.csv

``path`` may be a list of alternatives: the first one that gives a value wins. Expressions see
the constants of ``mappings/fhir/systems.yaml`` (and the spec's own ``constants``) as ``%name``
and can follow references with ``resolve()`` — to contained resources (``#id``) and to the
entries of the Bundle the resource came in (``fullUrl`` or ``Type/id``).

A *template* (``render``) builds JSON from a dict of values: ``"{name}"`` alone in a string is
replaced by the value itself (keeping its type), inside a longer string by its text; dotted
names reach into nested dicts. Special keys: ``$value`` + ``$map`` (+ ``$default``) translate a
value; ``$for_each`` + ``$as`` + ``$item`` repeat an element per list item (``{index}`` is its
1-based position); ``$when`` keeps an element only when the named value is filled. Empty
values, dicts and lists are left out, so optional data simply disappears.
"""

from __future__ import annotations

import dataclasses
import json

import contextvars
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import fhirpathpy
import yaml

from gateway.ecm.rules import cin_is_valid
from gateway.findings import Finding
from gateway.paths import MAPPINGS
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import load_codeset
from gateway.tabular.validate import luhn_npi_ok

FHIR_MAPPINGS = MAPPINGS / "fhir"

# -- references -----------------------------------------------------------------------------
_references: contextvars.ContextVar[dict[str, dict] | None] = contextvars.ContextVar(
    "fhir_mapping_references", default=None)


def _resolve(inputs: list) -> list:
    """FHIRPath ``resolve()`` over the current reference index (fhirpathpy has none)."""
    index = _references.get() or {}
    found = []
    for item in inputs:
        target = index.get(item.get("reference", "")) if isinstance(item, dict) else None
        if target is not None:
            found.append(target)
    return found


_FUNCTIONS = {"resolve": {"fn": _resolve}}


@dataclass
class Source:
    """A resource to map and the resources its references can reach."""

    resource: dict
    index: dict[str, dict] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.resource.get("resourceType", ""))


def _list(value: Any) -> list:
    """A list element of a resource that callers may have sent as something else."""
    return value if isinstance(value, list) else []


def reference_index(resource: dict, bundle: dict | None = None) -> dict[str, dict]:
    index: dict[str, dict] = {}
    for entry in _list((bundle or {}).get("entry")):
        target = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(target, dict):
            continue
        if entry.get("fullUrl"):
            index[str(entry["fullUrl"])] = target
        if target.get("id"):
            index[f"{target.get('resourceType')}/{target['id']}"] = target
    for contained in _list(resource.get("contained")):
        if isinstance(contained, dict) and contained.get("id"):
            index["#" + str(contained["id"])] = contained
    return index


def entry_base(data: dict, source: Source) -> str:
    """The FHIRPath of a mapped resource: its type, or its Bundle entry."""
    if data.get("resourceType") != "Bundle":
        return source.type
    for index, entry in enumerate(_list(data.get("entry"))):
        if isinstance(entry, dict) and entry.get("resource") is source.resource:
            return f"Bundle.entry[{index}].resource"
    return "Bundle.entry"


def wrong_type(found: dict, expected: str, catalogue: RuleCatalogue) -> Finding | None:
    """FHIR-MAP-005: the input holds no resource of the type the mapping reads."""
    kind = found.get("resourceType")
    if not (isinstance(kind, str) and kind.isalpha() and len(kind) <= 40):
        kind = None  # not a resource type name: never echo what was sent
    return catalogue.finding("FHIR-MAP-005", kind or "(input)", None,
                             found=kind or "resource of no known type", expected=expected)


def sources_of(data: dict, resource_type: str) -> list[Source]:
    """The resources of ``resource_type`` in ``data`` (the resource itself, or a Bundle's
    entries), each with the references it can resolve."""
    if data.get("resourceType") == "Bundle":
        found = []
        for entry in _list(data.get("entry")):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                found.append(Source(resource, reference_index(resource, data)))
        return found
    if data.get("resourceType") == resource_type:
        return [Source(data, reference_index(data))]
    return []


# -- specs ----------------------------------------------------------------------------------
class MappingSpecError(ValueError):
    """A mapping spec that cannot be used (names the file and the problem)."""


@lru_cache(maxsize=1)
def systems() -> dict[str, Any]:
    return yaml.safe_load((FHIR_MAPPINGS / "systems.yaml").read_text("utf-8"))


def load_spec(name: str, folder: Path | None = None) -> dict:
    path = (folder or FHIR_MAPPINGS) / f"{name}.yaml"
    if not path.is_file():
        raise MappingSpecError(f"no FHIR mapping {name!r} in {path.parent}")
    return _load_spec(str(path), path.stat().st_mtime)


@lru_cache(maxsize=32)
def _load_spec(path: str, _mtime: float) -> dict:
    return yaml.safe_load(Path(path).read_text("utf-8")) or {}


class EvaluationError(Exception):
    """A FHIRPath expression failed on one resource (fhirpathpy raises plain Exceptions)."""


@lru_cache(maxsize=512)
def compiled(expression: str):
    """The compiled expression. fhirpathpy's parser accepts some broken expressions and fails
    only when they run, so each one is also tried once on an empty resource: a broken mapping
    is refused when it is loaded, not on the first member. A plain expression
    (:func:`_plain`) is evaluated on the JSON directly, with fhirpathpy's answer, falling back
    to fhirpathpy for anything it was not written for."""
    try:
        function = fhirpathpy.compile(expression, options={"userInvocationTable": _FUNCTIONS})
        function({"resourceType": "Basic"}, dict(systems()))
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises plain Exceptions
        raise MappingSpecError(f"FHIRPath expression {expression!r} does not compile: "
                               f"{exc.__class__.__name__} {exc}") from None
    tree = _plain(expression)
    if tree is None:
        return function

    def plain(root: Any, variables: dict) -> list:
        try:
            return _answer(_eval(tree, root if isinstance(root, list) else [root], variables))
        except _NotPlain:
            return function(root, variables)

    plain.tree = tree  # for the tests: this expression is evaluated on the JSON
    return plain


# -- plain expressions ------------------------------------------------------------------------
# fhirpathpy evaluates an expression by walking its parse tree over a converted copy of the
# resource (≈ 0.1 ms for a path, 0.3 ms for an activity.where(...) filter; some 80 per CarePlan
# routed). The expressions the mappings use -- member paths; where, select, exists, first,
# empty, not, resolve, iif; = != in and or | + on text; %constants, 'text', {} -- are evaluated on
# the JSON here instead, answering exactly what fhirpathpy answers (tests/test_fhir_plain_paths
# compares both on every expression of every mapping and every fixture). Anything else -- a
# number, a date comparison, a type name, a primitive's extension (``_name``), a comparison of
# anything but text -- goes to fhirpathpy: at compile time (the expression is not plain) or
# when met in the data (:class:`_NotPlain`).
_TOKEN = re.compile(r"\s*(?:(?P<string>'[^'\\]*')|(?P<var>%[A-Za-z_][A-Za-z0-9_]*)|"
                    r"(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>!=|<=|>=|[().,=|+{}<>]))")
_KEYWORDS = {"and", "or", "xor", "implies", "div", "mod", "in", "contains", "as", "is",
             "true", "false"}
_FUNCTIONS_PLAIN = {"where": 1, "select": 1, "exists": 0, "first": 0, "empty": 0,
                    "not": 0, "resolve": 0, "iif": (2, 3)}
# what the ECM profiles' invariants use besides (:func:`plain_invariant`): text functions with
# a literal argument, all(), ofType() of a resource type, implies, and date comparisons
_FUNCTIONS_INVARIANT = {"matches": 1, "startsWith": 1, "all": 1, "ofType": 1}
_COMPARISONS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# abstract types whose ofType() takes every resource below them: fhirpathpy's type rules
_ABSTRACT = {"Resource", "DomainResource", "Element", "BackboneElement"}


class _NotPlain(Exception):
    """Not for the plain evaluator: fhirpathpy answers."""


def _plain(expression: str, invariant: bool = False):
    """The tree of a plain expression, or None when it is anything else. ``invariant``: also
    what the profiles' invariants use (:data:`_FUNCTIONS_INVARIANT`, ``implies``, ``<=``...)."""
    tokens, at = [], 0
    text = expression.strip()
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            return None
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        at = match.end()
        while at < len(text) and text[at].isspace():
            at += 1
    try:
        parser = _Parser(tokens, invariant)
        tree = parser.implication() if invariant else parser.expression()
        if parser.at != len(tokens):
            return None
        return tree
    except _NotPlain:
        return None


class _Parser:
    """Recursive descent, FHIRPath's precedence: ``.`` > ``+`` > ``|`` > ``= !=`` > ``in``
    > ``and`` > ``or``."""

    def __init__(self, tokens: list[tuple[str, str]], invariant: bool = False) -> None:
        self.tokens, self.at = tokens, 0
        self.invariant = invariant

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise _NotPlain
        self.at += 1
        return token

    def _is(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[1] in values and token[0] in ("op", "ident")

    def implication(self):
        """``implies``, below ``or`` (an invariant's top level only)."""
        node = self.expression()
        while self._is("implies"):
            self.take()
            node = ("implies", node, self.expression())
        return node

    def expression(self):
        node = self.conjunction()
        while self._is("or"):
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self):
        node = self.membership()
        while self._is("and"):
            self.take()
            node = ("and", node, self.membership())
        return node

    def membership(self):
        node = self.equality()
        if self._is("in"):
            self.take()
            node = ("in", node, self.equality())
        return node

    def equality(self):
        node = self.comparison()
        if self._is("=", "!="):
            op = self.take()[1]
            node = ("eq" if op == "=" else "ne", node, self.comparison())
        return node

    def comparison(self):
        node = self.union()
        if self._is(*_COMPARISONS):
            if not self.invariant:
                raise _NotPlain
            op = self.take()[1]
            node = (_COMPARISONS[op], node, self.union())
        return node

    def union(self):
        node = self.additive()
        while self._is("|"):
            self.take()
            node = ("union", node, self.additive())
        return node

    def additive(self):
        node = self.path()
        while self._is("+"):
            self.take()
            node = ("plus", node, self.path())
        return node

    def path(self):
        node = self.term()
        while self._is("."):
            self.take()
            node = self.invocation(node)
        return node

    def term(self):
        token = self.peek()
        if token is None:
            raise _NotPlain
        kind, value = token
        if kind == "string":
            self.take()
            return ("text", value[1:-1])
        if kind == "var":
            self.take()
            return ("var", value[1:])
        if value == "(":
            self.take()
            node = self.implication() if self.invariant else self.expression()
            self.take(")")
            return node
        if value == "{":
            self.take()
            self.take("}")
            return ("empty",)
        if kind == "ident":
            if value[0].isupper():  # a type name: fhirpathpy's own rules
                raise _NotPlain
            return self.invocation(("this",))
        raise _NotPlain

    def invocation(self, on):
        kind, name = self.take()
        if kind != "ident" or name in _KEYWORDS:
            raise _NotPlain
        if not self._is("("):
            return ("member", on, name)
        self.take("(")
        args = []
        if self.invariant and name == "ofType":  # a type name: a resource type only
            kind, type_name = self.take()
            if kind != "ident" or not type_name[0].isupper() or type_name in _ABSTRACT:
                raise _NotPlain
            self.take(")")
            return ("call", on, name, (("type", type_name),))
        if not self._is(")"):
            args.append(self.expression())
            while self._is(","):
                self.take()
                args.append(self.expression())
        self.take(")")
        wanted = _FUNCTIONS_PLAIN.get(name)
        if wanted is None and self.invariant:
            wanted = _FUNCTIONS_INVARIANT.get(name)
            if name in ("matches", "startsWith") and (len(args) != 1 or args[0][0] != "text"):
                raise _NotPlain  # a literal pattern or prefix only
        if wanted is None or len(args) not in (wanted if isinstance(wanted, tuple)
                                               else (wanted,)):
            raise _NotPlain
        return ("call", on, name, tuple(args))


def _eval(node, focus: list, variables: dict) -> list:
    kind = node[0]
    if kind == "this":
        return focus
    if kind == "member":
        name, found = node[2], []
        for item in _eval(node[1], focus, variables):
            if not isinstance(item, dict):
                if isinstance(item, list):
                    raise _NotPlain
                continue  # a primitive has no members
            if "_" + name in item:
                raise _NotPlain  # a primitive's extension: fhirpathpy's own rules
            value = item.get(name)
            if isinstance(value, list):
                found.extend(value)  # a null in a list stays, as fhirpathpy keeps it
            elif value is not None:
                found.append(value)
        return found
    if kind == "call":
        return _call(node, focus, variables)
    if kind == "text":
        return [node[1]]
    if kind == "var":
        if node[1] not in variables:
            raise _NotPlain
        value = variables[node[1]]
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise _NotPlain
        return list(values)
    if kind == "empty":
        return []
    left = _eval(node[1], focus, variables)
    right = _eval(node[2], focus, variables)
    if kind == "implies":
        a, b = _truth(left), _truth(right)
        if a is True:
            return [] if b is None else [b]
        if a is False:
            return [True]
        return [True] if b is True else []
    if kind in ("lt", "le", "gt", "ge"):
        if not left or not right:
            return []
        # dates of the same precision (YYYY-MM-DD) compare as text; a time, a partial date
        # or anything else: fhirpathpy's rules
        if len(left) > 1 or len(right) > 1 or not all(
                isinstance(v, str) and _DATE.match(v) for v in (left[0], right[0])):
            raise _NotPlain
        a, b = left[0], right[0]
        return [a < b if kind == "lt" else a <= b if kind == "le"
                else a > b if kind == "gt" else a >= b]
    if kind in ("and", "or"):
        a, b = _truth(left), _truth(right)
        if kind == "and":
            result = False if a is False or b is False else None \
                if a is None or b is None else True
        else:
            result = True if a is True or b is True else None \
                if a is None or b is None else False
        return [] if result is None else [result]
    if kind in ("eq", "ne"):
        if not left or not right:
            return []
        _texts(left)
        _texts(right)
        same = len(left) == len(right) and all(a == b for a, b in zip(left, right))
        return [same if kind == "eq" else not same]
    if kind == "in":
        if not left:
            return []
        if len(left) > 1:
            raise _NotPlain
        _texts(left)
        _texts(right)
        return [left[0] in right]
    if kind == "union":
        _texts(left)
        _texts(right)
        out: list = []
        for item in left + right:
            if item not in out:
                out.append(item)
        return out
    if kind == "plus":
        if not left or not right:
            return []
        if len(left) > 1 or len(right) > 1:
            raise _NotPlain
        if not (isinstance(left[0], str) and isinstance(right[0], str)):
            raise _NotPlain
        return [left[0] + right[0]]
    raise _NotPlain


def _call(node, focus: list, variables: dict) -> list:
    _, on, name, args = node
    items = _eval(on, focus, variables)
    if name == "first":
        return items[:1]
    if name == "exists":
        return [bool(items)]
    if name == "empty":
        return [not items]
    if name == "not":
        truth = _truth(items)
        return [] if truth is None else [not truth]
    if name == "resolve":
        return _resolve(items)
    if name == "where":
        kept = []
        for item in items:
            if _truth(_eval(args[0], [item], variables)) is True:
                kept.append(item)
        return kept
    if name == "select":
        out = []
        for item in items:
            out.extend(_eval(args[0], [item], variables))
        return out
    if name in ("matches", "startsWith"):
        if not items:
            if name == "matches":
                return []
            raise _NotPlain  # fhirpathpy fails on startsWith of nothing
        if len(items) > 1 or not isinstance(items[0], str):
            raise _NotPlain
        text = args[0][1]
        if name == "matches":
            return [] if not text else [_regex(text).search(items[0]) is not None]
        return [bool(items[0]) and items[0].startswith(text)]
    if name == "all":
        for item in items:
            result = _eval(args[0], [item], variables)
            if result and not (len(result) == 1 and isinstance(result[0], bool)):
                raise _NotPlain
            if result != [True]:
                return [False]
        return [True]
    if name == "ofType":
        wanted = args[0][1]
        kept = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
                raise _NotPlain  # a data type, not a resource: fhirpathpy's type rules
            if item["resourceType"] == wanted:
                kept.append(item)
        return kept
    if name == "iif":
        if len(items) > 1:
            raise _NotPlain
        if _truth(_eval(args[0], items, variables)) is True:
            return _eval(args[1], items, variables)
        return _eval(args[2], items, variables) if len(args) > 2 else []
    raise _NotPlain


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.DOTALL)  # as fhirpathpy's matches()


def plain_invariant(expression: str, function):
    """A profile invariant (``function``: fhirpathpy's compiled form) evaluated on the JSON
    when the expression is plain (:func:`_plain` with ``invariant``), answering what
    ``function`` answers (tests/test_fhir_plain_paths.py compares both on every invariant of
    every profile and every fixture); ``function`` itself otherwise."""
    tree = _plain(expression, invariant=True)
    if tree is None:
        return function

    def plain(resource: Any) -> list:
        try:
            return _answer(_eval(tree, [resource], {}))
        except _NotPlain:
            return function(resource)

    plain.tree = tree
    return plain


def _truth(values: list) -> bool | None:
    """A boolean operand: true, false, or empty (None); anything else is fhirpathpy's."""
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], bool):
        return values[0]
    raise _NotPlain


def _texts(values: list) -> None:
    if not all(isinstance(v, str) for v in values):
        raise _NotPlain


def _answer(items: list) -> list:
    """As fhirpathpy answers: decimals for floats (also inside dicts), a primitive's bare
    extension left out."""
    out = []
    for item in items:
        if isinstance(item, dict):
            if list(item) == ["extension"]:
                continue
            item = _decimals(item)
        elif isinstance(item, float):
            item = Decimal(str(item))
        out.append(item)
    return out


def _decimals(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value
                if not (isinstance(v, dict) and list(v) == ["extension"])]
    if isinstance(value, float):
        return Decimal(str(value))
    return value


_FIRST_STEP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


@lru_cache(maxsize=8192)
def location_of(base: str, expression: str) -> str:
    """A FHIRPath location for findings: the base and the expression's leading plain steps
    (``subject.resolve().identifier...`` → ``ServiceRequest.subject``)."""
    match = _FIRST_STEP.match(expression)
    steps = match.group(0) if match else ""
    parts = [p for p in steps.split(".") if p]
    # a step followed by "(" is a function, not an element
    if parts and expression[len(steps):].startswith("("):
        parts = parts[:-1]
    return ".".join([base, *parts]) if parts else base


@dataclass
class FieldSpec:
    target: str
    paths: list[str]
    type: str = "text"
    required: bool = False
    many: bool = False
    pick: str | None = None
    map: dict[str, Any] | None = None
    unmapped: str = "keep"
    default: Any = None
    codeset: str | None = None
    location: str | None = None
    label: str | None = None
    root: str | None = None  # a named root of the spec's ``roots`` instead of the resource

    @classmethod
    def from_dict(cls, raw: dict, spec_name: str) -> FieldSpec:
        if "target" not in raw or "path" not in raw:
            raise MappingSpecError(f"{spec_name}: every field needs target and path ({raw!r})")
        paths = raw["path"] if isinstance(raw["path"], list) else [raw["path"]]
        for path in paths:
            compiled(str(path))
        mapping = raw.get("map")
        return cls(target=raw["target"], paths=[str(p) for p in paths],
                   type=raw.get("type", "text"), required=bool(raw.get("required")),
                   many=bool(raw.get("many")), pick=raw.get("pick"),
                   map={str(k).lower(): v for k, v in mapping.items()} if mapping else None,
                   unmapped=raw.get("unmapped", "keep"), default=raw.get("default"),
                   codeset=raw.get("codeset"), location=raw.get("location"),
                   label=raw.get("label"), root=raw.get("from"))


# the field specs of each loaded mapping spec, made once (a spec is reloaded, as a new dict,
# when its file changes; the entry keeps the dict it was made from, so its id stays unique)
_FIELD_SPECS: dict[tuple[int, str, str], tuple[dict, tuple[FieldSpec, ...]]] = {}


def field_specs(spec: dict, key: str, spec_name: str) -> list[FieldSpec]:
    cache_key = (id(spec), key, spec_name)
    kept = _FIELD_SPECS.get(cache_key)
    if kept is None or kept[0] is not spec:
        kept = (spec, tuple(FieldSpec.from_dict(raw, spec_name) for raw in spec.get(key) or []))
        if len(_FIELD_SPECS) > 256:
            _FIELD_SPECS.clear()
        _FIELD_SPECS[cache_key] = kept
    return list(kept[1])


_UNREQUIRED: dict[int, tuple[FieldSpec, FieldSpec]] = {}


def _unrequired(spec: FieldSpec) -> FieldSpec:
    """``spec`` neither required nor defaulted (a field the caller fills), made once."""
    kept = _UNREQUIRED.get(id(spec))
    if kept is None or kept[0] is not spec:
        kept = (spec, dataclasses.replace(spec, required=False, default=None))
        if len(_UNREQUIRED) > 1024:
            _UNREQUIRED.clear()
        _UNREQUIRED[id(spec)] = kept
    return kept[1]


# -- values -----------------------------------------------------------------------------------
class BadValue(ValueError):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def parse_datetime(text: str) -> datetime:
    """A FHIR date or dateTime as an aware datetime (a date alone is midnight UTC)."""
    text = text.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _as_date(value: Any) -> date:
    text = str(value).strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        raise BadValue("a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text[:10])
    except ValueError as exc:
        raise BadValue("a date (YYYY-MM-DD)") from exc


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value))


def convert_value(value: Any, kind: str) -> Any:
    if kind == "text" or kind == "code":
        text = str(value).strip()
        return text or None
    if kind == "date":
        return _as_date(value)
    if kind == "datetime":
        try:
            return parse_datetime(str(value))
        except ValueError as exc:
            raise BadValue("a FHIR dateTime") from exc
    if kind == "cin":
        text = str(value).strip().upper()
        if not cin_is_valid(text):
            raise BadValue("a Medi-Cal CIN (8 digits and a letter)")
        return text
    if kind == "npi":
        text = str(value).strip()
        if not (len(text) == 10 and text.isdigit() and luhn_npi_ok(text)):
            raise BadValue("an NPI (10 digits with a valid check digit)")
        return text
    if kind == "tin":
        text = _digits(value)
        if len(text) != 9:
            raise BadValue("a TIN (9 digits)")
        return text
    if kind == "phone":
        text = _digits(value)
        if len(text) == 11 and text.startswith("1"):
            text = text[1:]
        if len(text) != 10:
            raise BadValue("a 10-digit US phone number")
        return text
    if kind == "email":
        text = str(value).strip()
        if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", text):
            raise BadValue("an e-mail address")
        return text
    if kind in ("decimal", "int"):
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise BadValue("a number") from exc
        if not number.is_finite() or abs(number) >= 10 ** 10:
            raise BadValue("a number")
        if kind == "int":
            if number != number.to_integral_value():
                raise BadValue("a whole number")
            return int(number)
        return number
    if kind == "zip":
        text = _digits(value)
        if len(text) not in (5, 9):
            raise BadValue("a ZIP code (5 or 9 digits)")
        return text
    if kind == "icd10":
        text = str(value).strip().upper().replace(".", "")
        if not re.match(r"^[A-Z][0-9][0-9A-Z]{1,5}$", text):
            raise BadValue("an ICD-10-CM code")
        return text
    if kind == "hcpcs":
        # a code may come with its modifiers: G9008-U1, G9008:U1:GQ, "G9008 U1"
        parts = [p for p in re.split(r"[-:\s]+", str(value).strip().upper()) if p]
        if not parts or not re.match(r"^[A-Z0-9][0-9]{3}[A-Z0-9]$", parts[0]) or any(
                not re.match(r"^[A-Z0-9]{2}$", m) for m in parts[1:]):
            raise BadValue("a HCPCS code (with optional two-character modifiers)")
        return tuple(parts)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise BadValue("true or false")
    raise MappingSpecError(f"unknown field type {kind!r}")


# -- applying fields ----------------------------------------------------------------------------
class Mapper:
    """Applies field specs to resources and collects findings."""

    def __init__(self, spec: dict, catalogue: RuleCatalogue | None = None) -> None:
        self.catalogue = catalogue or default_catalogue()
        self.variables = {**systems(), **(spec.get("constants") or {})}

    def evaluate(self, expression: str, root: Any, source: Source) -> list:
        token = _references.set(source.index)
        try:
            return compiled(expression)(root, self.variables)
        except MappingSpecError:
            raise
        except Exception as exc:  # noqa: BLE001 - data the expression was not written for
            raise EvaluationError(exc.__class__.__name__) from None
        finally:
            _references.reset(token)

    def finding(self, out: list[Finding], rule: str, location: str, **values) -> None:
        found = self.catalogue.finding(rule, location, None, **values)
        if found is not None:
            out.append(found)

    def values(self, specs: list[FieldSpec], root: Any, source: Source, base: str,
               out: list[Finding], roots: dict[str, str] | None = None,
               fill: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every field's value. ``roots`` (name → FHIRPath) are evaluated once on ``root``;
        a field with ``from: name`` is evaluated on that collection. ``fill`` (target →
        value): what the caller knows for a field the resource leaves empty (the member's name
        from the plan's MIF, the sending provider's identifiers) — such a field is not missing;
        a value the resource gives wins."""
        fill = {k: v for k, v in (fill or {}).items() if v not in (None, "")}
        named: dict[str, tuple[list, str]] = {}
        result = {}
        for spec in specs:
            if spec.target in fill:
                spec = _unrequired(spec)
            if spec.root:
                if spec.root not in (roots or {}):
                    raise MappingSpecError(f"field {spec.target} names an unknown root "
                                           f"{spec.root!r}")
                if spec.root not in named:
                    expression = roots[spec.root]
                    try:
                        items = self.evaluate(expression, root, source)
                    except EvaluationError as exc:
                        self.finding(out, "FHIR-MAP-011", location_of(base, expression),
                                     target=spec.root, problem=str(exc))
                        items = []
                    named[spec.root] = (items, location_of(base, expression))
                items, where = named[spec.root]
                result[spec.target] = self.value(spec, items, source, where, out)
            else:
                result[spec.target] = self.value(spec, root, source, base, out)
            if spec.target in fill and result[spec.target] in (None, "", []):
                result[spec.target] = [fill[spec.target]] if spec.many else fill[spec.target]
        return result

    def value(self, spec: FieldSpec, root: Any, source: Source, base: str,
              out: list[Finding]) -> Any:
        raw: list = []
        used = spec.paths[0]
        for path in spec.paths:
            try:
                found = self.evaluate(path, root, source)
            except EvaluationError as exc:
                self.finding(out, "FHIR-MAP-011", location_of(base, path),
                             target=spec.label or spec.target, problem=str(exc))
                found = []
            raw = [v for v in found
                   if v is not None and v != "" and not isinstance(v, (dict, list))]
            if raw:
                used = path
                break
        where = spec.location or location_of(base, used)
        label = spec.label or spec.target
        if not raw:
            if spec.default is None and spec.required:
                self.finding(out, "FHIR-MAP-001", location_of(base, spec.paths[0]),
                             target=label, looked=" | ".join(spec.paths))
            return spec.default if not spec.many or spec.default is None else \
                list(spec.default) if isinstance(spec.default, list) else [spec.default]
        converted = []
        for item in raw:
            try:
                item = convert_value(item, spec.type)
            except BadValue as bad:
                self.finding(out, "FHIR-MAP-002", where, target=label, expected=bad.expected)
                continue
            if item is None:
                continue
            if spec.map is not None:
                translated = spec.map.get(str(item).lower(), _MISSING)
                if translated is _MISSING:
                    if spec.unmapped == "warn":
                        fallback = "the default is used" if spec.default is not None \
                            else "the value is left out"
                        self.finding(out, "FHIR-MAP-004", where, target=label,
                                     fallback=fallback)
                    if spec.unmapped in ("warn", "default"):
                        if spec.default is None:
                            continue
                        translated = spec.default
                    else:
                        translated = item
                item = translated
            converted.append(item)
        if spec.codeset:
            codes = load_codeset(spec.codeset)
            bad = [c for c in converted if str(c) not in codes]
            if bad:
                self.finding(out, "FHIR-MAP-003", where, target=label, codeset=spec.codeset)
                converted = [c for c in converted if str(c) in codes]
        if not converted:
            if spec.required and spec.default is None and not any(
                    f.location == where and f.rule in ("FHIR-MAP-002", "FHIR-MAP-003")
                    for f in out):
                self.finding(out, "FHIR-MAP-001", where, target=label,
                             looked=" | ".join(spec.paths))
            return [] if spec.many else spec.default
        if spec.many:
            unique = list(dict.fromkeys(converted))
            if spec.pick:
                return _pick(unique, spec.pick)
            return unique
        if len(set(map(str, converted))) > 1:
            self.finding(out, "FHIR-MAP-009", where, target=label, count=len(converted))
        return converted[0]


_MISSING = object()


def _pick(values: list, how: str) -> Any:
    if how == "first":
        return values[0]
    if how == "last":
        return values[-1]
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    if how == "count":
        return len(values)
    raise MappingSpecError(f"unknown pick {how!r} (first, last, min, max, count)")


# -- templates (building FHIR) ------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.:]*)\}")
_EMPTY = (None, "", [], {})


def lookup(values: dict, name: str) -> Any:
    current: Any = values
    for part in name.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _text(value: Any) -> str:
    value = json_value(value)
    return "" if value is None else str(value)


def render(template: Any, values: dict) -> Any:
    """Fill a template (see the module docstring); returns None for an empty result."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            value = json_value(lookup(values, whole.group(1)))
            return None if value in _EMPTY else value
        missing = False

        def fill(match: re.Match) -> str:
            nonlocal missing
            text = _text(lookup(values, match.group(1)))
            if not text:
                missing = True
            return text

        text = _PLACEHOLDER.sub(fill, template)
        # a string built around an empty value (e.g. "Patient/{id}") is left out entirely
        return None if missing or not text else text
    if isinstance(template, list):
        items = []
        for item in template:
            if isinstance(item, dict) and "$for_each" in item:
                items.extend(_repeat(item, values))
                continue
            rendered = render(item, values)
            if rendered not in _EMPTY:
                items.append(rendered)
        return items or None
    if isinstance(template, dict):
        if "$when" in template and lookup(values, template["$when"]) in _EMPTY:
            return None
        if "$value" in template:
            value = render(template["$value"], values)
            if value is not None and "$map" in template:
                table = {str(k).lower(): v for k, v in template["$map"].items()}
                value = table.get(str(value).lower(), template.get("$default"))
            return value if value not in _EMPTY else template.get("$default")
        result = {}
        for key, item in template.items():
            if key.startswith("$"):
                continue
            rendered = render(item, values)
            if rendered not in _EMPTY:
                result[key] = rendered
        return result or None
    return template


def _repeat(item: dict, values: dict) -> list:
    sequence = lookup(values, item["$for_each"]) or []
    name = item.get("$as", "item")
    out = []
    for index, element in enumerate(sequence, start=1):
        scope = {**values, name: element, "index": index}
        rendered = render(item["$item"], scope)
        if rendered not in _EMPTY:
            out.append(rendered)
    return out


def stable_uuid(*parts: object) -> str:
    """A deterministic ``urn:uuid:`` for an entry (same input, same id: golden files and
    de-duplication across rows)."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "ecm-gateway:" + "|".join(
        str(p) for p in parts)))


class TemplateEntries:
    """Bundle entries from a template spec (``resources:`` of ``mappings/fhir/<name>.yaml``),
    one source record after another; a shared resource (same type and key) is written once."""

    def __init__(self, spec_name: str, view) -> None:
        self.spec = load_spec(spec_name)
        self.view = view
        self.written: set[str] = set()
        self.position = 0

    def of(self, record) -> Iterator[dict]:
        self.position += 1
        values = self.view(record, self.position)
        refs: dict[str, str] = {}
        planned = []
        for resource in self.spec["resources"]:
            kind = resource["resource"]["resourceType"]
            if "when" in resource and lookup(values, resource["when"]) in (None, "", []):
                continue
            if "for_each" in resource:
                for item in values.get(resource["for_each"]) or []:
                    scope = {**values, "item": item}
                    item["ref"] = stable_uuid(kind, render(resource["key"], scope))
                    planned.append((item["ref"], resource, scope))
                continue
            refs[resource["name"]] = stable_uuid(kind, render(resource["key"], values))
            planned.append((refs[resource["name"]], resource, values))
        for url, resource, scope in planned:
            if url in self.written:
                continue
            if not resource.get("unique"):  # only shared resources are remembered
                self.written.add(url)
            yield {"fullUrl": url, "resource": render(resource["resource"],
                                                      {**scope, "ref": refs})}


class CollectionBundleWriter:
    """Writes a Bundle (type collection) entry by entry, one line per entry, so a large one
    streams: :meth:`write` adds the entries a mapping's :class:`TemplateEntries` makes of one
    item (shared resources once), :meth:`close` ends the Bundle and says how many entries."""

    def __init__(self, out, entries: TemplateEntries) -> None:
        self.out = out
        self.count = 0
        self._entries = entries
        out.write('{"resourceType": "Bundle", "type": "collection", "entry": [')

    def write(self, item) -> None:
        for entry in self._entries.of(item):
            self.out.write(("\n" if self.count == 0 else ",\n")
                           + json.dumps(entry, ensure_ascii=False))
            self.count += 1

    def close(self) -> int:
        self.out.write("\n]}\n")
        return self.count
