"""Reading the YAML data files (rule packs, profiles, layouts, mappings): libyaml's C parser
when PyYAML was built with it (about ten times faster than the pure-Python one; the rule
catalogue alone takes 70 ms to parse in Python, a quarter of the command line's start-up),
else the pure-Python safe loader. Same results either way: the safe schema, no Python tags."""

from __future__ import annotations

import yaml

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

YAMLError = yaml.YAMLError


def safe_load(text: str | bytes):
    """``yaml.safe_load(text)``, with the C parser when there is one."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
