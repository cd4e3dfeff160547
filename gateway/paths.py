"""Where the data folders live. ``profiles/`` and ``mappings/`` sit beside the package in the
checkout; ``ECM_GATEWAY_HOME`` points elsewhere (e.g. in a container image)."""

from __future__ import annotations

import os
from pathlib import Path

HOME = Path(os.environ.get("ECM_GATEWAY_HOME", Path(__file__).resolve().parent.parent))
PROFILES = HOME / "profiles"
MAPPINGS = HOME / "mappings"


def var_dir() -> Path:
    """The embedded store's folder (``./var`` unless ``ECM_GATEWAY_VAR`` says otherwise)."""
    return Path(os.environ.get("ECM_GATEWAY_VAR", "var"))
