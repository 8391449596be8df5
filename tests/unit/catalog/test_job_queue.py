"""The persistent job queue: one claimer per job, leases, recovery after a dead worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.actions.job_kinds import JOB_KINDS, AlertJobPayload, RetryLater
from recoverctl.catalog import Catalog
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog import tables as t
from recoverctl.config import Config, parse_config
from recoverctl.errors import RecoverctlError
from recoverctl.service.worker import Worker
from tests.fixtures.net import wait_until


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def test_each_job_is_claimed_by_exactly_one_of_many_threads(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        ids = {jobq.enqueue(conn, "notify", {"n": i}) for i in range(40)}
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def claimer(name: str) -> None:
        start.wait()
        while (job := jobq.claim(catalog, name, ["notify"], lease=30)) is not None:
            with lock:
                claimed.append((name, job.id))

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Every job claimed once: no job twice, none lost, whichever threads won the races.
    assert sorted(j for _, j in claimed) == sorted(ids)


def test_active_key_allows_one_queued_job_per_target(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        first = jobq.enqueue(conn, "rollback", {}, target="web")
    with pytest.raises(sa.exc.IntegrityError), catalog.begin() as conn:
        jobq.enqueue(conn, "rollback", {}, target="web")
    job = jobq.claim(catalog, "w", ["rollback"], lease=30)
    assert job is not None and job.id == first
    assert jobq.finish(catalog, first, "w", "succeeded", result={"ok": True})
    with catalog.begin() as conn:
        assert jobq.active_job(conn, "rollback", "web") is None
        jobq.enqueue(conn, "rollback", {}, target="web")


def test_expired_lease_requeues_resumable_jobs_and_abandons_the_rest(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        once = jobq.enqueue(conn, "notify", {}, max_attempts=1)
        twice = jobq.enqueue(conn, "rollback", {"target": "web"}, max_attempts=2)
    assert jobq.claim(catalog, "dead", ["notify", "rollback"], lease=0.01).id == once
    assert jobq.claim(catalog, "dead", ["notify", "rollback"], lease=0.01).id == twice
    changed: dict[int, jobq.Job] = {}
    wait_until(lambda: changed.update({j.id: j for j in jobq.recover_expired(catalog)}) or len(changed) == 2)
    assert changed[once].state == "abandoned"
    assert changed[twice].state == "queued" and changed[twice].payload["resume"] is True
    # The dead worker can no longer record an outcome for a job it lost.
    assert not jobq.finish(catalog, once, "dead", "succeeded")
    again = jobq.claim(catalog, "alive", ["rollback"], lease=30)
    assert again.id == twice and again.attempts == 2


def test_job_retried_later_keeps_its_key_and_is_not_claimed_before_its_time(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        job_id = jobq.enqueue(conn, "rollback", {"target": "web"}, target="web", max_attempts=4)
    assert jobq.claim(catalog, "w", ["rollback"], lease=30) is not None
    assert not jobq.retry_later(catalog, job_id, "other", 0, result={}, error="x")  # not its lease
    assert jobq.retry_later(catalog, job_id, "w", 3600, result={"error": {}}, error="engine down")
    assert jobq.claim(catalog, "w", ["rollback"], lease=30) is None  # not before its time
    # Still the active job of its target: a new alert is absorbed by it, the cap counts it once.
    with pytest.raises(sa.exc.IntegrityError), catalog.begin() as conn:
        jobq.enqueue(conn, "rollback", {}, target="web")
    with catalog.begin() as conn:
        active = jobq.active_job(conn, "rollback", "web")
        assert active is not None and active.state == "queued" and active.error == "engine down"
        conn.execute(t.jobs.update().values(not_before=time.time() - 1))  # its time has come
    again = jobq.claim(catalog, "w", ["rollback"], lease=30)
    assert again is not None and again.id == job_id and again.attempts == 2
    assert again.payload == {"target": "web", "resume": True}


def test_worker_retries_a_job_asking_for_it_until_its_attempts_run_out(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    resumed: list[bool] = []

    def engine_down(cfg: Config, catalog: Catalog, payload: AlertJobPayload) -> dict[str, Any]:
        resumed.append(payload.resume)
        raise RetryLater(RecoverctlError("Docker engine at 'x' is unreachable"), 0.0)

    monkeypatch.setitem(JOB_KINDS, "rollback", engine_down)
    with catalog.begin() as conn:
        job_id = jobq.enqueue(conn, "rollback", {"target": "web"}, target="web", max_attempts=3)
    done = Worker(parse_config({}, env={}), catalog).run_until_idle()
    assert [j["state"] for j in done] == ["queued", "queued", "failed"]
    assert {j["id"] for j in done} == {job_id}
    assert resumed == [False, True, True]
    job = jobq.get_job(catalog, job_id)
    assert job is not None and (job.state, job.attempts) == ("failed", 3)
    assert job.error == "Docker engine at 'x' is unreachable" and job.dedup_key is None
