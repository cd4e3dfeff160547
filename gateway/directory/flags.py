"""ECM / Community Supports flagging in the 274, as data (``mappings/directory/ecm-cs-flags.yaml``).

The state's convention is not published; the file names the segment that marks an ECM provider,
a CS provider and each Community Support a provider delivers. Writer and reader share this one
definition, so changing the file changes both directions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from gateway.paths import MAPPINGS

FLAGS_FILE = MAPPINGS / "directory" / "ecm-cs-flags.yaml"
_SEGMENTS_BY_LOOP = {"2120EA": {"LQ"}, "2100EA": {"REF", "N2"}}


class FlagDefinitionError(ValueError):
    """The flag file itself is wrong (a configuration error)."""


@dataclass(frozen=True)
class Marker:
    loop: str
    elements: tuple[str, ...]  # segment id first

    @property
    def segment(self) -> str:
        return self.elements[0]

    def render(self, service: str = "") -> list[str]:
        return [e.replace("{service}", service) for e in self.elements]

    def match(self, fields: list[str]) -> str | None:
        """The ``{service}`` text (or "") when ``fields`` is this marker, else None."""
        if len(fields) != len(self.elements) or fields[0] != self.elements[0]:
            return None
        captured = ""
        for want, got in zip(self.elements[1:], fields[1:]):
            if "{service}" in want:
                head, _, tail = want.partition("{service}")
                if not (got.startswith(head) and got.endswith(tail)
                        and len(got) > len(head) + len(tail)):
                    return None
                captured = got[len(head):len(got) - len(tail)]
            elif want != got:
                return None
        return captured


@dataclass(frozen=True)
class Flags:
    ecm: Marker
    cs: Marker
    cs_service: Marker

    def markers(self) -> tuple[tuple[str, Marker], ...]:
        return (("ecm", self.ecm), ("cs", self.cs), ("cs_service", self.cs_service))


def _marker(name: str, raw: object, path: Path) -> Marker:
    if not isinstance(raw, dict) or set(raw) != {"loop", "segment"}:
        raise FlagDefinitionError(f"{path.name}: {name} needs exactly `loop` and `segment`")
    loop, segment = raw["loop"], raw["segment"]
    if loop not in _SEGMENTS_BY_LOOP:
        raise FlagDefinitionError(f"{path.name}: {name}.loop must be one of "
                                  f"{', '.join(_SEGMENTS_BY_LOOP)}")
    if not isinstance(segment, list) or len(segment) < 2 \
            or not all(isinstance(e, str) and e for e in segment):
        raise FlagDefinitionError(f"{path.name}: {name}.segment must list the segment id and "
                                  "at least one element value")
    if segment[0] not in _SEGMENTS_BY_LOOP[loop]:
        raise FlagDefinitionError(f"{path.name}: {name}: loop {loop} takes "
                                  f"{' or '.join(sorted(_SEGMENTS_BY_LOOP[loop]))}, "
                                  f"not {segment[0]}")
    if any(re.search(r"[~*:^]", e) for e in segment):
        raise FlagDefinitionError(f"{path.name}: {name}.segment holds an X12 delimiter")
    wants_service = name == "cs_service"
    if wants_service != any("{service}" in e for e in segment[1:]):
        raise FlagDefinitionError(f"{path.name}: {{service}} belongs in cs_service (only)")
    return Marker(loop, tuple(segment))


def load_flags(path: Path | None = None) -> Flags:
    path = Path(path or FLAGS_FILE)
    return _load(str(path), path.stat().st_mtime)


@lru_cache(maxsize=8)
def _load(path_text: str, _mtime: float) -> Flags:
    path = Path(path_text)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(raw) - {"ecm", "cs", "cs_service"}
    if unknown:
        raise FlagDefinitionError(f"{path.name}: unknown keys {', '.join(sorted(unknown))}")
    flags = Flags(**{name: _marker(name, raw.get(name), path)
                     for name in ("ecm", "cs", "cs_service")})
    n2 = [m for _, m in flags.markers() if m.loop == "2100EA" and m.segment == "N2"]
    if len(n2) > 1 or any(m.segment == "N2" for m in n2 if m is flags.cs_service):
        raise FlagDefinitionError(f"{path.name}: N2 can carry one flag only (one N2 per "
                                  "provider), and never the repeating cs_service")
    if len({m.elements for _, m in flags.markers()}) < 3:
        raise FlagDefinitionError(f"{path.name}: the three markers must differ")
    return flags
