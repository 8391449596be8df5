"""Weekly and monthly business reports: drills' RTO/RPO trends, deploys, rollbacks, targets missed,
sent by email through the runbook's default info route."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import yaml

from recoverctl.actions.summary import EXTRA_SECTIONS, period_start
from recoverctl.actions.summary_trends import direction
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from recoverctl.scheduler.defaults import DEFAULT_SCHEDULE_YAML
from tests.conftest import Cli

DAY = 86400.0


def _seed(catalog: Catalog, now: float) -> None:
    drill = {"name": "weekly", "source": "main", "rto_target_s": 3600, "rpo_target_s": 600}
    # Five weekly drills, oldest first: RTO falls (improving), RPO rises past its target (worsening).
    runs = [(35, 3000, 200), (28, 2400, 300), (21, 1800, 400), (14, 1200, 500), (2, 600, 900)]
    with catalog.begin() as conn:
        for days_ago, rto, rpo in runs:
            conn.execute(
                t.drills.insert().values(
                    started_at=now - days_ago * DAY, verdict="pass", rto_s=rto, rpo_s=rpo, **drill
                )
            )
        conn.execute(
            t.drills.insert().values(
                name="files",
                source="docs",
                started_at=now - 3 * DAY,
                verdict="fail",
                reason="checksum mismatch",
            )
        )
        for days_ago, version, status in [(20, "1.4", "good"), (3, "1.5", "failed"), (2, "1.5.1", "live")]:
            conn.execute(
                t.releases.insert().values(
                    service="web", version=version, status=status, created_at=now - days_ago * DAY
                )
            )
        conn.execute(
            t.rollbacks.insert().values(
                service="web",
                schema_mode="keep",
                state="succeeded",
                reason="HighErrorRate",
                started_at=now - 3 * DAY,
            )
        )


def _mail() -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "security": "none",
        "from": "r@example.test",
        "to": ["boss@example.test"],
    }


def test_monthly_report_has_trends_changes_and_targets_missed(cli: Cli, smtp_factory: Any) -> None:
    smtp = smtp_factory()
    cli.write_config(
        {
            "sources": {"main": {"type": "postgres"}, "docs": {"type": "files", "paths": ["/srv/docs"]}},
            "notifications": {
                "channels": {"mail": {**_mail(), "port": smtp.port}}
            },  # no routes: the runbook's
        }
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    _seed(catalog, time.time())
    catalog.close()

    out = cli("--json", "summary", "monthly", check=0).json()
    (main,) = [x for x in out["drill_trends"] if x["name"] == "weekly"]
    assert main["rto_s"] == [2400, 1800, 1200, 600] and main["baseline_rto_s"] == 3000
    assert (main["rto_direction"], main["rpo_direction"]) == ("improving", "worsening")
    (docs,) = [x for x in out["drill_trends"] if x["name"] == "files"]
    assert docs["rto_direction"] == "first measurement"
    misses = {(m["what"], m["subject"]) for m in out["targets_missed"]}
    assert ("drill RPO", "weekly [main]") in misses and ("drill failed", "files [docs]") in misses
    assert ("RPO exposure", "main") in misses  # never backed up
    assert ("drill RTO", "weekly [main]") not in misses
    assert [d["version"] for d in out["deploys"]] == ["1.4", "1.5", "1.5.1"]
    assert out["extra_sections"] == []

    text = cli("summary", "monthly", check=0).stdout
    assert "weekly [main]: RTO (50m00s) → 40m00s → 30m00s → 20m00s → 10m00s (improving); RPO" in text
    assert "(worsening)" in text
    assert "3 deploy(s), 1 failed; 1 rollback(s), 1 succeeded" in text
    assert "drill RPO weekly [main] at" in text and ": 15m00s over target 10m00s" in text
    assert "Incidents\n  - no incidents in this period" in text

    weekly = cli("--json", "summary", "weekly", check=0).json()
    (main_week,) = [x for x in weekly["drill_trends"] if x["name"] == "weekly"]
    assert main_week["rto_s"] == [600] and main_week["baseline_rto_s"] == 1200
    daily = cli("--json", "summary", "daily", check=0).json()
    assert daily["drill_trends"] == [] and daily["targets_missed"] == []

    sent = cli("--json", "summary", "monthly", "--send", check=0).json()
    assert [(d["channel"], d["status"]) for d in sent["deliveries"]] == [("mail", "sent")]
    (msg,) = smtp.messages
    assert msg.message["Subject"].startswith("[INFO] summary.monthly")
    assert "Targets missed" in msg.message.get_body(("plain",)).get_content()
    html = msg.message.get_body(("html",)).get_content()
    assert "<h3 style='color:#b00020'>Targets missed</h3>" in html


def test_periods_and_direction() -> None:
    def at(s: str) -> float:
        return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()

    assert period_start("monthly", at("2026-12-01T08:00")) == at("2026-11-01T08:00")
    assert period_start("monthly", at("2026-03-31T08:00")) == at("2026-02-28T08:00")
    assert period_start("monthly", at("2026-01-15T00:00")) == at("2025-12-15T00:00")
    assert period_start("weekly", at("2026-12-08T00:00")) == at("2026-12-01T00:00")
    assert direction([100, 95]) == "steady" and direction([None, 100]) == "first measurement"
    assert direction([100, None, 50]) == "improving" and direction([50, 80]) == "worsening"
    assert EXTRA_SECTIONS == ()


def test_default_schedule_sends_weekly_and_monthly_reports() -> None:
    default = yaml.safe_load(DEFAULT_SCHEDULE_YAML)
    jobs = {s["name"]: (s["cron"], s["job"]) for s in default["schedules"]}
    assert jobs["weekly-summary"] == ("0 8 * * 1", "summary weekly --send")
    assert jobs["monthly-summary"] == ("0 8 1 * *", "summary monthly --send")
    parse_config(default, env={})


def test_weekly_report_counts_incidents_with_time_to_acknowledge_and_to_recover(cli: Cli) -> None:
    cli.write_config({"sources": {"main": {"type": "postgres"}}})
    now = time.time()
    week = now - 3 * DAY
    incidents = [  # (opened, acknowledged, resolved)
        (now - 40 * DAY, now - 40 * DAY + 60, now - 39 * DAY),  # before the week: not counted
        (now - 10 * DAY, now - 10 * DAY + 1200, now - 2 * DAY),  # resolved in it, after 8 days
        (week, week + 600, week + 7200),  # acknowledged in 10 min, recovered in 2 h
        (now - DAY, None, None),  # still open
    ]
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    with catalog.begin() as conn:
        for opened, acked, resolved in incidents:
            conn.execute(
                t.incidents.insert().values(
                    opened_at=opened,
                    state="resolved" if resolved else "open",
                    severity="critical",
                    kind="alert",
                    title=f"HighErrorRate on web ({opened:.0f})",
                    subject="web",
                    subject_type="service",
                    acknowledged_at=acked,
                    resolved_at=resolved,
                    escalation_level=1,
                    details={},
                )
            )
    catalog.close()

    out = cli("--json", "summary", "weekly", check=0).json()["incidents"]
    assert (out["opened"], out["resolved"]) == (2, 2)
    assert out["mean_time_to_acknowledge_s"] == 600
    assert round(out["mean_time_to_recover_s"]) == round((7200 + 8 * DAY) / 2)
    assert [(i["id"], i["state"]) for i in out["still_open"]] == [(4, "open")]
    text = cli("summary", "weekly", check=0).stdout
    assert "2 opened, 2 resolved; mean time to acknowledge 10m00s, mean time to recover 4d01h" in text
    assert "#4 still open (critical) since" in text
    assert cli("--json", "summary", "daily", check=0).json()["incidents"] is None
