"""The collector pause (gateway/gcpause.py): one home, shared by the table reader and the ECM
rules, light enough that the rules (and their worker process, forked by a one-shot command line)
never load the table reader for it - importing ``gateway.tabular`` for it cost the caller's side
≈ 23 ms before the worker could start."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_one_pause_for_tables_and_rules():
    import gateway.gcpause
    import gateway.tabular

    assert gateway.tabular.collector_paused is gateway.gcpause.collector_paused


def test_nested_and_concurrent_pauses_restore_the_collector():
    from gateway.gcpause import collector_paused

    assert gc.isenabled()
    inside = threading.Event()
    leave = threading.Event()

    def other():
        with collector_paused():
            inside.set()
            leave.wait(5)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        inside.wait(5)
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()  # (the other thread's pause still holds)
    leave.set()
    thread.join(5)
    assert gc.isenabled()


def test_the_rules_do_not_load_the_table_reader():
    script = ("import sys\n"
              "from gateway.ecm.rules import EncounterRules\n"
              "import gateway.ecm.pipelined\n"
              "EncounterRules().check([])\n"
              "print('gateway.tabular' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "False"
