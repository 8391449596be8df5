"""Policy matching, conditions, and the decision rules of alert intake against a SQLite catalog."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.actions.alert_intake import AlertIn, IncidentMemory, intake, intake_batch, list_decisions
from recoverctl.alerting.policy import check_condition, lookup_value, match_policy, parse_number
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import Condition, parse_config


def _cfg(policies: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config(
        {
            "policies": policies,
            "services": {
                "web": {"target": "docker", "image": "demo-web", "container": "web"},
            },
            **extra,
        },
        env={},
    )


STARTED = datetime.now(UTC) - timedelta(minutes=5)


def _alert(name: str = "HighErrorRate", service: str = "web", fp: str = "f1", **kw: Any) -> AlertIn:
    started = kw.pop("started", STARTED)
    return AlertIn(
        source=kw.pop("source", "alertmanager"),
        status=kw.pop("status", "firing"),
        labels={"alertname": name, "service": service, **kw.pop("labels", {})},
        annotations=kw.pop("annotations", {}),
        values=kw.pop("values", {}),
        fingerprint=fp,
        starts_at=started.isoformat(),
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def test_parse_number_handles_percent_durations_and_plain_numbers() -> None:
    assert parse_number("7%") == pytest.approx(0.07)
    assert parse_number("0.07") == pytest.approx(0.07)
    assert parse_number("2m") == 120.0
    assert parse_number(3) == 3.0
    with pytest.raises(ValueError):
        parse_number("lots")


def test_lookup_prefers_grafana_values_then_annotations_then_labels() -> None:
    a = _alert(values={"B": 0.2}, annotations={"B": "0.1", "error_rate": "6%"}, labels={"lat": "12"})
    assert lookup_value(a, "B") == 0.2
    assert lookup_value(a, "annotation:B") == 0.1
    assert lookup_value(a, "error_rate") == pytest.approx(0.06)
    assert lookup_value(a, "label:lat") == 12.0
    assert lookup_value(a, "missing") is None


def test_conditions_absolute_and_relative_to_baseline() -> None:
    a = _alert(annotations={"error_rate": "0.06", "latency": "3", "baseline": "1.5"})
    assert check_condition(a, Condition(value_from="error_rate", op=">", threshold=0.05))[0]
    ok, why = check_condition(a, Condition(value_from="error_rate", op=">", threshold=0.1))
    assert not ok and "not >" in why
    # 3 s against a 1.5 s baseline is 100 % worse: above a 50 % degradation threshold.
    assert check_condition(a, Condition(value_from="latency", baseline_from="baseline", threshold=0.5))[0]


def test_first_matching_policy_wins() -> None:
    cfg = _cfg(
        [
            {"name": "a", "match": {"alertname": "X"}, "action": "notify"},
            {"name": "b", "match": {"alertname": "HighErrorRate"}, "action": "notify"},
            {"name": "c", "match": {}, "action": "notify"},
        ]
    )
    assert match_policy(cfg.policies, _alert()).name == "b"
    assert match_policy(cfg.policies, _alert(name="Other")).name == "c"


def test_repeat_resolved_and_unknown_service(catalog: Catalog) -> None:
    cfg = _cfg(
        [
            {
                "name": "n",
                "match": {"alertname": "HighErrorRate"},
                "action": "notify",
                "service_from_label": "service",
                "cooldown": 0,
            }
        ]
    )
    first = intake(cfg, catalog, [_alert()])[0]
    assert first.decision == "acted" and first.job_id
    again = intake(cfg, catalog, [_alert()])[0]
    assert again.decision == "deduplicated" and again.job_id == first.job_id
    resolved = intake(cfg, catalog, [_alert(status="resolved")])[0]
    assert resolved.decision == "ignored" and "resolved" in resolved.reason
    rb = _cfg(
        [
            {
                "name": "r",
                "match": {"alertname": "HighErrorRate"},
                "action": "rollback",
                "service_from_label": "service",
            }
        ]
    )
    unknown = intake(rb, catalog, [_alert(service="nope", fp="f9")])[0]
    assert unknown.decision == "ignored" and "unknown service 'nope'" in unknown.reason
    with catalog.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar_one() == 1


def test_active_job_absorbs_then_cooldown_then_cap_escalates(catalog: Catalog) -> None:
    cfg = _cfg(
        [
            {
                "name": "n",
                "match": {"alertname": "HighErrorRate"},
                "action": "notify",
                "service_from_label": "service",
                "cooldown": "10m",
                "max_actions": {"count": 1, "window": "1h"},
            }
        ]
    )
    acted = intake(cfg, catalog, [_alert(fp="a")])[0]
    absorbed = intake(cfg, catalog, [_alert(fp="b")])[0]
    assert absorbed.decision == "deduplicated" and "already queued" in absorbed.reason
    assert absorbed.job_id == acted.job_id
    # The job finishes: the next incident on the service hits the cooldown.
    with catalog.begin() as conn:
        conn.execute(t.jobs.update().values(state="succeeded", dedup_key=None))
    cooled = intake(cfg, catalog, [_alert(fp="c")])[0]
    assert cooled.decision == "suppressed" and cooled.reason.startswith("cooldown")
    no_cooldown = cfg.model_copy(deep=True)
    no_cooldown.policies[0].cooldown = 0
    capped = intake(no_cooldown, catalog, [_alert(fp="d")])[0]
    assert capped.decision == "suppressed" and capped.reason.startswith("cap: 1 automatic notify")
    with catalog.begin() as conn:
        events = conn.execute(sa.select(t.events.c.kind, t.events.c.severity)).all()
    assert [(e.kind, e.severity) for e in events] == [("alert.escalated", "critical")]
    # The escalated incident is handed to a human: its repeats deduplicate.
    assert intake(no_cooldown, catalog, [_alert(fp="d")])[0].decision == "deduplicated"


def test_min_firing_conditions_and_dry_run(catalog: Catalog) -> None:
    cfg = _cfg(
        [
            {
                "name": "n",
                "match": {"alertname": "HighErrorRate"},
                "action": "notify",
                "service_from_label": "service",
                "min_firing": "2m",
                "mode": "dry-run",
                "conditions": [{"value_from": "error_rate", "op": ">", "threshold": 0.05}],
            }
        ]
    )
    young = intake(cfg, catalog, [_alert(started=datetime.now(UTC) - timedelta(seconds=10))])[0]
    assert young.decision == "suppressed" and "min_firing" in young.reason
    low = intake(cfg, catalog, [_alert(fp="x", annotations={"error_rate": "0.01"})])[0]
    assert low.decision == "suppressed" and "conditions not met" in low.reason
    dry = intake(cfg, catalog, [_alert(fp="y", annotations={"error_rate": "0.2"})])[0]
    assert dry.decision == "suppressed" and dry.reason == "dry-run: would notify 'web'"
    assert dry.job_id is None
    assert (
        intake(cfg, catalog, [_alert(fp="y", annotations={"error_rate": "0.2"})])[0].decision
        == "deduplicated"
    )


def _release(conn: Any, version: str, status: str, age: float) -> None:
    conn.execute(
        t.releases.insert().values(
            service="web", version=version, status=status, created_at=time.time() - age
        )
    )


def test_rollback_release_rules(catalog: Catalog) -> None:
    cfg = _cfg(
        [
            {
                "name": "r",
                "match": {"alertname": "HighErrorRate"},
                "action": "rollback",
                "service_from_label": "service",
                "max_release_age": "1h",
                "mode": "dry-run",
            }
        ]
    )
    with catalog.begin() as conn:
        _release(conn, "v1", "failed", 7200)
        _release(conn, "v2", "live", 600)
    onto_failed = intake(cfg, catalog, [_alert(fp="1")])[0]
    assert onto_failed.decision == "suppressed"
    assert "no earlier good release" in onto_failed.reason and "v1" in onto_failed.reason
    with catalog.begin() as conn:
        conn.execute(t.releases.update().where(t.releases.c.version == "v1").values(status="good"))
        conn.execute(
            t.releases.update().where(t.releases.c.version == "v2").values(created_at=time.time() - 7200)
        )
    old = intake(cfg, catalog, [_alert(fp="2")])[0]
    assert old.decision == "suppressed" and "max_release_age" in old.reason
    with catalog.begin() as conn:
        conn.execute(
            t.releases.update().where(t.releases.c.version == "v2").values(created_at=time.time() - 60)
        )
    ok = intake(cfg, catalog, [_alert(fp="3")])[0]
    assert ok.reason == "dry-run: would rollback 'web'"
    assert [d.decision for d in list_decisions(catalog, limit=3)] == ["suppressed"] * 3


def test_minimal_issue_config_validates() -> None:
    import yaml

    cfg = parse_config(
        yaml.safe_load(
            """
serve:
  auth:
    bearer_token_file: /path/to/token
policies:
  - name: rollback-on-errors
    match:
      alertname: HighErrorRate
    action: rollback
    service_from_label: service
    cooldown: 10m
    max_actions: {count: 1, window: 1h}
"""
        ),
        env={},
    )
    assert cfg.policies[0].cooldown == 600 and cfg.policies[0].max_actions.window == 3600


def test_serve_dry_run_overrides_acting_policies(catalog: Catalog) -> None:
    cfg = _cfg([{"name": "n", "match": {"alertname": "HighErrorRate"}, "action": "notify", "service": "web"}])
    d = intake(cfg, catalog, [_alert(fp="dry")], force_dry_run=True)[0]
    assert (d.decision, d.reason, d.job_id) == ("suppressed", "dry-run: would notify 'web'", None)
    with catalog.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar_one() == 0


def test_batch_with_memory_decides_like_the_catalog(catalog: Catalog) -> None:
    cfg = _cfg(
        [
            {
                "name": "n",
                "match": {"alertname": "HighErrorRate"},
                "action": "notify",
                "service_from_label": "service",
                "cooldown": "10m",
            }
        ]
    )
    memory = IncidentMemory(size=2)
    # One batch: the second request repeats the first's incident before anything is written.
    first, repeat, other = intake_batch(
        cfg, catalog, [[_alert(fp="a")], [_alert(fp="a")], [_alert(service="api", fp="b")]], memory=memory
    )
    assert first[0].decision == "acted"
    assert repeat[0].decision == "deduplicated" and repeat[0].job_id == first[0].job_id
    assert other[0].decision == "acted" and other[0].job_id != first[0].job_id
    assert [r[0].id for r in (first, repeat, other)] == sorted(r[0].id for r in (first, repeat, other))
    held = memory.get("alertmanager:a:" + STARTED.isoformat())
    assert held is not None and held.job_id == first[0].job_id
    # A remembered repeat gets the answer the catalog would give, and is stored like one.
    (from_memory,) = intake_batch(cfg, catalog, [[_alert(fp="a")]], memory=memory)[0]
    (from_catalog,) = intake(cfg, catalog, [_alert(fp="a")])
    for key in ("decision", "reason", "job_id", "service", "policy"):
        assert getattr(from_memory, key) == getattr(from_catalog, key)
    assert len(list_decisions(catalog, decision="deduplicated")) == 3
    # Bounded: the oldest incident is forgotten, and the catalog still deduplicates it.
    intake_batch(cfg, catalog, [[_alert(service="db", fp="c")]], memory=memory)
    assert memory.get("alertmanager:a:" + STARTED.isoformat()) is None
    assert intake_batch(cfg, catalog, [[_alert(fp="a")]], memory=memory)[0][0].decision == "deduplicated"


def test_memory_learns_nothing_from_a_failed_batch(catalog: Catalog) -> None:
    cfg = _cfg([{"name": "n", "match": {"alertname": "HighErrorRate"}, "action": "notify", "cooldown": 0}])
    memory = IncidentMemory()
    broken = Catalog(f"sqlite:///{catalog.url.split('///', 1)[1]}")
    with broken.begin() as conn:
        conn.execute(
            sa.text("CREATE TRIGGER no_alerts BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'no'); END")
        )
    with pytest.raises(sa.exc.IntegrityError):
        intake_batch(cfg, catalog, [[_alert(fp="x")]], memory=memory)
    assert memory.get("alertmanager:x:" + STARTED.isoformat()) is None
    with broken.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER no_alerts"))
        assert conn.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar_one() == 0
    broken.close()
    assert intake_batch(cfg, catalog, [[_alert(fp="x")]], memory=memory)[0][0].decision == "acted"


def test_an_escalated_alert_is_on_its_incident_timeline(catalog: Catalog) -> None:
    from recoverctl.catalog import incidents

    policy = {
        "name": "n",
        "match": {"alertname": "HighErrorRate"},
        "action": "notify",
        "service_from_label": "service",
        "cooldown": 0,
        "max_actions": {"count": 1, "window": "1h"},
    }
    cfg = _cfg([policy])
    intake(cfg, catalog, [_alert(fp="a")])
    incidents.resolve(catalog, 1, "alice", "handled")  # the next alert meets no open incident
    with catalog.begin() as conn:
        conn.execute(t.jobs.update().values(state="succeeded", dedup_key=None))
    capped = intake(cfg, catalog, [_alert(fp="b")])[0]
    assert capped.reason.startswith("cap: 1 automatic notify")
    # The alert.escalated event opened the incident through the same path as every event, and
    # the alert made it its own: it resolves with its alerts.
    (inc, _) = incidents.list_incidents(catalog)
    assert (inc.id, inc.kind, inc.subject, inc.state) == (2, "alert", "web", "open")
    kinds = [e.kind for e in incidents.recorded_entries(catalog, inc.id)]
    assert kinds == ["alert.escalated", "alert.firing", "decision"]
    with catalog.begin() as conn:
        (event_id,) = conn.execute(
            sa.select(t.events.c.id).where(t.events.c.kind == "alert.escalated")
        ).scalars()
    assert incidents.recorded_entries(catalog, inc.id)[0].event_id == event_id
    intake(cfg, catalog, [_alert(fp="b", status="resolved")])
    (progress,) = incidents.progress_of_active(catalog)
    assert progress.incident.id == inc.id and progress.healthy
