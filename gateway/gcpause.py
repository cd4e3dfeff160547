"""The cyclic garbage collector paused while a large batch of objects is built (one home for
the pause, shared by the table reader, the invoice converter and the ECM rules).

A module of its own, with nothing but the standard library: the ECM rules' worker process
(gateway/ecm/pipelined.py) loads it in the caller before the fork, and importing it from
``gateway.tabular`` (its home before) cost a one-shot command line ≈ 23 ms of imports on the
caller's side before the worker could start (``python -X importtime``)."""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextmanager
def collector_paused():
    """Keep the cyclic garbage collector from re-scanning the growing list of kept rows (it
    makes a 100k-row read two to three times slower). Nested and concurrent reads share one
    pause; the collector's previous state comes back when the last one ends."""
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()
