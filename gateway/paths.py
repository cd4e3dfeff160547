"""Where the data folders live, from the settings (:mod:`gateway.settings`): ``profiles/`` and
``mappings/`` sit beside the package in the checkout; the ``home`` setting
(``ECM_GATEWAY_HOME``) points elsewhere (e.g. in a container image)."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import early

HOME = Path(early("home"))
PROFILES = HOME / "profiles"
MAPPINGS = HOME / "mappings"


def var_dir() -> Path:
    """The embedded store's folder (``./var`` unless the ``var`` setting says otherwise)."""
    return Path(early("var"))
