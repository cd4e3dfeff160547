"""Routes as data (config/demo/partners.yaml): who receives which kind of document."""

import pytest
import yaml
from conftest import ROOT

from gateway.pipeline.partners import PartnerConfigError, Partners, Route

DEMO = ROOT / "config" / "demo" / "partners.yaml"


@pytest.fixture
def partners() -> Partners:
    return Partners.load(DEMO)


def test_the_demo_file_routes_what_the_issue_lists(partners):
    assert [(r.kind, r.source_role, r.to) for r in partners.routes] == [
        ("837p", "provider", "plan"), ("invoice", "provider", "plan"),
        ("rtf", "provider", "plan"), ("otf", "provider", "plan"), ("fhir", "provider", "plan"),
        ("837p", "plan", "state"), ("274", "plan", "state"), ("mif", "plan", "provider"),
        ("history", "gateway", "provider"), ("state-response", "state", "plan"),
        ("state-response-denied", "state", "provider"), ("ack", "*", "sender")]
    assert partners.schedules == {"history_extract": "daily", "directory_274": "monthly"}


def test_each_route_resolves_to_the_right_partner(partners):
    p = partners.partners
    harbor, plan, state = p["harbor"], p["demo-plan"], p["dhcs"]

    def to(*args, **kwargs):
        found = partners.route(*args, **kwargs)
        return found.id if found else None

    for kind in ("837p", "invoice", "rtf", "otf", "fhir"):
        assert to(kind, harbor) == "demo-plan"  # the only plan
    assert to("837p", harbor, "DEMOPLAN") == "demo-plan"
    assert to("837p", plan) == "dhcs" and to("274", plan) == "dhcs"
    assert to("mif", plan, npi="1234500001") == "harbor"
    assert to("mif", plan, tin="941203039") == "golden-table"
    assert to("mif", plan, npi="1234579195", tin="941201013") is None  # not a partner
    assert to("history", "gateway", npi="1234737579") == "golden-table"
    assert to("state-response", state, plan_id="demo-plan") == "demo-plan"
    assert to("state-response-denied", state, npi="1234500001") == "harbor"
    assert to("ack", harbor) == "harbor" and to("ack", state) == "dhcs"
    assert to("837p", state) is None  # no route from the state for 837P
    assert to("mif", harbor, npi="1234500001") is None  # MIFs come from plans
    assert to("history", harbor, npi="1234500001") is None  # extracts come from the gateway


def test_two_plans_are_told_apart_by_registry_plan_then_payer_id(partners):
    from gateway.pipeline.partners import Partner

    plans = dict(partners.partners)
    plans["valley"] = Partner(id="valley", name="Valley", role="plan", payer_ids=("VHP01",))
    two = Partners(partners=plans, routes=partners.routes)
    harbor = plans["harbor"]
    assert two.route("837p", harbor, "VHP01").id == "valley"
    assert two.route("837p", harbor, "DEMOPLAN").id == "demo-plan"
    assert two.route("837p", harbor, "DEMOPLAN", plan_id="valley").id == "valley"
    assert two.route("837p", harbor, "UNKNOWN") is None  # no payer id, no registry: ambiguous


def test_a_route_to_a_partner_id_goes_there(partners):
    direct = Partners(partners=partners.partners,
                      routes=[Route(kind="otf", source_role="provider", to="demo-plan")])
    assert direct.route("otf", partners.partners["golden-table"]).id == "demo-plan"


@pytest.mark.parametrize("route, problem", [
    ({"kind": "837p", "from": "clearinghouse", "to": "plan"}, "from must be one of"),
    ({"kind": "837p", "from": "plan", "to": "nobody"}, "to must be a partner id or one of"),
    ({"kind": "837p", "to": "plan"}, "a route needs kind, from and to"),
])
def test_a_wrong_route_is_a_clear_configuration_error(tmp_path, route, problem):
    data = yaml.safe_load(DEMO.read_text())
    data["routes"].append(route)
    path = tmp_path / "partners.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PartnerConfigError, match=problem):
        Partners.load(path)


def test_schedules_must_be_a_mapping(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["schedules"] = ["daily"]
    path = tmp_path / "partners.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PartnerConfigError, match="schedules must be a mapping"):
        Partners.load(path)
