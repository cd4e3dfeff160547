"""Resources a long-running gateway opens are let go of: an app that shuts down closes its
store (pooled SQLite connections, the write-lock file), a closed store keeps no descriptor
and still works when used again. (tests/conftest.py's ``_no_leaks`` closes what each test
made and fails a test that leaves a queue's worker threads running.)"""
from __future__ import annotations

import os
import threading

from conftest import FIXTURES, demo_gateway
from fastapi.testclient import TestClient

from gateway.pipeline.store import Store

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


def _open_files(folder) -> list[str]:
    """This process's descriptors open on files under ``folder``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the descriptor listdir itself used)
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_apps_that_ran_and_shut_down_hold_no_descriptors(tmp_path):
    counts, before = [], set(threading.enumerate())
    for n in range(4):  # four servers, one after the other, in one process
        folder = tmp_path / f"app-{n}"
        folder.mkdir()
        app, auth = demo_gateway(folder, registries=True)
        with TestClient(app) as client:
            answer = client.post("/x12", content=MIXED, headers=auth["harbor"])
            assert answer.status_code == 200 and answer.json()["status"] == "routed"
            assert client.get("/metrics").status_code == 200
            task = (FIXTURES / "fhir" / "resources" / "task-ecm.json").read_bytes()
            checked = client.post("/fhir/Task/$validate", content=task,  # a FHIR thread's
                                  headers={**auth["harbor"],
                                           "Content-Type": "application/fhir+json"})
            assert checked.status_code == 200
        assert _open_files(folder) == [], "the app's store is closed when the app shuts down"
        assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith(
            ("gateway-worker-", "fhir_"))], "its queue and its FHIR threads are stopped"
        counts.append(_descriptors())
    assert counts[-1] <= counts[0], counts  # flat: before, every app left 4 files open


def test_a_closed_store_keeps_no_descriptor_and_opens_again_when_used(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    assert store.next_numbers("isa13", 2) == [1, 2]
    assert _open_files(tmp_path)  # the pooled connection and the write-lock file
    store.close()
    assert _open_files(tmp_path) == []
    assert store.next_numbers("isa13", 1) == [3]  # used again: it opens what it needs
    store.close()
    assert _open_files(tmp_path) == []
