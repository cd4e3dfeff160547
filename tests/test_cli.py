"""End to end through the console script: exit codes, JSON output, conversions, acks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

BIN = Path(sys.executable).parent / "ecm-gateway"
CLEAN = FIXTURES / "837p" / "ecm-clean.x12"
DEFECTS = FIXTURES / "837p" / "ecm-claim-defects.x12"
ENVELOPE = FIXTURES / "837p" / "ecm-envelope-defects.x12"


def run(*args, cwd=None):
    done = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ}, timeout=120)
    assert "Traceback" not in done.stderr + done.stdout
    return done


def test_validate_clean_exits_0():
    done = run("validate", CLEAN)
    assert done.returncode == 0
    assert done.stdout.startswith(f"{CLEAN}: 837p valid — 12 claims, 28 lines: 12 accepted, 0 "
                                  "rejected")


def test_validate_json_shape_and_exit_1():
    done = run("validate", DEFECTS, CLEAN, "--format", "json")
    assert done.returncode == 1
    files = json.loads(done.stdout)["files"]
    assert [f["valid"] for f in files] == [False, True]
    first = files[0]
    assert first["kind"] == "837p"
    assert first["stats"] == {"transactions": 1, "segments": 223, "claims": 12, "lines": 28,
                              "accepted_claims": 10, "rejected_claims": 2}
    assert first["findings"] == [
        {"rule": "X12-IG-ELE-7", "severity": "error",
         "location": "ISA#1/GS#1/ST#1/2400[4]/SV103",
         "message": "SV103 (Unit or Basis for Measurement Code): invalid code value "
                    "(found 'XX')",
         "source": "X12 TR3 (999 code 621: 7)", "segment": 48},
        {"rule": "X12-IG-ELE-7", "severity": "error",
         "location": "ISA#1/GS#1/ST#1/2300[5]/CLM05-1",
         "message": "CLM05-1 (Place of Service Code): invalid code value (found '9Z')",
         "source": "X12 TR3 (999 code 621: 7)", "segment": 92},
    ]


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02\x03" * 50, b"hello world\n",
                                     b"ISA*00*"])
def test_not_x12_exits_2_with_a_message(tmp_path, content):
    bad = tmp_path / "input.x12"
    bad.write_bytes(content)
    done = run("validate", bad)
    assert done.returncode == 2
    assert done.stderr.startswith("ecm-gateway: error: ")


def test_missing_file_and_kind_mismatch(tmp_path):
    assert run("validate", tmp_path / "nope.x12").returncode == 2
    done = run("validate", CLEAN, "--kind", "999", "--format", "json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["files"][0]["findings"][0]["rule"] == "GATEWAY-KIND-001"


def test_ack_writes_999_and_277ca(tmp_path):
    done = run("ack", DEFECTS, "-o", tmp_path / "acks")
    assert done.returncode == 1
    assert sorted(p.name for p in (tmp_path / "acks").iterdir()) == [
        "ecm-claim-defects.277ca.x12", "ecm-claim-defects.999.x12"]
    assert "IK5*E*5~" in (tmp_path / "acks" / "ecm-claim-defects.999.x12").read_text()
    done = run("ack", ENVELOPE, "-o", tmp_path / "env")
    assert [p.name for p in (tmp_path / "env").iterdir()] == ["ecm-envelope-defects.ta1.x12"]


def test_control_numbers_persist_between_runs(tmp_path):
    run("ack", CLEAN, "-o", tmp_path / "a")
    run("ack", CLEAN, "-o", tmp_path / "b")
    first = (tmp_path / "a" / "ecm-clean.999.x12").read_text().split("*")[13]
    second = (tmp_path / "b" / "ecm-clean.999.x12").read_text().split("*")[13]
    assert int(second) > int(first)


def test_convert_json_then_back_to_837p(tmp_path):
    as_json = tmp_path / "encounters.json"
    assert run("convert", CLEAN, "--to", "json", "-o", as_json).returncode == 0
    data = json.loads(as_json.read_text())
    assert len(data["encounters"]) == 12
    assert data["encounters"][0]["claim"]["lines"][0]["procedure_code"].startswith("G90")
    out = tmp_path / "state.x12"
    assert run("convert", as_json, "--to", "837p", "--envelope", "dhcs-encounters",
               "-o", out).returncode == 0
    text = out.read_text()
    assert "*ZZ*CALIFORNIA-DHCS*" in text and "GS*HC*PLANCODE1001*CALIFORNIA-DHCS*" in text
    assert "NM1*40*2*CALIFORNIA-DHCS*****46*610442~" in text and "*RP~" in text
    assert run("validate", out).returncode == 0


def test_convert_csv_has_a_row_per_line(tmp_path):
    out = tmp_path / "lines.csv"
    assert run("convert", CLEAN, "--to", "csv", "-o", out).returncode == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 28
    assert rows[0].startswith("interchange_control_number,transaction_control_number,claim_id")


def test_an_837p_whose_every_claim_is_rejected_leaves_no_output(tmp_path):
    """Findings, not a usage error: exit 1, one message after the findings, and no file (an
    earlier file of that name is left as it was)."""
    out = tmp_path / "clean.837"
    done = run("convert", ENVELOPE, "--to", "837p", "-o", out, cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[-1] == "ecm-gateway: no claim to write: every claim (12) was rejected"
    assert lines[:-1] and all(line.startswith(("error: ", "warning: ", "info: "))
                              for line in lines[:-1])
    assert "accepted and written" not in done.stderr and done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == []
    out.write_text("kept")
    assert run("convert", ENVELOPE, "--to", "837p", "-o", out, cwd=tmp_path).returncode == 1
    assert out.read_text() == "kept"
    done = run("convert", ENVELOPE, "--to", "837p", cwd=tmp_path)  # standard output: nothing
    assert done.returncode == 1 and done.stdout == ""


def test_convert_pairs_that_make_no_sense_are_usage_errors(tmp_path):
    done = run("convert", CLEAN, "--to", "rtf", "-o", tmp_path / "x")
    assert done.returncode == 2 and "cannot convert 837p → rtf" in done.stderr
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"encounters": [{"claim": 1}]}')
    done = run("convert", bad, "--to", "837p")
    assert done.returncode == 2 and "not valid canonical encounter JSON" in done.stderr
    done = run("convert", CLEAN, "--to", "json", "--envelope", "../etc")
    assert done.returncode == 0
    done = run("convert", bad, "--to", "837p", "--envelope", "../etc")
    assert done.returncode == 2
