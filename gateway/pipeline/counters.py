"""The command line's persistent control-number counters (ISA13, GS06): a small SQLite file
``counters.sqlite`` in :func:`var_dir` (the command line has no store).

The server does not use this file: its counters are in the store's database
(:meth:`gateway.pipeline.store.Store.next_numbers`), shared by every API process and worker, on
any machine. A new store adopts the values of this file once, so an upgraded server does not
reuse numbers it handed out before.

Each call to :func:`next_numbers` takes a block atomically (``BEGIN IMMEDIATE``), so concurrent
processes on the same folder never hand out the same number. ISA13 wraps within 1..999999999,
the same way as the store's counters.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from gateway.paths import var_dir

MAX_CONTROL = 999_999_999  # the same as gateway.pipeline.store.MAX_CONTROL


def _connect(folder: Path) -> sqlite3.Connection:
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(folder / "counters.sqlite", timeout=30, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")
    return db


def next_numbers(name: str, count: int = 1, folder: Path | None = None) -> list[int]:
    """``count`` consecutive numbers from the counter ``name`` (starting at 1)."""
    with closing(_connect(folder or var_dir())) as db:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        current = row[0] if row else 0
        numbers = [(current + i) % MAX_CONTROL + 1 for i in range(count)]
        db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
                   "DO UPDATE SET value = excluded.value", (name, numbers[-1]))
        db.execute("COMMIT")
    return numbers
