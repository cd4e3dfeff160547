"""Attacks on the file drop: a symlink planted where the gateway writes, links and special files
in an inbox, a drop folder that is a symlink."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import servers
from servers import ROOT

FIXTURES = ROOT / "fixtures"

from gateway.pipeline.filedrop import DropFolders, deliver_outbox, scan_once, write_exclusive
from gateway.pipeline.partners import Partners, issue_demo_tokens
from gateway.pipeline.store import Store

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


def _refusal(outbox, name: str) -> dict | None:
    path = outbox / f"{name}.refused.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_symlinked_partial_is_never_followed(served, tmp_path):
    """The outbox name the gateway writes next is planted as a symlink to a file the gateway
    can write (here: a stand-in for its store); the write replaces the link, the target keeps
    its bytes."""
    folders = {n: served.drop / "harbor" / n for n in ("inbox", "outbox")}
    victim = tmp_path / "victim.sqlite"
    victim.write_bytes(b"precious")
    os.symlink(victim, folders["outbox"] / "evil.x12.refused.json.partial")
    os.symlink(FIXTURES / "837p" / "ecm-mixed.x12", folders["inbox"] / "evil.x12")
    refusal = servers.wait_for(lambda: _refusal(folders["outbox"], "evil.x12"), 30)
    assert refusal["findings"][0]["rule"] == "GATEWAY-DROP-001"
    assert "a symbolic link" in refusal["findings"][0]["message"]
    assert victim.read_bytes() == b"precious"
    assert not (folders["inbox"] / "evil.x12").exists()  # the link (only) was removed
    assert (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes() == MIXED


def test_a_hard_link_in_an_inbox_is_refused_not_ingested(served, tmp_path):
    folders = {n: served.drop / "harbor" / n for n in ("inbox", "outbox", "archive")}
    secret = served.drop / "secret-of-the-gateway.x12"  # same file system as the inbox
    secret.write_bytes(MIXED)
    os.link(secret, folders["inbox"] / "linked.x12")
    refusal = servers.wait_for(lambda: _refusal(folders["outbox"], "linked.x12"), 30)
    assert "a hard link" in refusal["findings"][0]["message"]
    assert secret.read_bytes() == MIXED and os.stat(secret).st_nlink == 1
    assert not any("linked.x12" in p.name for p in folders["archive"].iterdir())


def test_a_fifo_or_folder_in_an_inbox_is_refused(served):
    folders = {n: served.drop / "harbor" / n for n in ("inbox", "outbox")}
    os.mkfifo(folders["inbox"] / "pipe.x12")
    (folders["inbox"] / "folder.x12").mkdir()
    assert servers.wait_for(lambda: _refusal(folders["outbox"], "pipe.x12"), 30)
    assert "a folder" in servers.wait_for(
        lambda: _refusal(folders["outbox"], "folder.x12"), 30)["findings"][0]["message"]
    assert servers.wait_for(lambda: served.client.get("/healthz").status_code == 200, 5)


def test_a_symlinked_drop_folder_is_refused_at_start_up(served, tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "drop").mkdir()
    os.symlink(real, tmp_path / "drop" / "harbor")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(servers.free_port()),
         "--store", served.url, "--partners", str(served.partners_file),
         "--drop", str(tmp_path / "drop")], capture_output=True, text=True, timeout=60,
        env={**os.environ, **served.env}, cwd=ROOT)
    assert done.returncode == 2
    assert "symbolic link" in done.stderr and "Traceback" not in done.stderr


def test_a_planted_partial_of_a_routed_document_is_replaced_not_followed(tmp_path):
    """The same with the name of a real acknowledgment (embedded store, scanned here)."""
    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "p.yaml")
    partners = Partners.load(tmp_path / "p.yaml")
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    drop = DropFolders(tmp_path / "drop")
    inbox, outbox = drop.folders("harbor")["inbox"], drop.folders("harbor")["outbox"]
    (inbox / "claims.x12").write_bytes(MIXED)
    [sid] = scan_once(drop, store, partners, settle_seconds=0)
    for item in store.mailbox("harbor"):  # undeliver, then plant links at every name
        store.document(item["id"])
    victim = tmp_path / "partners.yaml"
    victim.write_bytes(b"keep me")
    for path in outbox.iterdir():
        path.unlink()
        os.symlink(victim, path.with_name(path.name + ".partial"))
        os.symlink(victim, path)
    with store._write() as conn:  # noqa: SLF001 - make them deliverable again
        from gateway.pipeline.store import documents_table

        conn.execute(documents_table.update().values(delivered_at=None))
    assert deliver_outbox(store, "harbor", outbox) == 2
    assert victim.read_bytes() == b"keep me"
    for name in (f"{sid}.999.x12", f"{sid}.277ca.x12"):
        assert not (outbox / name).is_symlink() and (outbox / name).read_bytes()[:3] == b"ISA"
    assert sorted(p.name for p in outbox.iterdir()) == [f"{sid}.277ca.x12", f"{sid}.999.x12"]
    write_exclusive(outbox / "again.txt", b"1")  # a stale partial is removed, not followed
    assert (outbox / "again.txt").read_bytes() == b"1"
