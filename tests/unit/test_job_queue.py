"""The persistent job queue: one claimer per job, leases, recovery after a dead worker."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import jobs as jobq
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
                claimed.append((name, job["id"]))

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
    assert job is not None and job["id"] == first
    assert jobq.finish(catalog, first, "w", "succeeded", result={"ok": True})
    with catalog.begin() as conn:
        assert jobq.active_job(conn, "rollback", "web") is None
        jobq.enqueue(conn, "rollback", {}, target="web")


def test_expired_lease_requeues_resumable_jobs_and_abandons_the_rest(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        once = jobq.enqueue(conn, "notify", {}, max_attempts=1)
        twice = jobq.enqueue(conn, "rollback", {"target": "web"}, max_attempts=2)
    assert jobq.claim(catalog, "dead", ["notify", "rollback"], lease=0.01)["id"] == once
    assert jobq.claim(catalog, "dead", ["notify", "rollback"], lease=0.01)["id"] == twice
    changed: dict[int, dict] = {}
    wait_until(
        lambda: changed.update({j["id"]: j for j in jobq.recover_expired(catalog)}) or len(changed) == 2
    )
    assert changed[once]["state"] == "abandoned"
    assert changed[twice]["state"] == "queued" and changed[twice]["payload"]["resume"] is True
    # The dead worker can no longer record an outcome for a job it lost.
    assert not jobq.finish(catalog, once, "dead", "succeeded")
    again = jobq.claim(catalog, "alive", ["rollback"], lease=30)
    assert again["id"] == twice and again["attempts"] == 2
