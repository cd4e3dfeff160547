"""POF evidence for a plan's whole MIF at once (``ecm-gateway report pof-evidence``,
:func:`gateway.ecm.pof.pof_evidence`): one pass over the history, the same verdicts as the
per-claim rule ECM-POF-001 (ECM Policy Guide 002:411-443, 002:474-482)."""

import subprocess
import sys

from conftest import FIXTURES, ROOT

from gateway.ecm.codesets import load_codesets
from gateway.ecm.pof import pof_evidence, pof_shortfalls
from gateway.registry.load import load_registries
from gateway.registry.store import Registry

POLICY = FIXTURES / "ecm-policy"


def test_the_report_lists_each_pof_lacking_evidence():
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "pof-evidence",
                           "--mif", str(POLICY / "mif.csv"),
                           "--history", str(POLICY / "claims-history.csv")],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    hu = ("adult high utilizer,2024-10-01,2025-03-01,five or more ED visits (0 found); three "
          "or more unplanned hospital and/or short-term SNF stays ({} found),the plan may also "
          "authorize other very high utilizers (002:423-429)")
    smi = ("adult SMI/SUD utilization (one of four alternatives of part 3),2024-04-01,"
           "2025-03-01,two or more ED visits due to SMI or SUD ({n} found); two or more "
           "hospitalizations due to SMI or SUD ({n} found),\"high risk, crisis/ED as sole "
           "source of care, or pregnancy/post-partum (002:475-480) may qualify the member "
           "instead\"")
    assert done.stdout.splitlines() == [
        "member_cin,pof,criterion,window_start,window_end,lacking,other_criteria",
        # one 3-day admission is ONE stay (002:421-423)
        "94100002B,HIGH_UTILIZER," + hu.format(1),
        # one ED visit and one stay due to SMI/SUD: neither alternative (002:479-481)
        "94100003C,SMI_SUD," + smi.format(n=1),
        "94100004D,HIGH_UTILIZER," + hu.format(0),
        "94100004D,SMI_SUD," + smi.format(n=0)]


def test_a_bad_history_file_gives_no_report():
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "pof-evidence",
                           "--mif", str(POLICY / "mif.csv"), "--history",
                           str(POLICY / "invoice.csv")],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode != 0 and done.stdout == "" and "Traceback" not in done.stderr


def test_one_pass_gives_what_the_per_member_check_gives(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    reports = load_registries(registry, members=[POLICY / "mif.csv"],
                              history=[POLICY / "claims-history.csv"])
    assert all(r.valid for r in reports)
    codes = load_codesets()
    index = (codes.event_by_place, codes.event_by_code)
    events = (frozenset(index[0]), frozenset(index[1]))
    assigned = registry.assignments_of()
    snap = registry.snapshot(set(assigned), set(), days=None, events=events)
    latest = registry.latest_history_day()
    one_by_one = {}
    for cin in sorted(assigned):
        gaps = pof_shortfalls(snap.assignments[cin], snap.history.get(cin, []),
                              codes.utilization, index, latest=latest)
        if gaps:
            one_by_one[cin] = gaps
    assert dict(pof_evidence(registry, codes.utilization, None, index)) == one_by_one
    assert dict(pof_evidence(registry, codes.utilization, ["94100002B"], index)) == {
        "94100002B": one_by_one["94100002B"]}


def test_diagnosis_matcher_memo_never_serves_a_dropped_specs_matcher():
    """The matcher memo is keyed by the spec's id; a spec dropped and another made at once
    usually gets the same id (CPython reuses the freed block). Each spec's own ranges must
    decide, never the dropped spec's."""
    from gateway.ecm import pof

    for i in range(40):
        low = f"F{10 + i:02d}"
        spec = {"diagnosis_sets": {"smi": {"ranges": [[low, low]]}}}
        matches = pof._matcher(spec, "smi")
        assert matches([low + "1"]) is True
        assert matches([f"F{10 + i + 1:02d}1"]) is False
        del spec, matches
