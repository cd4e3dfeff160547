"""Reading FHIR R4 resources (JSON and XML) into findings with FHIRPath locations.

Structure is checked by ``fhir.resources.R4B`` (R4 4.0.1 payloads; see the tooling notes), but
everything it lets through or lets escape is caught here and turned into a finding:

* malformed JSON / XML, an empty body, a body larger than :data:`MAX_BODY_BYTES`;
* XML is parsed by a hardened lxml parser (no DTD, no entity expansion, no network, no huge
  trees); a DOCTYPE is refused outright; every element must be in the FHIR namespace
  (fhir.resources would accept any namespace);
* XML is turned into the JSON form first (using the models' field definitions to know lists,
  primitives and resources), so JSON and XML give the same findings at the same FHIRPath;
* unknown resource types (fhir.resources raises ``KeyError`` for them inside a Bundle),
  unknown elements and pydantic ``ValidationError`` s, whose ``loc`` becomes a FHIRPath such
  as ``CarePlan.activity[0].detail.status``.

Bundles are validated entry by entry: the Bundle shell (type, entry.request, ...) once without
the entry resources, then each entry's resource on its own, so a 10,000-entry Bundle never
becomes one model (parsed models take ≈ 8× their JSON size). Findings of an entry carry
``Bundle.entry[i].resource...`` expressions. Bundles above :data:`MAX_BUNDLE_ENTRIES` entries
are refused with a finding.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from fhir.resources.R4B import get_fhir_model_class
from lxml import etree
from pydantic import ValidationError

from gateway.fhir import FHIR_NS, JSON_MEDIA, XHTML_NS, XML_MEDIA
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue

MAX_BODY_BYTES = 32 * 1024 * 1024  # one request or file; a 10,000-CarePlan Bundle is ≈ 40 MB XML
MAX_BUNDLE_ENTRIES = 20_000
MAX_DEPTH = 64  # nesting of JSON objects / XML elements
# bounded cost (a hostile body must not pin the FHIR threads): members of one object, items of
# one array (Bundle.entry has MAX_BUNDLE_ENTRIES), issues reported per resource
MAX_MEMBERS = 1000
MAX_ARRAY = 10_000
MAX_ISSUES = 100
MAX_RESOURCE_MEMBERS = 20_000  # members (XML: elements) of one resource that is not a Bundle
MAX_COLLECTED = 1000  # issues one reading of a body adds (a Bundle's entries: 1000 in all)


class UnknownType(ValueError):
    """Not a resource type of FHIR R4."""


@lru_cache(maxsize=512)
def model_class(resource_type: str):
    """The fhir.resources R4B class of a resource or element type; :class:`UnknownType` if
    there is none."""
    if not isinstance(resource_type, str) or not resource_type.isidentifier() \
            or not resource_type[:1].isupper():
        raise UnknownType(resource_type)
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError) as exc:
        raise UnknownType(resource_type) from exc


def is_resource_type(name: str) -> bool:
    try:
        klass = model_class(name)
    except UnknownType:
        return False
    return _is_resource(klass) and name not in ("Resource", "DomainResource")


def _is_resource(klass) -> bool:
    return any(c.__name__ == "Resource" for c in klass.__mro__)


# -- findings ------------------------------------------------------------------------------------

@dataclass
class Collector:
    """Findings of one input, through the rule catalogue (rules in profiles/rules/fhir.yaml)."""

    catalogue: RuleCatalogue = field(default_factory=default_catalogue)
    findings: list[Finding] = field(default_factory=list)
    added: int = 0

    def add(self, rule: str, location: str, **values) -> None:
        """Add a finding; after :data:`MAX_COLLECTED` of them one more says the check
        stopped there, and the rest are dropped (bounded cost)."""
        self.added += 1
        if self.added > MAX_COLLECTED:
            if self.added == MAX_COLLECTED + 1:
                rule, values = "FHIR-PARSE-014", {"limit": MAX_COLLECTED}
            else:
                return
        found = self.catalogue.finding(rule, location, None, **values)
        if found is not None:
            self.findings.append(found)


# -- media types and decoding ----------------------------------------------------------------------

def format_of(media_type: str | None, payload: bytes = b"") -> str | None:
    """``json``, ``xml`` or None (unsupported) from a Content-Type, or from the first byte of
    the payload when there is no media type."""
    if media_type:
        base = media_type.split(";", 1)[0].strip().lower()
        if base in (JSON_MEDIA, "application/json", "json", "text/json"):
            return "json"
        if base in (XML_MEDIA, "application/xml", "xml", "text/xml"):
            return "xml"
        return None
    head = payload.lstrip()[:1]
    return "json" if head == b"{" else "xml" if head == b"<" else None


def _root_path(expected: str | None) -> str:
    return expected or "Resource"


def decode(payload: bytes, fmt: str, col: Collector, expected: str | None = None
           ) -> dict | None:
    """The resource as a JSON-form dict, or None (with a fatal finding) when the body cannot be
    read at all."""
    root = _root_path(expected)
    if len(payload) > MAX_BODY_BYTES:
        col.add("FHIR-PARSE-007", root, size=len(payload), limit=MAX_BODY_BYTES)
        return None
    if not payload.strip():
        col.add("FHIR-PARSE-008", root)
        return None
    return _decode_xml(payload, col, root) if fmt == "xml" else \
        _decode_json(payload, col, root)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _decode_json(payload: bytes, col: Collector, root: str) -> dict | None:
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        col.add("FHIR-PARSE-001", root, problem=f"not UTF-8 (byte {exc.start})")
        return None
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        col.add("FHIR-PARSE-001", root, problem=f"{exc.msg} at line {exc.lineno} column "
                                                f"{exc.colno}")
        return None
    except (ValueError, RecursionError) as exc:
        col.add("FHIR-PARSE-001", root, problem="nested too deeply"
                if isinstance(exc, RecursionError) else str(exc))
        return None
    if not isinstance(data, dict):
        col.add("FHIR-PARSE-009", root, found=type(data).__name__)
        return None
    problem = _shape(data)
    if problem == "deep":
        col.add("FHIR-PARSE-001", root, problem=f"nested deeper than {MAX_DEPTH} levels")
        return None
    if problem is not None:
        col.add("FHIR-PARSE-013", root, problem=problem[0], limit=problem[1])
        return None
    return data


def _shape(data: dict):
    """One pass over the JSON form, stopping at the first problem: ``"deep"`` (nested deeper
    than :data:`MAX_DEPTH`), or ``(why, limit)`` when it is too costly to validate — an object
    of more than :data:`MAX_MEMBERS` members, an array of more than :data:`MAX_ARRAY` items
    (a Bundle's entries have their own limit), a resource (not a Bundle) of more than
    :data:`MAX_RESOURCE_MEMBERS` members; None when fine. Containers are checked before their
    children are visited, so a huge one costs nothing."""
    bundle = data.get("resourceType") == "Bundle"
    total = 0
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return "deep"
        if isinstance(item, dict):
            if len(item) > MAX_MEMBERS:
                return f"an object has {len(item)} members", MAX_MEMBERS
            total += len(item)
            children = item.values()
        else:
            if len(item) > MAX_ARRAY and not (bundle and depth == 2 and item is data.get(
                    "entry")):
                return f"an array has {len(item)} items", MAX_ARRAY
            total += len(item)
            children = item
        if total > MAX_RESOURCE_MEMBERS and not bundle:
            return f"the resource has more than {MAX_RESOURCE_MEMBERS} members", \
                MAX_RESOURCE_MEMBERS
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))
    return None


def _xml_parser() -> etree.XMLParser:
    # no DTD loading or validation, no entity expansion, no network, no huge text nodes
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_pis=True,
                           collect_ids=False)


def _decode_xml(payload: bytes, col: Collector, root_path: str) -> dict | None:
    if b"<!DOCTYPE" in payload or b"<!ENTITY" in payload or b"<!doctype" in payload:
        col.add("FHIR-PARSE-003", root_path)
        return None
    try:
        root = etree.fromstring(payload, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        line = getattr(exc, "lineno", None) or (exc.position[0] if exc.position else "?")
        message = str(exc.msg if hasattr(exc, "msg") and exc.msg else exc).split(", line")[0]
        col.add("FHIR-PARSE-002", root_path, problem=f"{message} (line {line})")
        return None
    except ValueError as exc:  # e.g. a str with an encoding declaration
        col.add("FHIR-PARSE-002", root_path, problem=str(exc))
        return None
    if root.getroottree().docinfo.doctype:
        col.add("FHIR-PARSE-003", root_path)
        return None
    qname = etree.QName(root)
    name = qname.localname
    if qname.namespace != FHIR_NS:
        col.add("FHIR-PARSE-004", name if name[:1].isupper() else root_path,
                found=qname.namespace or "none")
        return None
    if not is_resource_type(name):
        col.add("FHIR-PARSE-005", root_path, found=_shown(name))
        return None
    limit = None if name == "Bundle" else MAX_RESOURCE_MEMBERS
    for count, element in enumerate(root.iter(), start=1):  # lxml, C speed
        if limit is not None and count > limit:
            col.add("FHIR-PARSE-013", root_path, problem=f"the resource has more than {limit} "
                    "elements", limit=limit)
            return None
        if len(element) > MAX_MEMBERS and not (element is root and limit is None):
            col.add("FHIR-PARSE-013", root_path, problem=f"an element has {len(element)} "
                    "children", limit=MAX_MEMBERS)
            return None
    return XmlReader(col).resource(root, name, 1)


def _shown(name: object) -> str:
    """A resource type name safe to echo (never free text from the payload)."""
    text = str(name)
    return text if text.isidentifier() and len(text) <= 64 else "(not a name)"


@dataclass(frozen=True)
class FieldInfo:
    is_list: bool
    kind: str  # primitive, complex, resource, xhtml
    target: str | None  # the element type of a complex field
    required: bool = False


@lru_cache(maxsize=1024)
def fields_of(klass) -> dict[str, FieldInfo]:
    """JSON name -> how the field is represented, from the model's annotations."""
    found = {}
    for name, spec in klass.model_fields.items():
        alias = spec.alias or name
        if name in ("resource_type", "fhir_comments") or alias.startswith("_"):
            continue
        annotation = spec.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"),
                                                                   "UnionType", None)) \
                and len(args) == 1:
            annotation = args[0]
        is_list = typing.get_origin(annotation) is list
        inner = typing.get_args(annotation)[0] if is_list else annotation
        type_name = getattr(inner, "__name__", "")
        required = bool((spec.json_schema_extra or {}).get("element_required")) \
            or spec.is_required()
        if getattr(inner, "__module__", "") == "abc" and type_name.endswith("Type"):
            target = type_name[:-4]
            kind = "resource" if target == "Resource" else "complex"
            found[alias] = FieldInfo(is_list, kind, None if kind == "resource" else target,
                                     required)
        elif alias == "div":
            found[alias] = FieldInfo(False, "xhtml", None, required)
        else:
            found[alias] = FieldInfo(is_list, "primitive", None, required)
    return found


class XmlReader:
    """FHIR XML -> the JSON form (https://hl7.org/fhir/R4/xml.html, json.html)."""

    def __init__(self, col: Collector) -> None:
        self.col = col

    def resource(self, element, name: str, depth: int) -> dict:
        out = {"resourceType": name}
        self.children(element, model_class(name), out, name, depth, resource=True)
        return out

    def children(self, element, klass, out: dict, path: str, depth: int,
                 resource: bool = False) -> None:
        if depth > MAX_DEPTH:
            self.col.add("FHIR-PARSE-002", path, problem=f"nested deeper than {MAX_DEPTH}")
            return
        fields = fields_of(klass)
        if not resource:  # element ids and extension urls are XML attributes
            for attr in ("id", "url"):
                if element.get(attr) is not None and attr in fields:
                    out[attr] = element.get(attr)
        counts: dict[str, int] = {}
        extras: dict[str, list] = {}
        for child in element:
            if not isinstance(child.tag, str):  # comments
                continue
            qname = etree.QName(child)
            name = qname.localname
            info = fields.get(name)
            if info is not None and info.kind == "xhtml" and qname.namespace == XHTML_NS:
                out[name] = etree.tostring(child, encoding="unicode", with_tail=False)
                continue
            index = counts.get(name, 0)
            counts[name] = index + 1
            here = f"{path}.{name}" + (f"[{index}]" if info is not None and info.is_list
                                       else "")
            if qname.namespace != FHIR_NS:
                self.col.add("FHIR-PARSE-004", here, found=qname.namespace or "none")
                continue
            if info is None:
                self.col.add("FHIR-STRUCT-002", here)
                continue
            if not info.is_list and index > 0:
                self.col.add("FHIR-STRUCT-004", here)
                continue
            if info.kind == "primitive":
                value = child.get("value")
                meta = {}
                if child.get("id") is not None:
                    meta["id"] = child.get("id")
                extensions = [self.complex(c, "Extension", f"{here}.extension[{i}]", depth + 1)
                              for i, c in enumerate(x for x in child if isinstance(x.tag, str))]
                if extensions:
                    meta["extension"] = extensions
                if info.is_list:
                    out.setdefault(name, []).append(value)
                    extras.setdefault(name, []).append(meta or None)
                else:
                    if value is not None:
                        out[name] = value
                    if meta:
                        out["_" + name] = meta
            elif info.kind == "resource":
                inner = [c for c in child if isinstance(c.tag, str)]
                if len(inner) != 1:
                    self.col.add("FHIR-STRUCT-003", here,
                                 problem="must hold exactly one resource")
                    continue
                rname = etree.QName(inner[0]).localname
                if etree.QName(inner[0]).namespace != FHIR_NS:
                    self.col.add("FHIR-PARSE-004", here,
                                 found=etree.QName(inner[0]).namespace or "none")
                    continue
                if not is_resource_type(rname):
                    self.col.add("FHIR-PARSE-005", here, found=_shown(rname))
                    continue
                value = self.resource(inner[0], rname, depth + 1)
                if info.is_list:
                    out.setdefault(name, []).append(value)
                else:
                    out[name] = value
            else:
                value = self.complex(child, info.target, here, depth + 1)
                if info.is_list:
                    out.setdefault(name, []).append(value)
                else:
                    out[name] = value
        for name, metas in extras.items():
            if any(metas):
                out["_" + name] = metas
            if all(v is None for v in out.get(name, [])):
                out.pop(name, None)

    def complex(self, element, type_name: str, path: str, depth: int) -> dict:
        out: dict = {}
        try:
            klass = model_class(type_name)
        except UnknownType:
            return out
        self.children(element, klass, out, path, depth)
        return out


# -- structure ----------------------------------------------------------------------------------

def fhirpath_of(prefix: str, loc: tuple) -> str:
    """``('activity', 0, 'detail', 'status')`` under ``CarePlan`` ->
    ``CarePlan.activity[0].detail.status``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not isinstance(part, str) or part in ("__root__", "") \
                or any(c in part for c in "[, "):  # pydantic union tags
            continue
        else:
            path += f".{part.lstrip('_') if part.startswith('_') else part}"
    return path


def _missing_required(data: dict, klass, path: str, found: list[str], depth: int = 0) -> None:
    """Required elements that are absent, everywhere in ``data``: fhir.resources checks them
    only once every other element is valid, so with other errors they would go unreported."""
    if depth > MAX_DEPTH or not isinstance(data, dict):
        return
    for name, info in fields_of(klass).items():
        value = data.get(name)
        if value is None or value == []:
            if info.required and data.get("_" + name) is None:
                found.append(f"{path}.{name}")
            continue
        if info.kind == "complex":
            try:
                child_class = model_class(info.target)
            except UnknownType:
                continue
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                where = f"{path}.{name}[{i}]" if isinstance(value, list) else f"{path}.{name}"
                _missing_required(item, child_class, where, found, depth + 1)
        elif info.kind == "resource":
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, dict) and is_resource_type(item.get("resourceType")):
                    where = f"{path}.{name}[{i}]" if isinstance(value, list) \
                        else f"{path}.{name}"
                    _missing_required(item, model_class(item["resourceType"]), where, found,
                                      depth + 1)


def _structure_findings(exc: ValidationError, prefix: str, col: Collector,
                        data: dict | None = None, klass=None) -> None:
    errors = exc.errors(include_url=False, include_input=False)
    if len(errors) > MAX_ISSUES:  # bounded cost: the first issues, and a finding saying so
        errors = errors[:MAX_ISSUES]
        col.add("FHIR-PARSE-014", prefix, limit=MAX_ISSUES)
    reported = set()
    for error in errors:
        where = fhirpath_of(prefix, error.get("loc", ()))
        kind = error.get("type", "")
        if kind == "missing" or kind.endswith(".missing"):
            reported.add(where)
    if data is not None and klass is not None:
        missing: list[str] = []
        _missing_required(data, klass, prefix, missing)
        for where in missing:
            if where not in reported:
                col.add("FHIR-STRUCT-001", where)
                reported.add(where)
    for error in errors:
        where = fhirpath_of(prefix, error.get("loc", ()))
        kind = error.get("type", "")
        if kind == "missing" or kind.endswith(".missing"):
            col.add("FHIR-STRUCT-001", where)
        elif kind == "extra_forbidden":
            col.add("FHIR-STRUCT-002", where)
        else:
            col.add("FHIR-STRUCT-003", where, problem=_problem(error.get("msg", "")))


def _problem(message: str) -> str:
    """pydantic's message, without the input value (which may be member data)."""
    return message.replace("Value error, ", "").split("[type=")[0].strip()[:200]


def validate_one(data: dict, path: str, col: Collector, expected: str | None = None):
    """One non-Bundle resource (JSON form) through fhir.resources; the model, or None."""
    rtype = data.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        col.add("FHIR-PARSE-006", path)
        return None
    if not is_resource_type(rtype):
        col.add("FHIR-PARSE-005", path, found=_shown(rtype))
        return None
    try:
        return model_class(rtype).model_validate(data)
    except ValidationError as exc:
        _structure_findings(exc, path, col, data, model_class(rtype))
    except KeyError:  # an unknown type of nested resource (contained, Bundle.entry ...)
        bad = _unknown_contained(data, path)
        for where, name in bad:
            col.add("FHIR-PARSE-005", where, found=_shown(name))
        if not bad:
            col.add("FHIR-STRUCT-003", path, problem="the resource cannot be read as "
                                                     f"{_shown(rtype)}")
    except (TypeError, ValueError, RecursionError, AttributeError):
        # what fhir.resources lets escape (unknown nested types, odd shapes)
        col.add("FHIR-STRUCT-003", path, problem="the resource cannot be read as "
                                                 f"{_shown(rtype)}")
    return None


def _unknown_contained(data: dict, path: str) -> list[tuple[str, object]]:
    """Nested resources (contained, Parameters.parameter.resource ...) of unknown types: the
    models raise KeyError for those instead of a ValidationError."""
    bad = []
    stack = [(data, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        for key, value in item.items():
            if isinstance(value, dict):
                values = [(value, f"{where}.{key}")]
            elif isinstance(value, list):
                values = [(v, f"{where}.{key}[{i}]") for i, v in enumerate(value)
                          if isinstance(v, dict)]
            else:
                continue
            for child, child_path in values:
                if key in ("contained", "resource") and "resourceType" in child:
                    name = child["resourceType"]
                    if not isinstance(name, str) or not is_resource_type(name):
                        bad.append((child_path, name))
                        continue
                stack.append((child, child_path, depth + 1))
    return bad


@dataclass
class EntryResult:
    """One resource checked: where it is, its JSON form, its model (None when the structure
    is broken), and its findings."""

    index: int | None
    path: str
    data: dict | None
    model: object | None
    findings: list[Finding]


def iter_resources(data: dict, col: Collector, expected: str | None = None,
                   path: str | None = None) -> Iterator[EntryResult]:
    """Validate the structure of ``data``: one result for a resource; for a Bundle the shell's
    findings go to ``col`` and one result per entry follows (index = entry number), each
    validated on its own and dropped by the caller after use (bounded memory)."""
    path = path or (data.get("resourceType") if isinstance(data.get("resourceType"), str)
                    and is_resource_type(data.get("resourceType")) else _root_path(expected))
    if expected and data.get("resourceType") != expected and expected != "Resource":
        col.add("FHIR-PARSE-010", path, expected=expected,
                found=_shown(data.get("resourceType")))
        return
    if data.get("resourceType") != "Bundle":
        own = Collector(col.catalogue)
        model = validate_one(data, path, own)
        col.findings.extend(own.findings)
        yield EntryResult(None, path, data, model, own.findings)
        return
    entries = data.get("entry")
    if entries is not None and not isinstance(entries, list):
        col.add("FHIR-STRUCT-003", f"{path}.entry", problem="must be an array")
        return
    entries = entries or []
    if len(entries) > MAX_BUNDLE_ENTRIES:
        col.add("FHIR-PARSE-011", f"{path}.entry", count=len(entries),
                limit=MAX_BUNDLE_ENTRIES)
        return
    shell = {k: v for k, v in data.items() if k != "entry"}
    shell["entry"] = [{k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict)
                      else e for e in entries]
    if not shell["entry"]:
        shell.pop("entry")
    validate_one(shell, path, col)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "resource" not in entry:
            continue
        resource = entry["resource"]
        where = f"{path}.entry[{i}].resource"
        own = Collector(col.catalogue)
        if not isinstance(resource, dict):
            own.add("FHIR-STRUCT-003", where, problem="must be a resource (an object)")
            col.findings.extend(own.findings)
            yield EntryResult(i, where, None, None, own.findings)
            continue
        if resource.get("resourceType") == "Bundle":
            nested = list(iter_resources(resource, own, path=where))
            col.findings.extend(own.findings)
            yield EntryResult(i, where, resource, None, own.findings)
            del nested
            continue
        model = validate_one(resource, where, own)
        col.findings.extend(own.findings)
        yield EntryResult(i, where, resource, model, own.findings)


# -- output -------------------------------------------------------------------------------------

def to_json_bytes(resource: dict) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def to_xml_bytes(resource: dict) -> bytes:
    """The XML form of a JSON-form resource, through its fhir.resources model."""
    model = model_class(resource["resourceType"]).model_validate(resource)
    return model.model_dump_xml()


def serialise(resource: dict, fmt: str) -> bytes:
    return to_xml_bytes(resource) if fmt == "xml" else to_json_bytes(resource)


def normalise(model) -> dict:
    """A validated model back to its JSON form (for XML input and for storage)."""
    return json.loads(model.model_dump_json(by_alias=True, exclude_none=True))
