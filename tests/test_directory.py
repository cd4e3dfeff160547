"""The DHCS 274 provider directory: the map, the model, 274 reader/writer, roster and Plan-Net
conversions, ECM/CS flags as data, CLI."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import subprocess
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.cli import main
from gateway.directory.convert import open_directory, write_274, write_plannet, write_roster
from gateway.directory.flags import FlagDefinitionError, load_flags
from gateway.directory.model import Directory, Group, Hours, Provider, Site
from gateway.directory.plannet import PlanNetReader
from gateway.directory.x274 import Directory274Writer, read_274
from gateway.x12.writer import ControlNumbers, envelope_settings

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures" / "directory"
MAP = ROOT / "profiles" / "x12" / "274.4050.X109.xml"
PYX12_MAPS = Path(__import__("pyx12").__file__).parent / "map"
WHEN = datetime(2026, 12, 1, 9, 30)


def _274(groups, directory=None, flags=None) -> str:
    out = io.StringIO()
    writer = Directory274Writer(out, directory or Directory(plan_id="PLAN1", plan_name="PLAN"),
                                envelope_settings("dhcs-274"), ControlNumbers(1, 1), WHEN,
                                flags=flags)
    for group in groups:
        writer.write(group)
    writer.close()
    return out.getvalue()


def _roster_groups():
    return list(open_directory(FIX / "roster.csv", "directory",
                               envelope_settings("dhcs-274")).groups)


# -- the map ------------------------------------------------------------------------------------
def _schema():
    return etree.XMLSchema(etree.parse(str(PYX12_MAPS / "map.xsd")))


def test_map_is_schema_valid_and_loads_in_pyx12(tmp_path):
    schema = _schema()
    assert schema.validate(etree.parse(str(MAP))), schema.error_log
    import pyx12.map_if
    import pyx12.params

    for name in os.listdir(PYX12_MAPS):
        if name.endswith((".xml", ".xsd")):
            shutil.copy(PYX12_MAPS / name, tmp_path)
    shutil.copy(MAP, tmp_path)
    loaded = pyx12.map_if.load_map_file(MAP.name, pyx12.params.params(), str(tmp_path))
    tpb = loaded.getnodebypath(
        "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000A/2000B/2000C/2000D/2000E/2100EA/2120EA/TPB")
    assert tpb.name == "Network Role"


def test_map_carries_the_companion_guide_facts_and_its_assumptions():
    tree = etree.parse(str(MAP))

    def codes(xid):
        element = tree.find(f".//element[@xid='{xid}']")
        return [c.text for c in element.findall("valid_codes/code")]

    assert codes("ISA01") == ["03"] and codes("ISA12") == ["00405"]
    assert codes("GS01") == ["PW"] and codes("GS08") == ["004050X109"]
    assert codes("ST03") == ["004050X109"] and codes("BHT01") == ["0028"]
    hl = [c.text for c in tree.findall(".//element[@xid='HL03']/valid_codes/code")]
    assert hl == ["20", "21", "4", "N", "19"]
    nm101 = [c.text for c in tree.findall(".//element[@xid='NM101']/valid_codes/code")]
    assert {"QV", "77", "1P"} <= set(nm101)
    assert "DHCS-PROVNETWK" in tree.find(".//element[@xid='ISA08']/regex").text
    text = MAP.read_text()
    for key in ("A1", "A2", "A3", "A4", "A5"):
        assert f"  {key} " in text
    readme = (ROOT / "README.md").read_text()
    for key in ("A1", "A2", "A3", "A4", "A5"):
        assert f"**{key}**" in readme


@pytest.mark.parametrize("defect", [
    ("<usage>R</usage>", "<usage>X</usage>"),  # unknown usage code
    ("<pos>0100</pos>", "<pos>one</pos>"),  # non-numeric position
    ('<loop xid="2000E">', '<loop>'),  # a loop without its id
    ("<seq>01</seq>", ""),  # an element without its sequence
    ("<max_use>1</max_use>", "<max_use>1</max_use><bogus/>"),  # an unknown tag
])
def test_defects_injected_into_the_map_are_caught_by_the_schema(defect):
    old, new = defect
    text = MAP.read_text()
    assert old in text
    broken = etree.fromstring(text.replace(old, new, 1).encode())
    assert not _schema().validate(broken)


# -- 274 writer and reader ------------------------------------------------------------------
def test_roster_to_274_is_exactly_the_golden_file():
    settings_ = envelope_settings("dhcs-274")
    source = open_directory(FIX / "roster.csv", "directory", settings_)
    out = io.StringIO()
    write_274(source, out, settings_, ControlNumbers(101, 7), WHEN)
    assert out.getvalue() == (FIX / "roster.274").read_text()
    assert source.findings == []
    assert source.stats == {"rows": 5, "accepted_rows": 5, "rejected_rows": 0, "groups": 2,
                            "sites": 3, "providers": 5}


def test_the_274_envelope_follows_the_companion_guide():
    lines = (FIX / "roster.274").read_text().split("~\n")
    isa = lines[0].split("*")
    assert isa[1] == "03" and isa[8] == "DHCS-PROVNETWK " and isa[12] == "00405"
    assert lines[1].split("*")[1] == "PW" and lines[1].split("*")[3] == "DHCS-PROVNETWK"
    assert lines[1].endswith("*004050X109") and lines[2] == "ST*274*0001*004050X109"
    assert lines[3].startswith("BHT*0028*27*") and lines[4].startswith("DTM*507*")
    assert lines[5].startswith("PER*BJ*")
    levels = [line.split("*")[3] for line in lines if line.startswith("HL*")]
    assert levels == ["20", "21", "4", "N", "19", "19", "N", "19", "4", "N", "19", "19"]


def test_274_to_model_to_274_is_exact():
    text = (FIX / "roster.274").read_text()
    directory, groups, findings = read_274(text.encode())
    assert findings == []
    out = io.StringIO()
    writer = Directory274Writer(out, directory, envelope_settings("dhcs-274"),
                                ControlNumbers(101, 7), WHEN)
    for group in groups:
        writer.write(group)
    writer.close()
    assert out.getvalue() == text


def test_274_to_roster_gives_back_the_roster():
    source = open_directory(FIX / "roster.274", "274")
    out = io.StringIO()
    assert write_roster(source, out) == 5
    assert out.getvalue() == (FIX / "roster.csv").read_text()


_codes = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=8)
_names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ -'.", min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and s)
_npis = st.sampled_from(["1234567802", "1234567877", "1234567943", "1234568016"])


@st.composite
def _groups(draw):
    providers = draw(st.lists(st.builds(
        Provider, npi=_npis, last_name=_names, first_name=st.just("") | _names,
        degrees=st.lists(_codes, max_size=2), languages=st.lists(st.sampled_from(
            ["en", "es", "zh"]), max_size=2, unique=True),
        taxonomies=st.lists(st.sampled_from(["1041C0700X", "163W00000X"]), min_size=1,
                            max_size=2),
        roles=st.lists(_codes, max_size=2), ecm=st.booleans(), cs=st.booleans(),
        cs_services=st.lists(st.sampled_from(["MEALS", "RESPITE"]), max_size=2, unique=True)),
        min_size=1, max_size=3))
    site = draw(st.builds(
        Site, id=_codes, name=_names, address1=_names, city=_names, state=st.just("CA"),
        zip=st.just("94601"), county=st.sampled_from(["ALAMEDA", "SAN DIEGO"]),
        phone=st.just("5105550100"), indicators=st.lists(st.just("CLNC"), max_size=1),
        hours=st.lists(st.builds(Hours, day=st.sampled_from(["MON", "SAT"]),
                                 opens=st.just("0800"), closes=st.just("1700")), max_size=2),
        accessibility=st.lists(st.sampled_from(["HA", "PT"]), max_size=2, unique=True),
        gender=st.sampled_from(["", "F", "M"]),
        age_min=st.none() | st.integers(0, 120), age_max=st.none() | st.integers(0, 120),
        specialties=st.lists(st.just("251S00000X"), max_size=1),
        roles=st.lists(_codes, max_size=2)))
    site.providers = providers
    group = draw(st.builds(Group, npi=_npis, name=_names, tin=st.just("123456789"),
                           contract_start=st.none() | st.dates(date(2020, 1, 1),
                                                                 date(2030, 1, 1))))
    group.sites = [site]
    return group


@settings(max_examples=60, deadline=None)
@given(st.lists(_groups(), min_size=1, max_size=3))
def test_property_model_to_274_to_model_to_plannet_to_model(tmp_path_factory, groups):
    directory, back, findings = read_274(_274(groups).encode())
    assert findings == [] and back == groups
    path = tmp_path_factory.mktemp("pn") / "b.json"
    with open(path, "w") as out:
        from gateway.directory.plannet import PlanNetBundleWriter

        writer = PlanNetBundleWriter(out, directory)
        for group in back:
            writer.write(group)
        writer.close()
    reader = PlanNetReader(path)
    _, again = reader.read()
    assert reader.findings == []
    # a provider listed twice at one site is one Practitioner with the first one's details
    assert [g.npi for g in again] == [g.npi for g in groups]
    assert [[p.npi for s in g.sites for p in s.providers] for g in again] == \
        [[p.npi for s in g.sites for p in s.providers] for g in groups]


def _defect(text: str, old: str, new: str) -> bytes:
    assert old in text, old
    return text.replace(old, new, 1).encode()


def test_defects_in_a_274_are_located_and_the_rest_still_converts():
    text = (FIX / "roster.274").read_text()
    bad = _defect(text, "HL*6*4*19*0", "HL*6*3*19*0")  # provider directly under the group
    bad = _defect(bad.decode(), "WS*TUE*0800*1700", "XYZ*TUE")  # unknown segment
    bad = _defect(bad.decode(), "HL*7*3*N*1", "HL*7*3*Q*1")  # unknown level (site + provider)
    bad = _defect(bad.decode(), "XX*1234568156", "XX*1234568157")  # Luhn-invalid NPI
    _directory, groups, findings = read_274(bad)
    got = [(f.rule, f.location, f.segment, f.severity.value) for f in findings]
    assert got == [
        ("DIR-274-002", "ISA#1/GS#1/ST#1/2000D[1]/2100DA/XYZ", 24, "error"),
        ("DIR-274-003", "ISA#1/GS#1/ST#1/2000E[2]/HL02", 40, "error"),
        ("DIR-274-004", "ISA#1/GS#1/ST#1/HL[1]/HL03", 51, "error"),
        ("DIR-274-008", "ISA#1/GS#1/ST#1/2000E[5]/2100EA/NM109", 94, "error"),
    ]
    assert findings[0].message == "segment XYZ is not expected in 2100DA; it was skipped"
    assert findings[1].message == ("HL level 19 (2000E) sits under parent level 4 (provider "
                                   "group), expected under N (site); the loop and everything "
                                   "under it were skipped")
    npis = [p.npi for g in groups for s in g.sites for p in s.providers]
    assert npis == ["1234567877", "1234568081"]


def test_defects_in_the_envelope_and_counts():
    text = (FIX / "roster.274").read_text()
    bad = _defect(text, "ST*274*0001*004050X109", "ST*274*0001*005010X222A1")
    bad = _defect(bad.decode(), "SE*99*0001", "SE*98*0001")
    _d, groups, findings = read_274(bad)
    assert [(f.rule, f.location) for f in findings] == [
        ("DIR-274-001", "ISA#1/GS#1/ST#1/ST03"), ("DIR-274-009", "ISA#1/GS#1/ST#1/SE01")]
    assert len(groups) == 2


# -- ECM / CS flags as data ------------------------------------------------------------------
def test_default_flags_are_2120EA_LQ_ZZ():
    text = (FIX / "roster.274").read_text()
    assert "LQ*ZZ*ECM~" in text and "LQ*ZZ*CS~" in text and "LQ*ZZ*CS-MEALS~" in text


def test_flags_follow_the_data_file(tmp_path):
    custom = tmp_path / "flags.yaml"
    custom.write_text("ecm: {loop: 2100EA, segment: [N2, ECM]}\n"
                      "cs: {loop: 2100EA, segment: [REF, ZZ, CS]}\n"
                      "cs_service: {loop: 2120EA, segment: [LQ, ZZ, \"SVC-{service}\"]}\n")
    flags = load_flags(custom)
    groups = _roster_groups()
    text = _274(groups, flags=flags)
    assert "N2*ECM~" in text and "REF*ZZ*CS~" in text and "LQ*ZZ*SVC-HOUSING_NAVIGATION~" in text
    assert "LQ*ZZ*ECM" not in text
    _d, back, findings = read_274(text.encode(), flags=flags)
    assert findings == [] and back == groups
    # read with the default flags, the custom markers are not flags
    _d, other, findings = read_274(text.encode())
    assert not any(p.ecm for g in other for s in g.sites for p in s.providers)


@pytest.mark.parametrize("content, message", [
    ("ecm: {loop: 2300, segment: [LQ, ZZ, ECM]}\ncs: {loop: 2120EA, segment: [LQ, ZZ, CS]}\n"
     "cs_service: {loop: 2120EA, segment: [LQ, ZZ, 'CS-{service}']}\n", "ecm.loop"),
    ("ecm: {loop: 2120EA, segment: [N2, ECM]}\ncs: {loop: 2120EA, segment: [LQ, ZZ, CS]}\n"
     "cs_service: {loop: 2120EA, segment: [LQ, ZZ, 'CS-{service}']}\n", "not N2"),
    ("ecm: {loop: 2120EA, segment: [LQ, ZZ, ECM]}\ncs: {loop: 2120EA, segment: [LQ, ZZ, CS]}\n"
     "cs_service: {loop: 2120EA, segment: [LQ, ZZ, CSX]}\n", "{service}"),
])
def test_a_wrong_flag_file_is_refused(tmp_path, content, message):
    path = tmp_path / "flags.yaml"
    path.write_text(content)
    with pytest.raises(FlagDefinitionError, match=re.escape(message)):
        load_flags(path)


# -- the directory roster -------------------------------------------------------------------
def test_bad_roster_rows_get_row_and_column_findings_and_the_rest_converts(tmp_path):
    lines = (FIX / "roster.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    rows[0] = rows[0].replace("1234567877,RIVERA", ",RIVERA")  # no provider NPI
    rows[1] = rows[1].replace("163W00000X", "")  # no taxonomy
    rows[2] = rows[2].replace(",ALAMEDA,", ",,")  # no county
    rows[3] = rows[3].replace("1234568081", "1234568082")  # Luhn-invalid NPI
    rows[4] = rows[4].replace("2500 MISSION ST", "").replace("MON 0900-1700", "MONDAY 9-5")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header] + rows + [lines[1]]) + "\n")
    source = open_directory(path, "directory", envelope_settings("dhcs-274"))
    out = io.StringIO()
    write_274(source, out, envelope_settings("dhcs-274"), ControlNumbers(1, 1), WHEN)
    got = [(f.rule, f.location) for f in source.findings]
    assert got == [
        ("ROW-001", "row 2, column Provider NPI"),
        ("ROW-001", "row 3, column Provider Taxonomy"),
        ("ROW-001", "row 4, column Site County"),
        ("ROW-004", "row 5, column Provider NPI"),
        ("ROW-001", "row 6, column Site Address"),
    ]
    assert source.stats["rejected_rows"] == 5 and source.stats["providers"] == 1
    assert "NM1*1P*1*RIVERA*ANA*M***XX*1234567877~" in out.getvalue()


def test_roster_hours_and_taxonomy_formats(tmp_path):
    lines = (FIX / "roster.csv").read_text().splitlines()
    row = lines[1].replace("MON 0800-1700; TUE 0800-1700", "MON 0800-1700; EVERY DAY") \
        .replace("1041C0700X", "SOCIALWORK")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([lines[0], row, lines[2]]) + "\n")
    source = open_directory(path, "directory")
    groups = list(source.groups)
    assert [(f.rule, f.location, f.message) for f in source.findings] == [
        ("DIR-ROW-003", "row 2, column Site Hours",
         "Site Hours entry 'EVERY DAY' is not DAY HHMM-HHMM (e.g. MON 0800-1700)"),
        ("DIR-ROW-004", "row 2, column Provider Taxonomy",
         "Provider Taxonomy SOCIALWORK is not a NUCC taxonomy code (10 characters, e.g. "
         "261QM0801X)")]
    assert [p.npi for g in groups for s in g.sites for p in s.providers] == ["1234567943"]


def test_a_group_repeated_with_other_values_and_out_of_order(tmp_path):
    lines = (FIX / "roster.csv").read_text().splitlines()
    changed = lines[2].replace("SUNRISE COMMUNITY CARE", "SUNRISE CARE INC")
    path = tmp_path / "r.csv"
    path.write_text("\n".join([lines[0], lines[1], changed, lines[4], lines[3]]) + "\n")
    source = open_directory(path, "directory")
    list(source.groups)
    assert [(f.rule, f.location) for f in source.findings] == [
        ("DIR-ROW-001", "row 3"), ("DIR-ROW-002", "row 5, column Group NPI")]
    assert source.findings[0].message == ("group 1234567802 was given with other values on "
                                          "row 2: Group Name differ; the values of row 2 were "
                                          "kept")


def test_the_existing_provider_roster_is_still_read_as_a_roster():
    from gateway.tabular import read_table, sniff_table

    path = ROOT / "fixtures" / "roster" / "roster-clean.csv"
    if not path.exists():
        path = next((ROOT / "fixtures" / "roster").glob("*.csv"))
    assert sniff_table(path) == "roster"
    assert read_table(path, "roster").rows
    assert sniff_table(FIX / "roster.csv") == "directory"


# -- Plan-Net ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def plannet_package():
    from gateway.fhir.plannet import package_dir

    if not (package_dir() / "package.json").is_file():  # installed by the Makefile only
        subprocess.run(["make", "-s", "fhir-packages"], cwd=ROOT, check=True)
    return package_dir()


def test_274_to_plannet_is_exactly_the_golden_bundle():
    source = open_directory(FIX / "roster.274", "274")
    out = io.StringIO()
    write_plannet(source, out)
    assert out.getvalue() == (FIX / "roster.plannet.json").read_text()
    bundle = json.loads(out.getvalue())
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Practitioner") == 4 and kinds.count("PractitionerRole") == 5
    assert {"Organization", "OrganizationAffiliation", "Location", "HealthcareService"} <= \
        set(kinds)


def test_our_plannet_output_conforms_to_the_plannet_profiles(plannet_package):
    from gateway.fhir.plannet import check_bundle_file

    assert check_bundle_file(FIX / "roster.plannet.json") == []


def test_the_profile_checker_finds_defects(plannet_package, tmp_path):
    from gateway.fhir.plannet import check_bundle_file

    bundle = json.loads((FIX / "roster.plannet.json").read_text())
    entries = bundle["entry"]
    location = next(i for i, e in enumerate(entries)
                    if e["resource"]["resourceType"] == "Location")
    role = next(i for i, e in enumerate(entries)
                if e["resource"]["resourceType"] == "PractitionerRole")
    del entries[location]["resource"]["name"]
    del entries[role]["resource"]["telecom"]
    entries[role]["resource"]["active"] = False
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle))
    got = [(f.rule, f.location, f.message) for f in check_bundle_file(path)]
    assert got == [
        ("DIR-FHIR-003", f"Bundle.entry[{location}].resource.name",
         "Plan-Net Location: Location.name is required (min 1)"),
        ("DIR-FHIR-003", f"Bundle.entry[{role}].resource",
         "Plan-Net PractitionerRole: invariant pd-1 failed: SHALL have contact information or "
         "a reference to an Endpoint"),
        ("DIR-FHIR-003", f"Bundle.entry[{role}].resource.active",
         "Plan-Net PractitionerRole: PractitionerRole.active must be like true"),
    ]


def _example_bundle(package: Path, tmp_path: Path) -> Path:
    entries = []
    for path in sorted((package / "example").glob("*.json")):
        resource = json.loads(path.read_text())
        entries.append({"fullUrl": f"http://example.org/fhir/{resource['resourceType']}/"
                                   f"{resource['id']}", "resource": resource})
    target = tmp_path / "examples.json"
    target.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                  "entry": entries}))
    return target


def test_plannet_examples_to_274_and_back_keep_every_mapped_field(plannet_package, tmp_path):
    examples = _example_bundle(plannet_package, tmp_path)
    reader = PlanNetReader(examples)
    directory, groups = reader.read()
    # the roles the 274 cannot carry are named, by FHIRPath
    assert [(f.rule, f.location) for f in reader.findings] == [
        ("DIR-FHIR-001", "Bundle.entry[43].resource.practitioner"),
        ("DIR-FHIR-001", "Bundle.entry[44].resource.location"),
        ("DIR-FHIR-001", "Bundle.entry[47].resource.practitioner"),
        ("DIR-FHIR-001", "Bundle.entry[48].resource.practitioner"),
    ]
    assert reader.stats["providers"] == 2
    text = _274(groups, directory)
    directory2, groups2, findings = read_274(text.encode())
    assert findings == [] and groups2 == groups
    out = tmp_path / "again.json"
    with open(out, "w") as handle:
        from gateway.directory.plannet import PlanNetBundleWriter

        writer = PlanNetBundleWriter(handle, directory2)
        for group in groups2:
            writer.write(group)
        writer.close()
    reader2 = PlanNetReader(out)
    _d, groups3 = reader2.read()
    assert reader2.findings == [] and groups3 == groups
    hans = groups[0].sites[0].providers[0]
    assert (hans.npi, hans.last_name, hans.first_name, hans.languages, hans.taxonomies,
            hans.roles) == ("9941339100", "Solo", "Hans", ["ja"], ["207R00000X"], ["ph"])
    site = groups[0].sites[0]
    assert (site.id, site.city, site.accessibility, [h.text() for h in site.hours][:1]) == (
        "HansSoloClinic", "Anytown", ["ADA", "PT"], ["MON 0800-1700"])
    from gateway.fhir.plannet import check_bundle_file

    assert check_bundle_file(out) == []


def test_a_plannet_resource_without_what_the_274_needs(tmp_path):
    bundle = json.loads((FIX / "roster.plannet.json").read_text())
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Practitioner" and \
                resource["identifier"][0]["value"] == "1234568081":
            del resource["identifier"]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle))
    reader = PlanNetReader(path)
    _d, groups = reader.read()
    index = next(i for i, e in enumerate(bundle["entry"])
                 if e["resource"]["resourceType"] == "Practitioner"
                 and "identifier" not in e["resource"])
    assert [(f.rule, f.location, f.message) for f in reader.findings] == [
        ("DIR-FHIR-001", f"Bundle.entry[{index}].resource.identifier",
         "Practitioner has no npi, which the 274 needs; the Practitioner was not converted")]
    assert reader.stats["providers"] == 4


# -- CLI --------------------------------------------------------------------------------------
def test_cli_round_trip(tmp_path, capsys):
    t274 = tmp_path / "out.274"
    assert main(["convert", str(FIX / "roster.csv"), "--to", "274", "-o", str(t274)]) == 0
    assert main(["validate", str(t274), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)["files"][0]
    assert (report["kind"], report["valid"], report["stats"]["providers"]) == ("274", True, 5)
    fhir = tmp_path / "out.json"
    assert main(["convert", str(t274), "--to", "fhir", "-o", str(fhir)]) == 0
    back = tmp_path / "back.274"
    assert main(["convert", str(fhir), "--to", "274", "-o", str(back)]) == 0
    csv_out = tmp_path / "back.csv"
    assert main(["convert", str(back), "--to", "csv", "-o", str(csv_out)]) == 0
    assert csv_out.read_text() == (FIX / "roster.csv").read_text()
    # control numbers come from the store: two conversions, two interchange numbers
    assert t274.read_text().split("*")[13] != back.read_text().split("*")[13]


def test_cli_validate_bad_274_exit_1_with_locations(tmp_path, capsys):
    bad = tmp_path / "bad.274"
    bad.write_bytes(_defect((FIX / "roster.274").read_text(), "HL*6*4*19*0", "HL*6*3*19*0"))
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "DIR-274-003" in out and "ISA#1/GS#1/ST#1/2000E[2]/HL02" in out


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["convert", str(FIX / "roster.csv"), "--to", "rtf"]) == 2
    assert "cannot convert directory roster → rtf" in capsys.readouterr().err
    assert main(["convert", str(FIX / "roster.274"), "--to", "837p"]) == 2
    not_json = tmp_path / "x.json"
    not_json.write_text('{"resourceType": "Bundle", "entry": [ {"resource": ')
    assert main(["convert", str(not_json), "--to", "274"]) == 2
    assert "Traceback" not in capsys.readouterr().err


# -- validation through the X12 engine (issue 11) with the 274 map ---------------------------
@pytest.mark.parametrize("old, new, expected", [
    ("NM1*QV*2*SUNRISE", "NM1*QX*2*SUNRISE", [
        ("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2000C[1]/NM1", 12),
        ("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2000C[1]/REF", 13),
        ("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2000C[1]/DTP", 14),
        ("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2000C[1]/DTP", 15),
        ("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2000C[1]/LQ", 16),
        ("X12-IG-SEG-3", "ISA#1/GS#1/ST#1/2100CA[1]/NM1", 17)]),
    ("WS*TUE*0800*1700~\n", "XYZ*TUE~\n", [
        ("X12-IG-SEG-1", "ISA#1/GS#1/ST#1/2100DA[1]/(unrecognised id)", 24)]),
    ("HL*6*4*19*0", "HL*6*3*19*0", [("DIR-274-003", "ISA#1/GS#1/ST#1/2000E[2]/HL02", 40)]),
    ("DTP*092*D8*20250101", "DTP*092*D8*2025010", [
        ("X12-IG-ELE-8", "ISA#1/GS#1/ST#1/2100CA[1]/DTP03", 14)]),
    ("BHT*0028*27", "BHT*0028*11", [("X12-IG-ELE-7", "ISA#1/GS#1/ST#1/BHT02", 4)]),
    ("XX*1234568156", "XX*1234568157", [
        ("X12-SNIP5-NPI", "ISA#1/GS#1/ST#1/2100EA[5]/NM109", 94)]),
    ("ISA*03*", "ISA*00*", [("DIR-274-012", "ISA#1/ISA01", 1)]),
    ("SE*99*0001", "SE*98*0001", [("X12-ENV-012", "ISA#1/GS#1/ST#1/SE01", 101)]),
])
def test_defects_injected_into_a_274_are_found_by_the_engine_with_the_map(tmp_path, old, new,
                                                                          expected):
    from gateway.reports import validate_file

    clean = validate_file(FIX / "roster.274")
    assert (clean.kind, clean.findings, clean.stats["segments"]) == ("274", [], 103)
    path = tmp_path / "bad.274"
    path.write_bytes(_defect((FIX / "roster.274").read_text(), old, new))
    report = validate_file(path)
    assert [(f.rule, f.location, f.segment) for f in report.findings] == expected
    assert not report.valid


def test_an_xlsx_directory_roster_converts_like_the_csv(tmp_path, capsys):
    import csv as csv_module

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    with open(FIX / "roster.csv", newline="") as handle:
        for row in csv_module.reader(handle):
            sheet.append(row)
    path = tmp_path / "directory.xlsx"
    book.save(path)
    assert main(["validate", str(path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)["files"][0]
    assert (report["kind"], report["stats"]["rows"]) == ("directory", 5)
    out = tmp_path / "from-xlsx.274"
    assert main(["convert", str(path), "--to", "274", "-o", str(out)]) == 0
    _d, groups, findings = read_274(out.read_bytes())
    assert findings == [] and groups == _roster_groups()
