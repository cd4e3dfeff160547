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


def demo_gateway(folder: Path, registries: bool = False):
    """The API app with the demo partners (fresh tokens) and a SQLite store in ``folder`` (and,
    with ``registries``, the demo plan's MIF, roster and history); returns the app and each
    partner's ``Authorization`` header."""
    from gateway.api.app import create_app
    from gateway.pipeline.partners import issue_demo_tokens
    from gateway.pipeline.registries import load_demo_registries

    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               folder / "partners.yaml")
    app = create_app(store=f"sqlite:///{folder / 'gateway.sqlite'}",
                     partners=folder / "partners.yaml")
    if registries:
        load_demo_registries(app.state.store, app.state.partners)
    return app, {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()}


# the security suite's servers, both deployment modes (tests/security/)
from security_world import served  # noqa: E402,F401


@pytest.fixture
def pg_url():
    """A throwaway PostgreSQL on loopback (tests/servers.py); skips, saying why, where its
    binaries or a driver are missing."""
    import servers

    try:
        with servers.postgres() as url:
            yield url
    except servers.Unavailable as exc:
        pytest.skip(str(exc))
