"""The catalog's one lease implementation, on webhook jobs and scheduled occurrences, on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog, leases
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog import tables as t
from tests.fixtures.postgres import PgCluster

# The columns each kind of job needs besides the lease itself.
REQUIRED: dict[str, Callable[[int], dict[str, Any]]] = {
    "queue": lambda i: {"kind": "notify", "payload": {}, "attempts": 1, "max_attempts": 1, "created_at": 0.0},
    "occurrences": lambda i: {
        "kind": "schedule",
        "payload": {},
        "attempts": 1,
        "max_attempts": 1,
        "created_at": 0.0,
        "schedule": "nightly",
        "due_at": float(i),
    },
}


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        pg: PgCluster = request.getfixturevalue("pg")
        pg.psql("create database recoverctl")
        url = pg.url("recoverctl")
    c = Catalog(url)
    yield c
    c.close()


def held_row(catalog: Catalog, pool: leases.Pool, owner: str, lease: float, i: int = 0) -> int:
    values = {**REQUIRED[pool.name](i), **leases.held_values(owner, lease, time.time())}
    with catalog.begin() as conn:
        return int(conn.execute(t.jobs.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


@pytest.mark.parametrize("pool", [leases.QUEUE, leases.OCCURRENCES], ids=["queue", "occurrences"])
def test_only_the_holder_renews_or_releases_and_an_expired_lease_is_reclaimed_once(
    catalog: Catalog, pool: leases.Pool
) -> None:
    # A held row of the other pool, expired too: this pool's reclaimer leaves it alone.
    other = held_row(
        catalog, leases.OCCURRENCES if pool is leases.QUEUE else leases.QUEUE, "z", lease=-1, i=1
    )
    row_id = held_row(catalog, pool, "a", lease=60)
    assert not leases.renew(catalog, row_id, "b", 60)
    assert leases.renew(catalog, row_id, "a", 60)
    with catalog.begin() as conn:
        assert not leases.release(conn, row_id, "b", {"state": "succeeded"})
    # A live lease is not reclaimed.
    assert leases.reclaim_expired(catalog, pool, lambda row, now: {"state": "abandoned"}) == []

    # The holder stalls past its lease; two processes notice at once, one of them reclaims it.
    assert leases.renew(catalog, row_id, "a", -1)
    reclaimed: list[Any] = []
    start = threading.Barrier(2)

    def reclaim() -> None:
        start.wait()
        reclaimed.extend(leases.reclaim_expired(catalog, pool, lambda row, now: {"state": "abandoned"}))

    threads = [threading.Thread(target=reclaim) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert [(row.id, values) for row, values in reclaimed] == [(row_id, {"state": "abandoned"})]
    # The old holder has lost the row: it can neither renew nor finish it.
    assert not leases.renew(catalog, row_id, "a", 60)
    with catalog.begin() as conn:
        assert not leases.release(conn, row_id, "a", {"state": "succeeded"})
        assert conn.execute(sa.select(t.jobs.c.state).where(t.jobs.c.id == row_id)).scalar() == "abandoned"
        assert conn.execute(sa.select(t.jobs.c.state).where(t.jobs.c.id == other)).scalar() == "running"


def test_jobs_and_occurrences_are_each_claimed_once_by_racing_holders(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        ids = {jobq.enqueue(conn, "notify", {"n": i}) for i in range(12)}
    claimed: dict[str, list[int]] = {}
    won: list[tuple[str, str]] = []
    start = threading.Barrier(3)

    def holder(name: str) -> None:
        start.wait()
        claimed[name] = []
        while (job := jobq.claim(catalog, name, ["notify"], lease=30)) is not None:
            claimed[name].append(job.id)
        # Different schedules, so no claim is skipped as overlapping another's live run.
        for n in range(6):
            if jobq.claim_occurrence(catalog, f"s{n}", 1000.0, name, 30).state == "claimed":
                won.append((name, f"s{n}"))

    threads = [threading.Thread(target=holder, args=(f"h{i}",)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    every = [i for got in claimed.values() for i in got]
    assert sorted(every) == sorted(ids), "every job claimed, none twice"
    assert sorted(schedule for _, schedule in won) == [f"s{n}" for n in range(6)], (
        "each occurrence claimed once"
    )


def test_heartbeat_is_one_row_per_process_kept_current(catalog: Catalog) -> None:
    name = leases.holder_id("worker")
    assert name.startswith("worker:") and name.endswith(f":{os.getpid()}")
    leases.heartbeat(catalog, name, "worker", {"state": "starting"})
    leases.heartbeat(catalog, name, "worker", {"state": "running"})
    with catalog.begin() as conn:
        beats = conn.execute(sa.select(t.heartbeats)).all()
    assert [(b.name, b.role, b.details) for b in beats] == [(name, "worker", {"state": "running"})]
    assert leases.heartbeats(catalog, "worker") == [
        leases.Heartbeat(name, "worker", beats[0].at, {"state": "running"})
    ]
