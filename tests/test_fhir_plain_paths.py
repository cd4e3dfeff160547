"""The plain evaluator of the FHIR mappings (gateway/fhir/mapping/engine.py ``_plain``): every
expression of every mapping answers exactly what fhirpathpy answers, on every fixture
resource (and the resources its references reach), and on data made to trip it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import fhirpathpy
import pytest
import yaml

from gateway.fhir.mapping import engine
from gateway.fhir.mapping.engine import FHIR_MAPPINGS, _FUNCTIONS, _references, compiled, \
    reference_index, systems

ROOT = Path(__file__).resolve().parent.parent


def _expressions() -> list[tuple[str, dict]]:
    """(expression, constants) of every mapping's fields and roots."""
    found = []
    for path in sorted(FHIR_MAPPINGS.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text("utf-8")) or {}
        if not isinstance(spec, dict) or not isinstance(spec.get("fields"), list):
            continue
        variables = {**systems(), **(spec.get("constants") or {})}
        for root in (spec.get("roots") or {}).values():
            found.append((str(root), variables))
        for field in spec["fields"]:
            paths = field.get("path")
            for one in paths if isinstance(paths, list) else [paths]:
                if one is not None:
                    found.append((str(one), variables))
    return found


def _resources() -> list[tuple[dict, dict]]:
    """(resource, its reference index) of every fixture, Bundle entries and contained ones
    each on their own too."""
    out = []
    folders = [ROOT / "fixtures" / "fhir" / "mappings", ROOT / "fixtures" / "fhir" / "resources"]
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            data = json.loads(path.read_text("utf-8"))
            out.append((data, reference_index(data)))
            for entry in data.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    out.append((resource, reference_index(resource, data)))
            for contained in data.get("contained") or []:
                out.append((contained, reference_index(data)))
    return out


EXPRESSIONS = _expressions()
TRICKY = [
    ({"resourceType": "CarePlan", "status": "active", "_status": {"extension": [{"url": "x"}]},
      "identifier": [{"system": "a", "value": "1"}, {"system": 5, "value": "2"},
                     {"value": "3"}, {"system": "a", "value": 4.5}],
      "telecom": [{"system": "phone", "value": "555"}, {"system": ["phone"], "value": "6"}],
      "quantity": {"value": 1.25}, "name": [{"_family": {"id": "f"}}]}, {}),
    ({"resourceType": "Patient", "name": [{"family": "Doe", "given": ["A", None, "B"]}],
      "address": [], "gender": None, "birthDate": [None], "telecom": [{"system": "phone"}], "extension": [{"url": "u",
                                                                       "valueMoney": {"value": 2.5}}]},
     {}),
]


def _ours(expression: str, resource, variables: dict):
    """As compiled() evaluates (without its load-time check, which knows only the mappings'
    constants)."""
    tree = engine._plain(expression)
    if tree is not None:
        try:
            return engine._answer(engine._eval(tree, [resource], variables))
        except engine._NotPlain:
            pass
    return _fhirpathpy(expression, resource, variables)


def _fhirpathpy(expression: str, resource, variables: dict):
    function = fhirpathpy.compile(expression, options={"userInvocationTable": _FUNCTIONS})
    return function(resource, variables)


def test_every_mapping_expression_is_evaluated_on_the_json():
    plain = {e for e, _ in EXPRESSIONS if hasattr(compiled(e), "tree")}
    assert plain == {e for e, _ in EXPRESSIONS}
    for other in ("period.start <= period.end", "Patient.name", "value.matches('^a$')",
                  "activity.where(a = 1)", "name.where($this.family = 'x')"):
        assert not hasattr(compiled(other), "tree"), other


@pytest.mark.parametrize("resource,index", _resources() + TRICKY)
def test_the_plain_path_answers_what_fhirpathpy_answers(resource, index):
    for expression, variables in EXPRESSIONS + [
            ("identifier.where(system = 'a').value", {}), ("quantity.value", {}),
            ("name.family", {}), ("name.given", {}), ("gender", {}),
            ("birthDate.first()", {}), ("name.given.first()", {}), ("address.exists()", {}), ("status", {}),
            ("telecom.where(system = 'phone').value", {}),
            ("extension.where(url = 'u').valueMoney.value", {}),
            ("identifier.where(system = %nothing).value", {}),
            ("identifier.where(system = %many).value", {"many": ["a"]}),
            ("identifier.where(system in %many).value", {"many": ["a", "b"]}),
            ("identifier.system in %many", {"many": ["a"]}),
            ("identifier.value = '1'", {}), ("identifier.system != 'a'", {}),
            ("name.given | name.given | status", {}), ("name.given.first() + family", {}),
            ("iif(status = 'active', status, gender)", {}),
            ("iif(gender.exists() or status = 'x', 'yes')", {}),
            ("telecom.where(system = 'phone' and value.exists()).value", {}),
            ("telecom.where(system = 'phone' or value.empty()).system", {}),
            ("name.select(given.first() + ' ' + family)", {}),
            ("(status | gender).first()", {}), ("{}.exists()", {}),
            ("extension.select(valueMoney.value | url)", {}),
            ("status.exists().not() and gender.empty().not()", {}), ("gender.not()", {})]:
        token = _references.set(index)
        try:
            try:
                expected = _fhirpathpy(expression, resource, variables)
            except Exception as exc:  # noqa: BLE001 - then the plain path raises too
                with pytest.raises(type(exc)):
                    _ours(expression, resource, variables)
                continue
            got = _ours(expression, resource, variables)
            if (expression, variables) in EXPRESSIONS:  # and as the mappings run it
                assert compiled(expression)(resource, variables) == got
        finally:
            _references.reset(token)
        assert got == expected, expression
        assert [type(v) for v in got] == [type(v) for v in expected], expression


def test_a_float_comes_back_as_fhirpathpy_decimal():
    function = compiled("quantity.value")
    assert hasattr(function, "tree")
    assert function({"quantity": {"value": 0.1}}, {}) == [Decimal("0.1")]
    assert engine._plain("activity.where(a = 1)") is None
