"""The envelope profiles (``profiles/envelopes/<name>.yaml``: ISA/GS values and the 1000A/B
parties for one receiving partner), read as data. :func:`gateway.x12.writer.envelope_settings`
turns a profile into its typed settings; the SNIP rule packs only need a profile's receiver id,
which they read here without loading the settings model (pydantic: start-up time)."""

from __future__ import annotations

from gateway import yamlio
from gateway.paths import PROFILES


class UnknownProfile(ValueError):
    """No envelope profile of that name."""


def envelope_profile_data(name: str) -> dict:
    """The profile called ``name`` as its YAML mapping; :class:`UnknownProfile` when there is
    none (the message lists the profiles there are)."""
    folder = PROFILES / "envelopes"
    path = folder / f"{name}.yaml"
    if "/" in name or "\\" in name or not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise UnknownProfile(f"no envelope profile {name!r}; known: {', '.join(known)}")
    return yamlio.load_file(path)
