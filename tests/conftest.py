from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpora" / "x12-stupidedi"
sys.path.insert(0, str(ROOT / "bench"))


@pytest.fixture(autouse=True)
def _isolated_var(tmp_path, monkeypatch):
    """Every test gets its own embedded store folder."""
    monkeypatch.setenv("ECM_GATEWAY_VAR", str(tmp_path / "var"))


@pytest.fixture
def clean_837() -> bytes:
    return (FIXTURES / "837p" / "ecm-clean.x12").read_bytes()


def segments(data: bytes) -> list[str]:
    return data.decode().split("~\n")


def join(parts: list[str]) -> bytes:
    return "~\n".join(parts).encode()
