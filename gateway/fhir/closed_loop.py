"""The closed loop of an ECM referral Task, as data (``mappings/fhir/task-closed-loop.yaml``):
which status may follow which. Pure: no store, no routing."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from gateway.paths import MAPPINGS

LOOP_FILE = "fhir/task-closed-loop.yaml"


@dataclass(frozen=True)
class ClosedLoop:
    initial: tuple[str, ...]
    transitions: dict[str, tuple[str, ...]]
    decided: tuple[str, ...]

    def allowed(self, current: str) -> tuple[str, ...]:
        """The statuses a Task in ``current`` may move to (keeping it is always allowed)."""
        return self.transitions.get(current, ())

    def refusal(self, current: str | None, new: str | None) -> tuple[str, ...] | None:
        """None when ``current`` -> ``new`` is allowed, else the statuses allowed from
        ``current`` (empty: ``current`` is final)."""
        if current == new or current is None:
            return None
        allowed = self.allowed(current)
        return None if new in allowed else allowed


@lru_cache(maxsize=4)
def closed_loop(path: Path | None = None) -> ClosedLoop:
    data = yaml.safe_load(Path(path or MAPPINGS / LOOP_FILE).read_text(encoding="utf-8"))
    transitions = {str(k): tuple(str(s) for s in v or ())
                   for k, v in (data.get("transitions") or {}).items()}
    return ClosedLoop(initial=tuple(data.get("initial") or ()), transitions=transitions,
                      decided=tuple(data.get("decided") or ()))
