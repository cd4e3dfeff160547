from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpora" / "x12-stupidedi"
sys.path.insert(0, str(ROOT / "bench"))


QUEUE_THREADS = ("gateway-worker-", "gateway-sweeper", "gateway-runs-ended")


@pytest.fixture(autouse=True)
def _no_leaks():
    """What a test opens ends with it: the stores it made are closed as an app closes its own
    at shutdown (their pooled SQLite connections and write-lock files: without this the suite
    held over 1,024 descriptors; an in-memory database is kept, closing it would lose it), the
    logging the command line configured (a handler on this test's captured stderr, closed
    once the test ends) is put back, and a test leaving a queue's worker threads running
    fails (they would go on processing, and logging, into later tests)."""
    import logging
    import threading

    from gateway.api.app import _close_store
    from gateway.api.fhir import _FhirThreads
    from gateway.pipeline.store import Store

    before = set(threading.enumerate())
    loggers = [logging.getLogger(), logging.getLogger("gateway")]
    kept = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    made: list[Store] = []  # (`made` and `pools`: what the test's apps opened)
    init = Store.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    Store.__init__ = tracked
    pools: list[_FhirThreads] = []
    pool_init = _FhirThreads.__init__

    def tracked_pool(self):
        pool_init(self)
        pools.append(self)

    _FhirThreads.__init__ = tracked_pool  # an app's FHIR threads (a test may never shut it)
    try:
        yield
    finally:
        Store.__init__ = init
        _FhirThreads.__init__ = pool_init
        for pool in pools:
            pool.shutdown()
        for lg, handlers, level, propagate in kept:
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
        for store in made:  # (as an app does at shutdown: an in-memory one is kept)
            _close_store(store)
    running = [t for t in threading.enumerate() if t not in before and t.is_alive()
               and t.name.startswith(QUEUE_THREADS)]
    for thread in running:  # stop() joins them; one that just got the signal ends soon
        thread.join(timeout=5)
    running = [t.name for t in running if t.is_alive()]
    assert not running, f"the test left a queue's threads running: {running} (stop the queue)"


@pytest.fixture(autouse=True)
def _isolated_var(_no_leaks, tmp_path, monkeypatch):
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


@pytest.fixture
def pg_registry(pg_url):
    """A registry on the throwaway PostgreSQL of :func:`pg_url` (nothing to empty after the
    test: the cluster goes with it), its engine's connections closed first."""
    from gateway.registry.store import Registry

    registry = Registry(pg_url)
    yield registry
    registry.engine.dispose()


def renumber(payload: bytes, number: int) -> bytes:
    """An interchange of ecm-mixed.x12 (ISA13 000000501, GS06 501) under new control numbers:
    ISA13/IEA02 and GS06/GE02 both ``number``. A different interchange must not reuse a
    sender's ISA13 (TA1 025) nor its GS06 (999): see gateway.pipeline.controls."""
    return payload.replace(b"000000501", b"%09d" % number).replace(
        b"*1400*501*X*", b"*1400*%d*X*" % number).replace(b"GE*7*501", b"GE*7*%d" % number)
