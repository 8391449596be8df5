"""`recoverctl audit`: the audit log as a table and as JSON lines, filtered by time and kind."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.conftest import Cli


def _seed(cli: Cli) -> None:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    ten_days = time.time() - 10 * 86400
    with catalog.begin() as conn:  # the log is append-only: old entries are inserted as such
        conn.execute(
            t.audit_log.insert(),
            [
                dict(
                    at=ten_days,
                    actor="alice@host",
                    action="key.add",
                    target="s3://b/repo",
                    outcome="succeeded",
                    details={"key": "k2"},
                ),
                dict(
                    at=ten_days + 86400,
                    actor="bob@host",
                    action="restore.postgres",
                    target="main",
                    outcome="succeeded",
                    details={"target": "/srv/pg"},
                ),
            ],
        )
    catalog.audit("rollback.start", "web", "running", {"rollback_id": 3}, who="alertmanager:errors")
    catalog.audit("rollback", "web", "failed", {"error": "health check failed"}, who="alertmanager:errors")
    catalog.close()


def test_audit_reads_the_log_as_a_table_and_json_lines(cli: Cli) -> None:
    _seed(cli)
    lines = cli("audit", "--json", check=0).stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["action"] for e in entries] == ["key.add", "restore.postgres", "rollback.start", "rollback"]
    assert entries[3] == {
        "id": entries[3]["id"],
        "at": entries[3]["at"],
        "actor": "alertmanager:errors",
        "action": "rollback",
        "target": "web",
        "outcome": "failed",
        "details": {"error": "health check failed"},
    }

    recent = [
        json.loads(x)["action"] for x in cli("audit", "--since", "7d", "--json", check=0).stdout.splitlines()
    ]
    assert recent == ["rollback.start", "rollback"]
    nine_days_ago = datetime.fromtimestamp(time.time() - 9.5 * 86400, UTC).strftime("%Y-%m-%dT%H:%M")
    since_time = cli("--json", "audit", "--since", nine_days_ago, check=0).stdout.splitlines()
    assert [json.loads(x)["action"] for x in since_time] == ["restore.postgres", "rollback.start", "rollback"]
    by_kind = cli("audit", "--kind", "rollback", "--json", check=0).stdout.splitlines()
    assert [json.loads(x)["action"] for x in by_kind] == ["rollback.start", "rollback"]
    newest = cli("audit", "--limit", "1", "--json", check=0).stdout.splitlines()
    assert [json.loads(x)["action"] for x in newest] == ["rollback"]

    table = cli("audit", "--kind", "rollback", check=0).stdout.splitlines()
    assert table[0].split() == ["TIME", "(UTC)", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAILS"]
    assert "alertmanager:errors" in table[2] and " rollback " in table[2] and " failed " in table[2]
    assert '{"error": "health check failed"}' in table[2]
    assert cli("audit", "--kind", "nothing", check=0).stdout.strip() == "no audit entries of that kind"
    assert "neither a duration" in cli("audit", "--since", "last tuesday", check=2).stderr


def test_audit_on_an_empty_catalog(cli: Cli) -> None:
    assert cli("audit", check=0).stdout.strip() == "no audit entries"
    assert cli("audit", "--json", check=0).stdout == ""
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    with catalog.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.audit_log)).scalar() == 0
    catalog.close()
