"""Job executors: a rollback job requeued after a worker died never rolls back twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recoverctl.actions.job_kinds import run_job
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from recoverctl.errors import RecoverctlError


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def _rollback_row(catalog: Catalog, state: str, job_id: int) -> int:
    with catalog.begin() as conn:
        return int(
            conn.execute(
                t.rollbacks.insert().values(
                    service="web",
                    schema_mode="keep",
                    state=state,
                    reason=f"alert HighErrorRate on 'web' (policy p) [job {job_id}]",
                    started_at=time.time(),
                )
            ).inserted_primary_key[0]
        )


def test_resumed_job_whose_rollback_already_finished_does_not_roll_back_again(catalog: Catalog) -> None:
    rb = _rollback_row(catalog, "succeeded", job_id=7)
    cfg = parse_config({}, env={})  # no services: a new rollback would fail loudly
    out = run_job(cfg, catalog, "rollback", {"target": "web", "resume": True, "job_id": 7})
    assert out == {"result": "succeeded", "rollback_id": rb, "finished_before_restart": True}


def test_resumed_job_whose_rollback_failed_reports_it(catalog: Catalog) -> None:
    _rollback_row(catalog, "failed", job_id=8)
    _rollback_row(catalog, "succeeded", job_id=80)  # another job's rollback is not this one's
    with pytest.raises(RecoverctlError, match="ended failed before the worker died"):
        run_job(parse_config({}, env={}), catalog, "rollback", {"target": "web", "resume": True, "job_id": 8})


def test_notify_job_emits_one_event(catalog: Catalog) -> None:
    out = run_job(
        parse_config({}, env={}), catalog, "notify", {"target": "web", "incident_key": "k", "job_id": 1}
    )
    assert out["event_id"] > 0
    with pytest.raises(RecoverctlError, match="not known"):
        run_job(parse_config({}, env={}), catalog, "teleport", {})
