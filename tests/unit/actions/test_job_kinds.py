"""Job executors: a rollback job requeued after a worker died, or after a step failed, never rolls
back twice: it finishes its own rollback or refuses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from recoverctl.actions.job_kinds import AlertJobPayload, execute_kind
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from recoverctl.errors import NotFoundError, RecoverctlError


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def _rollback_row(catalog: Catalog, state: str, job_id: int | None, to_status: str = "good") -> int:
    with catalog.begin() as conn:
        to_release = conn.execute(
            t.releases.insert().values(
                service="web", version=f"v{job_id}", status=to_status, created_at=time.time() - 60
            )
        ).inserted_primary_key[0]
        return int(
            conn.execute(
                t.rollbacks.insert().values(
                    service="web",
                    schema_mode="keep",
                    state=state,
                    to_release=to_release,
                    reason="by hand" if job_id is None else f"alert on 'web' (policy p) [job {job_id}]",
                    started_at=time.time(),
                )
            ).inserted_primary_key[0]
        )


def test_resumed_job_whose_rollback_already_finished_does_not_roll_back_again(catalog: Catalog) -> None:
    rb = _rollback_row(catalog, "succeeded", job_id=7)
    cfg = parse_config({}, env={})  # no services: a new rollback would fail loudly
    out = execute_kind(cfg, catalog, "rollback", {"target": "web", "resume": True, "job_id": 7})
    assert out == {"result": "succeeded", "rollback_id": rb, "finished_before_restart": True}


def test_job_never_resumes_onto_a_release_that_failed_its_health_check(catalog: Catalog) -> None:
    _rollback_row(catalog, "failed", job_id=8, to_status="failed")
    _rollback_row(catalog, "succeeded", job_id=80)  # another job's rollback is not this one's
    with pytest.raises(RecoverctlError, match="never goes onto a version that failed"):
        execute_kind(parse_config({}, env={}), catalog, "rollback", {"target": "web", "job_id": 8})


def test_job_resumes_only_its_own_rollback_and_never_starts_a_second(catalog: Catalog) -> None:
    """Its rollback failed at a step, then someone rolled back by hand: the job's next attempt
    refuses (the refusals of `rollback --resume`) rather than resuming or starting another."""
    own = _rollback_row(catalog, "failed", job_id=9)
    by_hand = _rollback_row(catalog, "failed", job_id=None)
    newest = f"rollback #{own} of 'web' is not its newest \\(#{by_hand} failed"
    with pytest.raises(NotFoundError, match=newest):
        execute_kind(
            parse_config({}, env={}), catalog, "rollback", {"target": "web", "resume": True, "job_id": 9}
        )
    with catalog.begin() as conn:
        states = conn.execute(sa.select(t.rollbacks.c.state).order_by(t.rollbacks.c.id)).scalars().all()
    assert states == ["failed", "failed"]


def test_notify_job_emits_one_event(catalog: Catalog) -> None:
    out = execute_kind(
        parse_config({}, env={}), catalog, "notify", {"target": "web", "incident_key": "k", "job_id": 1}
    )
    assert out["event_id"] > 0
    with pytest.raises(RecoverctlError, match="not known"):
        execute_kind(parse_config({}, env={}), catalog, "teleport", {})


def test_alert_payload_round_trips_and_a_malformed_one_fails_the_job(catalog: Catalog) -> None:
    stored = AlertJobPayload(
        action="notify",
        target="web",
        policy="p",
        severity="critical",
        source="alertmanager",
        alertname="HighErrorRate",
        fingerprint="f",
        starts_at="2026-01-01T00:00:00Z",
        incident_key="k",
        labels={"service": "web"},
        summary="5xx",
    ).to_json()
    # The intake stores the twelve keys; an attempt's resume and job id are not among them.
    assert list(stored) == [
        *("origin", "action", "target", "policy", "severity", "source", "alertname", "fingerprint"),
        *("starts_at", "incident_key", "labels", "summary"),
    ]
    # As a worker reads it back, with what the queue adds.
    again = AlertJobPayload.from_json({**stored, "resume": True, "job_id": 4})
    assert again.resume and again.job_id == 4 and again.labels == {"service": "web"}
    assert again.to_json() == {**stored, "resume": True, "job_id": 4}
    with pytest.raises(RecoverctlError, match="malformed job payload"):
        execute_kind(parse_config({}, env={}), catalog, "notify", {"severity": "critical"})
    with pytest.raises(RecoverctlError, match="malformed job payload"):
        execute_kind(
            parse_config({}, env={}), catalog, "notify", {"target": "web", "labels": ["not", "a", "map"]}
        )
