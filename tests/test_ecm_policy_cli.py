"""End to end through the command line (issue 14): an invoice, a MIF, a claims history and a CS
authorization file with a CS-only member, a one-stay high utilizer, an SMI/SUD member with one
ED visit and one stay, a child with adult POFs, and an overlapping assignment."""

import json
import subprocess
import sys

from conftest import FIXTURES

HERE = FIXTURES / "ecm-policy"
COMMON = ["--providers", FIXTURES / "roster" / "providers.csv",
          "--history", HERE / "claims-history.csv", "--received", "2025-07-01",
          "--format", "json"]


def validate(*args):
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "validate",
                           HERE / "invoice.csv", *map(str, args), *map(str, COMMON)],
                          capture_output=True, text=True, check=False)
    return done.returncode, {f["kind"]: f for f in json.loads(done.stdout)["files"]}


def found(report):
    return [(f["rule"], f["location"]) for f in report["findings"]]


def test_the_scenarios_of_the_policy_review():
    code, files = validate("--members", HERE / "mif.csv",
                           "--cs-authorizations", HERE / "cs-authorizations.csv")
    assert code == 0
    # the child (row 4) assigned adult POFs: a MIF warning with row and column
    assert found(files["mif"]) == [
        ("ECM-MIF-001", "row 4, column Member Date of Birth"),
        ("ECM-MIF-001", "row 4, column Member Date of Birth")]
    assert files["claims"]["stats"] == {"rows": 8, "lines": 8}
    invoice = files["invoice"]
    assert invoice["stats"]["accepted_rows"] == 5 and invoice["stats"]["rejected_rows"] == 0
    assert found(invoice) == [
        # row 2: the CS-only member (no ECM assignment) with a CS authorization: nothing
        # row 3: one 3-day admission is one stay, not three
        ("ECM-POF-001", "row 3, column Member CIN"),
        # row 4: one ED visit and one stay do not add up to the SMI/SUD alternative
        ("ECM-POF-001", "row 4, column Member CIN"),
        # row 5: the child: ages and (no history) evidence
        ("ECM-AGE-001", "row 5, column Member CIN"),
        ("ECM-AGE-001", "row 5, column Member CIN"),
        ("ECM-POF-001", "row 5, column Member CIN"),
        ("ECM-POF-001", "row 5, column Member CIN")]
    messages = [f["message"] for f in invoice["findings"]]
    assert "three or more unplanned hospital and/or short-term SNF stays (1 found)" \
        in messages[0]
    assert "two or more ED visits due to SMI or SUD (1 found); two or more hospitalizations " \
           "due to SMI or SUD (1 found); other criteria may qualify the member" in messages[1]
    assert messages[2] == ("on 2025-06-05 the member is 9, but Population of Focus "
                           "HIGH_UTILIZER is for age 21 and over")


def test_a_cs_line_needs_a_cs_authorization_not_an_ecm_assignment(tmp_path):
    auth = tmp_path / "cs.csv"
    auth.write_text((HERE / "cs-authorizations.csv").read_text().replace(
        "2025-05-01,2025-10-31", "2025-06-03,2025-10-31"))  # starts the day after the line
    code, files = validate("--members", HERE / "mif.csv", "--cs-authorizations", auth)
    assert code == 1
    assert ("ECM-CS-002", "row 2, column HCPCS Code") in found(files["invoice"])
    assert not any(r == "ECM-MEM-002" for r, _ in found(files["invoice"]))


def test_an_overlapping_assignment_rejects_the_whole_mif():
    code, files = validate("--members", HERE / "mif-overlapping.csv")
    assert code == 1
    assert found(files["mif"])[2:] == [
        ("ECM-MIF-002", "row 6, column ECM Benefit Start Date"), ("ECM-REG-002", "file")]
    assert files["mif"]["stats"]["loaded"] == 0
    # nothing of it was loaded: no member rule ran (no assignment, age or POF finding), and the
    # invoice says so once for the file (not per row: it has 5), as the 837P path does
    assert files["invoice"]["valid"] is True
    assert [(f["rule"], f["severity"], f["location"], f["message"])
            for f in files["invoice"]["findings"]] == [
        ("ECM-REG-001", "info", "file", "member rules (assignment, programs, POF) not applied: "
                                        "no member information file given or applied"),
        ("ECM-REG-001", "info", "file", "Community Supports authorization rules not applied: "
                                        "no CS authorization file or MIF CS columns given or "
                                        "applied")]


def test_an_invoice_says_which_rule_groups_did_not_run_once_per_file(tmp_path):
    """The invoice's CS line (row 2) with no CS registry: one ECM-REG-001 for the file, in the
    text report too; with every registry given, none."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "validate", HERE / "invoice.csv",
                           "--members", HERE / "mif.csv", "--providers",
                           FIXTURES / "roster" / "providers.csv", "--received", "2025-07-01"],
                          capture_output=True, text=True, check=False)
    notes = [line.split(None, 3)[1:] for line in done.stdout.splitlines()
             if "ECM-REG-001" in line]
    assert notes == [
        ["ECM-REG-001", "file:", "duplicate check against history not applied: no encounter "
                                 "history given or applied"],
        ["ECM-REG-001", "file:", "Community Supports authorization rules not applied: no CS "
                                 "authorization file or MIF CS columns given or applied"]]
    code, files = validate("--members", HERE / "mif.csv",
                           "--cs-authorizations", HERE / "cs-authorizations.csv")
    assert not [f for f in files["invoice"]["findings"] if f["rule"] == "ECM-REG-001"]


def test_an_invoice_without_registries_has_no_notes():
    """No registry given: the code-set rules alone, and no ECM-REG-001 (as for an 837P)."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "validate", HERE / "invoice.csv",
                           "--received", "2025-07-01", "--format", "json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert json.loads(done.stdout)["files"][0]["findings"] == []
