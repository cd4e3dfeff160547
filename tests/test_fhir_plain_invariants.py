"""The profiles' invariants evaluated on the JSON (gateway/fhir/mapping/engine.py
``plain_invariant``): every invariant of every ECM profile answers exactly what fhirpathpy (with
the R4 model, as the profiles compile it) answers, on every fixture resource -- Bundle entries
and contained resources each on their own too -- and on data made to trip it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import fhirpathpy
import pytest
from fhirpathpy.models import models

from gateway.fhir.mapping import engine
from gateway.fhir.profiles import load_profiles

ROOT = Path(__file__).resolve().parent.parent
CIN = "https://ecm-gateway.example.org/fhir/sid/medi-cal-cin"
ROLE = "https://ecm-gateway.example.org/fhir/CodeSystem/ecm-care-team-role"


def _invariants() -> list[tuple[str, str]]:
    return sorted({(inv.key, inv.expression) for profile in load_profiles().profiles.values()
                   for rule in profile.rules for inv in rule.invariants})


def _fixtures() -> list[dict]:
    out = []
    for folder in ("mappings", "resources"):
        for path in sorted((ROOT / "fixtures" / "fhir" / folder).glob("*.json")):
            data = json.loads(path.read_text("utf-8"))
            out.append(data)
            for entry in data.get("entry") or []:
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    out.append(entry["resource"])
            out.extend(c for c in data.get("contained") or [] if isinstance(c, dict))
    return out


def _tricky() -> list[dict]:
    """Each fixture kind bent the ways an EHR might bend it."""
    careplan = json.loads((ROOT / "fixtures/fhir/resources/careplan-ecm.json").read_text())
    task = json.loads((ROOT / "fixtures/fhir/resources/task-ecm.json").read_text())
    out = []

    def bent(base: dict, change) -> None:
        data = copy.deepcopy(base)
        change(data)
        out.append(data)

    for value in ("12345678A", "1234567A", "12345678a", "", 12345678, None, "x\n12345678A"):
        bent(careplan, lambda d, v=value: d.update(subject={"identifier": {"system": CIN,
                                                                          "value": v}}))
        bent(careplan, lambda d, v=value: d.update(subject={"identifier": [
            {"system": CIN, "value": v}, {"system": CIN, "value": "87654321B"}]}))
        out.append({"resourceType": "Patient", "identifier": [{"system": CIN, "value": value}]})
        out.append({"resourceType": "Coverage", "subscriberId": value})
    bent(careplan, lambda d: d.update(subject={"identifier": {
        "system": CIN, "value": "12345678A", "_value": {"extension": [{"url": "u"}]}}}))
    bent(careplan, lambda d: d.update(subject={"reference": "#p"}, contained=[
        {"resourceType": "Patient", "id": "p",
         "identifier": [{"system": CIN, "value": "12345678A"}]}]))
    bent(careplan, lambda d: d.update(contained=["text", {"id": "no-type"}]))
    bent(careplan, lambda d: d.update(contained=[{"resourceType": "CareTeam", "participant": [
        {"role": [{"coding": [{"system": ROLE, "code": "LCM"}]}]}]}]))
    bent(careplan, lambda d: d.update(contained=[{"resourceType": "CareTeam", "participant": [
        {"role": [{"coding": [{"system": ROLE, "code": ["LCM"]}]}],
         "member": {"reference": "#x"}}]}]))
    for period in ({"start": "2026-09-01", "end": "2026-08-01"},
                   {"start": "2026-09-01", "end": "2026-09-01"}, {"start": "2026-09-01"},
                   {"end": "2026-09-01"}, {"start": "2026-09", "end": "2026-09-01"},
                   {"start": "2026-09-01T10:00:00Z", "end": "2026-09-01T09:00:00-08:00"},
                   {"start": 5, "end": 6}, {}):
        bent(careplan, lambda d, p=period: d.update(period=p))
    for status in ("rejected", "cancelled", "completed", "requested", None):
        bent(task, lambda d, s=status: d.update(status=s))
        bent(task, lambda d, s=status: (d.update(status=s), d.pop("statusReason", None)))
    for focus in ({"reference": "ServiceRequest/1"}, {"reference": "urn:uuid:1"},
                  {"reference": "#sr"}, {"type": "ServiceRequest"}, {"reference": ""},
                  {"reference": "Patient/1"}, {"reference": 5}, {}, None,
                  {"reference": "Patient/1", "type": "ServiceRequest"}):
        bent(task, lambda d, f=focus: d.update(focus=f))
    return out


INVARIANTS = _invariants()


def _answer(function, resource):
    try:
        return function(resource)
    except Exception as exc:  # noqa: BLE001 - the profile counts a failure as [False]
        return ("fails", type(exc).__name__)


def test_every_invariant_is_evaluated_on_the_json():
    for key, expression in INVARIANTS:
        assert engine._plain(expression, invariant=True) is not None, key
    # the mappings' evaluator stays as it was: none of this is plain there
    assert engine._plain("period.start <= period.end") is None
    assert engine._plain("status = 'a' implies reason.exists()") is None
    assert engine._plain("value.matches('^a$')") is None


@pytest.mark.parametrize("resource", _fixtures() + _tricky())
def test_the_plain_invariant_answers_what_fhirpathpy_answers(resource):
    model = models["r4"]
    for key, expression in INVARIANTS:
        theirs = fhirpathpy.compile(expression, model=model)
        ours = engine.plain_invariant(expression, theirs)
        assert _answer(ours, resource) == _answer(theirs, resource), (key, resource)
