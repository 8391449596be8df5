"""`scheduler.runner.run_job`, the one way a claimed job of any kind runs: its lease is renewed
while the executor works, its outcome recorded (or queued again), and its events emitted only
when the outcome is recorded; and the drill flow each Source asks for."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from recoverctl.scheduler.runner import Held, JobEvent, Outcome, run_job
from tests.fixtures.net import wait_until


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def _claimed(catalog: Catalog, lease: float = 30.0, max_attempts: int = 1) -> jobq.Job:
    with catalog.begin() as conn:
        jobq.enqueue(conn, "notify", {"target": "web"}, max_attempts=max_attempts)
    job = jobq.claim(catalog, "me", ["notify"], lease=lease)
    assert job is not None
    return job


def _event_kinds(catalog: Catalog) -> list[str]:
    with catalog.begin() as conn:
        return [str(k) for k in conn.execute(sa.select(t.events.c.kind).order_by(t.events.c.id)).scalars()]


EVENT = JobEvent("job.failed", "warning", "web", "it failed", {"n": 1}, "dedup")


def test_outcome_is_recorded_and_its_events_emitted(catalog: Catalog) -> None:
    job = _claimed(catalog)
    outcome = Outcome("failed", {"exit_code": 3}, "exited 3", events=(EVENT,))
    got = run_job(
        parse_config({}, env={}), catalog, Held(job.id, "me", "job"), lambda lost: outcome, lease=30
    )
    assert got is outcome
    row = jobq.get_job(catalog, job.id)
    assert row is not None and (row.state, row.result, row.error) == ("failed", {"exit_code": 3}, "exited 3")
    assert row.lease_expires_at is None and row.finished_at is not None
    assert _event_kinds(catalog) == ["job.failed"]


def test_lease_is_renewed_while_the_executor_works(catalog: Catalog) -> None:
    job = _claimed(catalog, lease=0.3)

    def expiry() -> float:
        row = jobq.get_job(catalog, job.id)
        assert row is not None and row.lease_expires_at is not None
        return row.lease_expires_at

    def execute(lost: threading.Event) -> Outcome:
        first = expiry()
        wait_until(lambda: expiry() > first + 0.25, what="a renewal of the lease")
        # Nobody can reclaim a job whose lease is kept.
        assert jobq.recover_expired(catalog) == []
        return Outcome("succeeded", {"ok": True})

    run_job(parse_config({}, env={}), catalog, Held(job.id, "me", "job"), execute, lease=0.3)
    row = jobq.get_job(catalog, job.id)
    assert row is not None and row.state == "succeeded"


def test_a_job_whose_lease_was_taken_records_nothing(catalog: Catalog) -> None:
    job = _claimed(catalog)

    def execute(lost: threading.Event) -> Outcome:
        with catalog.begin() as conn:  # another process declared it abandoned meanwhile
            conn.execute(t.jobs.update().where(t.jobs.c.id == job.id).values(state="abandoned"))
        return Outcome("succeeded", {"ok": True}, events=(EVENT,))

    run_job(parse_config({}, env={}), catalog, Held(job.id, "me", "job"), execute, lease=30)
    row = jobq.get_job(catalog, job.id)
    assert row is not None and row.state == "abandoned" and row.result is None
    assert _event_kinds(catalog) == []


def test_an_outcome_asking_for_a_retry_queues_the_job_again(catalog: Catalog) -> None:
    job = _claimed(catalog, max_attempts=2)
    outcome = Outcome("queued", {"error": {}}, "engine down", retry_in=3600)
    run_job(parse_config({}, env={}), catalog, Held(job.id, "me", "job"), lambda lost: outcome, lease=30)
    row = jobq.get_job(catalog, job.id)
    assert row is not None and (row.state, row.error) == ("queued", "engine down")
    assert row.payload["resume"] is True and row.not_before is not None
    assert jobq.claim(catalog, "me", ["notify"], lease=30) is None  # not before its time


def test_each_source_names_the_drill_flow_that_proves_its_restores() -> None:
    from recoverctl.actions.drill import FLOWS
    from recoverctl.drill import engine, snapshot_drill
    from recoverctl.sources.files import FilesSource
    from recoverctl.sources.postgres.cluster import PostgresCluster
    from recoverctl.sources.volume import VolumeSource

    assert FLOWS[PostgresCluster.drill_flow] is engine.execute
    assert FLOWS[FilesSource("docs").drill_flow] is snapshot_drill.execute
    assert FLOWS[VolumeSource("data", "data").drill_flow] is snapshot_drill.execute
