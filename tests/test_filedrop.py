"""The file-drop channel: only complete files, hostile names, outbox delivery, no double run."""

import os

from conftest import FIXTURES, ROOT

from gateway.pipeline.filedrop import DropFolders, safe_name, scan_once
from gateway.pipeline.partners import Partners, issue_demo_tokens
from gateway.pipeline.store import Store

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


def setup(tmp_path):
    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "p.yaml")
    partners = Partners.load(tmp_path / "p.yaml")
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    drop = DropFolders(tmp_path / "drop")
    return partners, store, drop


def test_a_dropped_file_is_taken_once_complete_and_answered_in_the_outbox(tmp_path):
    partners, store, drop = setup(tmp_path)
    inbox = drop.folders("harbor")["inbox"]
    (inbox / "claims.x12").write_bytes(MIXED)
    (inbox / "upload.x12.partial").write_bytes(MIXED[:100])  # still being written
    # first sight: not yet settled
    assert scan_once(drop, store, partners, settle_seconds=2, now=1000.0) == []
    taken = scan_once(drop, store, partners, settle_seconds=2, now=1003.0)
    assert len(taken) == 1
    assert sorted(p.name for p in inbox.iterdir()) == ["upload.x12.partial"]
    archive = list(drop.folders("harbor")["archive"].iterdir())
    assert [p.name for p in archive] == [f"{taken[0]}-claims.x12"]
    outbox = sorted(p.name for p in drop.folders("harbor")["outbox"].iterdir())
    assert outbox == [f"{taken[0]}.277ca.x12", f"{taken[0]}.999.x12"]
    plan_outbox = [p.name for p in drop.folders("demo-plan")["outbox"].iterdir()]
    assert plan_outbox == [f"{taken[0]}.837p.x12"]
    # the same file again is a resubmission: archived, not processed twice
    (inbox / "claims.x12").write_bytes(MIXED)
    assert scan_once(drop, store, partners, settle_seconds=0, now=1010.0) == []
    assert len(list(drop.folders("harbor")["outbox"].iterdir())) == 2
    # ... and its bytes are archived beside the original's, not over them
    assert sorted(p.name for p in drop.folders("harbor")["archive"].iterdir()) == [
        f"{taken[0]}-2-claims.x12", f"{taken[0]}-claims.x12"]


def test_a_file_still_growing_waits(tmp_path):
    partners, store, drop = setup(tmp_path)
    inbox = drop.folders("harbor")["inbox"]
    path = inbox / "claims.x12"
    path.write_bytes(MIXED[:500])
    scan_once(drop, store, partners, settle_seconds=2, now=1000.0)
    path.write_bytes(MIXED)  # grew: the clock starts again
    os.utime(path, (1001.5, 1001.5))
    assert scan_once(drop, store, partners, settle_seconds=2, now=1002.5) == []
    assert len(scan_once(drop, store, partners, settle_seconds=2, now=1005.0)) == 1


def test_hostile_names_stay_inside_the_partner_folders():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..hidden") == "hidden"
    assert safe_name("a b;rm -rf.x12") == "a_b_rm_-rf.x12"
    assert safe_name("") == "file"
