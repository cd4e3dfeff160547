"""Each envelope rule fires with the right location, and the TA1/999 codes follow."""

import pytest
from conftest import join, segments

from gateway.x12.validate import validate_x12


def mutate(data: bytes, seg_id: str, position: int, value: str, occurrence: int = 0) -> bytes:
    parts = segments(data)
    hits = [i for i, s in enumerate(parts) if s.split("*")[0] == seg_id]
    index = hits[occurrence]
    fields = parts[index].split("*")
    fields[position] = value
    parts[index] = "*".join(fields)
    return join(parts)


def errors(data: bytes) -> list[tuple[str, str]]:
    return [(f.rule, f.location) for f in validate_x12(data).findings if f.is_error]


def test_clean_file_has_no_findings(clean_837):
    result = validate_x12(clean_837)
    assert result.valid and result.findings == []
    assert result.kind == "837p" and len(result.claims) == 12


@pytest.mark.parametrize("seg_id, position, value, rule, location", [
    ("IEA", 2, "000000999", "X12-ENV-004", "ISA#1/IEA02"),
    ("IEA", 1, "2", "X12-ENV-005", "ISA#1/IEA01"),
    ("GE", 2, "99", "X12-ENV-007", "ISA#1/GS#1/GE02"),
    ("GE", 1, "3", "X12-ENV-008", "ISA#1/GS#1/GE01"),
    ("GS", 1, "HP", "X12-ENV-009", "ISA#1/GS#1/ST#1/ST01"),
    ("ST", 3, "005010X223A2", "X12-ENV-010", "ISA#1/GS#1/ST#1/ST03"),
    ("SE", 2, "0002", "X12-ENV-011", "ISA#1/GS#1/ST#1/SE02"),
    ("SE", 1, "12", "X12-ENV-012", "ISA#1/GS#1/ST#1/SE01"),
    ("GS", 4, "20261332", "X12-ENV-014", "ISA#1/GS#1/GS04"),
    ("GS", 5, "2561", "X12-ENV-014", "ISA#1/GS#1/GS05"),
    ("ISA", 9, "261399", "X12-ENV-003", "ISA#1/ISA09"),
    ("ISA", 13, "00000000A", "X12-ENV-003", "ISA#1/ISA13"),
    ("ISA", 15, "X", "X12-ENV-003", "ISA#1/ISA15"),
    ("ISA", 12, "00402", "X12-ENV-017", "ISA#1/ISA12"),
])
def test_envelope_rule(clean_837, seg_id, position, value, rule, location):
    data = mutate(clean_837, seg_id, position, value)
    if seg_id == "ISA" and position == 13:
        data = mutate(data, "IEA", 2, value)
    assert (rule, location) in errors(data)


def test_counts_name_expected_and_found(clean_837):
    result = validate_x12(mutate(clean_837, "SE", 1, "12"))
    finding = next(f for f in result.findings if f.rule == "X12-ENV-012")
    assert finding.message == ("SE01 says 12 segments but the transaction set has 219 "
                               "(ST through SE)")
    assert finding.segment == 221
    assert finding.source.startswith("X12.6")


def test_truncated_interchange(clean_837):
    parts = segments(clean_837)
    cut = join(parts[: len(parts) // 2])
    found = errors(cut)
    assert ("X12-ENV-006", "ISA#1") in found
    assert ("X12-ENV-015", "ISA#1/GS#1") in found
    assert ("X12-ENV-016", "ISA#1/GS#1/ST#1") in found


def test_duplicate_st02_in_group(clean_837):
    parts = segments(clean_837)
    st = next(i for i, s in enumerate(parts) if s.startswith("ST*"))
    se = next(i for i, s in enumerate(parts) if s.startswith("SE*"))
    doubled = parts[: se + 1] + parts[st: se + 1] + parts[se + 1:]
    doubled = [("GE*2*3" if p.startswith("GE*") else p) for p in doubled]
    found = errors(join(doubled))
    assert ("X12-ENV-013", "ISA#1/GS#1/ST#2/ST02") in found


def test_unsupported_transaction_set(clean_837):
    data = mutate(mutate(clean_837, "GS", 1, "BE"), "ST", 1, "834")
    # the 837 guide is not applied to an 834: one clear finding, not hundreds
    assert errors(data) == [("X12-ENV-018", "ISA#1/GS#1/ST#1/ST01")]


def test_prose_before_isa(clean_837):
    result = validate_x12(b"Test file for ACME\n\n" + clean_837)
    assert [(f.rule, f.location, f.segment) for f in result.findings] == [
        ("X12-ENV-001", "ISA#1", 1)]
    assert result.findings[0].message.startswith("20 characters of text stand before")


def test_interchange_codes_feed_the_ta1(clean_837):
    result = validate_x12(mutate(clean_837, "IEA", 2, "000000999"))
    assert result.interchanges[0].ta1_codes == ["001"]
    result = validate_x12(mutate(clean_837, "ISA", 9, "261399"))
    assert result.interchanges[0].ta1_codes == ["014"]


def test_envelope_values_are_shown_but_never_member_data(clean_837):
    result = validate_x12(mutate(clean_837, "GE", 2, "99"))
    message = next(f.message for f in result.findings if f.rule == "X12-ENV-007")
    assert message == "GE02 group control number 99 does not match GS06 3"
