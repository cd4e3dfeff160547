"""The store side of FHIR versions and SMART, on SQLite and PostgreSQL: an update's version row
is written with its submission only while the version it replaces is the latest (racing
updates: one wins, the other gets VersionConflict and stores nothing); a client assertion's
jti is accepted once, across Store objects (processes); access tokens expire."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from gateway.pipeline.store import Store, VersionConflict, fhir_versions, submissions


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    else:
        yield request.getfixturevalue("pg_url")


def version(number: int, status: str = "accepted") -> dict:
    return {"resource_type": "Task", "resource_id": "abc-0", "version": number,
            "status": status, "content": lambda now: f'{{"at": "{now.isoformat()}"}}'.encode()}


def counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(submissions)).scalar(),
                conn.execute(select(func.count()).select_from(fhir_versions)).scalar())


def test_racing_updates_one_wins_and_the_other_stores_nothing(url):
    stores = [Store(url) for _ in range(4)]
    results: list = []

    def update(store: Store, n: int) -> None:
        try:
            results.append(store.receive(partner="harbor", channel="api", kind="fhir",
                                         filename="Task.json", payload=b'{"n": %d}' % n,
                                         version=version(2)))
        except VersionConflict as conflict:
            results.append(conflict)

    threads = [threading.Thread(target=update, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if not isinstance(r, VersionConflict)]
    lost = [r for r in results if isinstance(r, VersionConflict)]
    assert (len(won), len(lost)) == (1, 3)
    assert {c.latest for c in lost} == {2}
    assert counts(stores[0]) == (1, 1)
    [row] = stores[0].resource_versions("Task", "abc-0")
    assert (row["version"], row["status"], row["submission_id"]) == (2, "accepted",
                                                                     won[0].submission_id)
    assert stores[0].version_of_submission(won[0].submission_id)["version"] == 2
    assert stores[0].latest_versions("harbor", "Task")["abc-0"]["version"] == 2
    # the same payload again is still an update (never answered as a duplicate)
    third = stores[0].receive(partner="harbor", channel="api", kind="fhir",
                              filename="Task.json", payload=b'{"n": 0}', version=version(3))
    assert not third.duplicate
    for s in stores:
        s.close()


def test_a_jti_is_accepted_once_across_stores_until_it_expires(url):
    first, second = Store(url), Store(url)
    now = datetime.now(UTC)
    assert first.remember_assertion("harbor-ehr", "j-1", now + timedelta(minutes=5), now)
    assert not second.remember_assertion("harbor-ehr", "j-1", now + timedelta(minutes=5), now)
    assert second.remember_assertion("other-ehr", "j-1", now + timedelta(minutes=5), now)
    later = now + timedelta(minutes=6)  # expired: forgotten (exp bounds the assertion anyway)
    assert second.remember_assertion("harbor-ehr", "j-1", later + timedelta(minutes=5), later)
    first.add_access_token("f" * 64, "harbor", "system/Task.cru", now + timedelta(seconds=300),
                           now)
    assert second.access_token("f" * 64, now)["scope"] == "system/Task.cru"
    assert second.access_token("f" * 64, now + timedelta(seconds=301)) is None
    first.close()
    second.close()
