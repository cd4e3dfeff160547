"""TA1 / 999 / 277CA: exact bytes (golden files) and validity in bare pyx12."""

import io
import logging
from datetime import datetime

import pytest
import pyx12.params
import pyx12.x12n_document
from conftest import FIXTURES, join, segments

from gateway.x12.acks import AckControls, acknowledge
from gateway.x12.validate import validate_x12

WHEN = datetime(2026, 10, 6, 8, 0)


def acks_for(data):
    return acknowledge(validate_x12(data), controls=AckControls(100, 200), when=WHEN)


def golden(name: str) -> str:
    return (FIXTURES / "acks" / name).read_text()


def pyx12_accepts(text: str) -> bool:
    logging.getLogger("pyx12").setLevel(logging.CRITICAL + 1)
    return pyx12.x12n_document.x12n_document(pyx12.params.params(), io.StringIO(text),
                                             io.StringIO(), None)


@pytest.mark.parametrize("name", ["ecm-clean", "ecm-claim-defects"])
def test_999_and_277ca_golden(name):
    acks = acks_for((FIXTURES / "837p" / f"{name}.x12").read_bytes())
    assert acks.ta1 is None
    assert acks.ack999 == golden(f"{name}.999.x12")
    assert acks.ack277ca == golden(f"{name}.277ca.x12")


@pytest.mark.parametrize("name", ["ecm-clean.999", "ecm-claim-defects.999",
                                  "ecm-clean.277ca", "ecm-claim-defects.277ca"])
def test_our_acks_validate_in_bare_pyx12_and_in_ours(name):
    text = golden(f"{name}.x12")
    assert pyx12_accepts(text)
    assert validate_x12(text.encode()).valid


def test_claim_errors_are_reported_per_claim():
    acks = acks_for((FIXTURES / "837p" / "ecm-claim-defects.x12").read_bytes())
    lines = acks.ack999.splitlines()
    assert "IK3*SV1*46*2400*8~" in lines
    assert "CTX*CLM01:ECM0300000002~" in lines
    assert "IK4*3*355*7~" in lines
    assert "IK3*CLM*90*2300*8~" in lines
    assert "IK4*5:1*1331*7~" in lines
    assert lines[-5:-3] == ["IK5*E*5~", "AK9*E*1*1*1~"]
    assert [c.claim_id for c in acks.rejected_claims] == ["ECM0300000002", "ECM0300000005"]
    assert len(acks.accepted_claims) == 10
    stcs = [s for s in acks.ack277ca.splitlines() if s.startswith("STC*A")]
    # 2200B + 2200C summaries, then one claim status per claim: every claim is answered
    claim_stcs = [s for s in stcs if s.startswith(("STC*A2", "STC*A7"))]
    assert len(claim_stcs) == 12
    assert sum(s.startswith("STC*A7:21") for s in claim_stcs) == 2
    assert "QTY*90*10~" in acks.ack277ca and "QTY*AA*2~" in acks.ack277ca


def test_envelope_error_gives_a_rejecting_ta1_and_nothing_else():
    acks = acks_for((FIXTURES / "837p" / "ecm-envelope-defects.x12").read_bytes())
    assert acks.ta1 == golden("ecm-envelope-defects.ta1.x12")
    assert "TA1*000000005*261005*0930*R*001~" in acks.ta1
    assert acks.ack999 is None and acks.ack277ca is None


def test_transaction_level_error_rejects_the_set_and_skips_the_277ca(clean_837):
    parts = segments(clean_837)
    se = next(i for i, s in enumerate(parts) if s.startswith("SE*"))
    parts[se] = "SE*5*0001"
    acks = acks_for(join(parts))
    assert "IK5*R*4~" in acks.ack999 and "AK9*R*1*1*0~" in acks.ack999
    assert acks.ack277ca is None
    assert pyx12_accepts(acks.ack999)


def test_header_error_outside_claims_rejects_the_set(clean_837):
    parts = segments(clean_837)
    bht = next(i for i, s in enumerate(parts) if s.startswith("BHT*"))
    parts[bht] = parts[bht].replace("*RP", "*ZZ")
    acks = acks_for(join(parts))
    assert "IK3*BHT*2**8~" in acks.ack999.splitlines()
    assert "IK4*6*640*7~" in acks.ack999.splitlines()
    assert "IK5*R*5~" in acks.ack999
    assert pyx12_accepts(acks.ack999)


def test_ta1_on_request_when_clean(clean_837):
    parts = segments(clean_837)
    fields = parts[0].split("*")
    fields[14] = "1"
    parts[0] = "*".join(fields)
    acks = acks_for(join(parts))
    assert "TA1*000000003*261005*0930*A*000~" in acks.ta1
    assert acks.ack999 is not None


def test_a_rejected_set_still_lists_its_claim_level_errors():
    """A wrong SE01 rejects the set (IK5 R 4); the 999 also lists the claim errors found in it,
    so the submitter fixes everything in one round trip."""
    import re

    text = (FIXTURES / "837p" / "ecm-claim-defects.x12").read_text()
    bad = re.sub(r"(~\s*SE\*)(\d+)", lambda m: m.group(1) + str(int(m.group(2)) + 1), text,
                 count=1)
    assert bad != text
    acks = acks_for(bad.encode())
    lines = acks.ack999.splitlines()
    assert "IK5*R*4~" in lines
    assert "IK3*SV1*46*2400*8~" in lines and "IK4*3*355*7~" in lines
    assert "IK3*CLM*90*2300*8~" in lines and "IK4*5:1*1331*7~" in lines
    assert lines.index("IK3*SV1*46*2400*8~") < lines.index("IK3*CLM*90*2300*8~")  # file order
    assert acks.ack277ca is None  # nothing of a rejected set is answered claim by claim
