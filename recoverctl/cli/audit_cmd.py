"""`recoverctl audit [--since DURATION|TIME] [--kind K] [--limit N] [--json]`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from recoverctl.actions.audit import AuditLog, entry_json, read_audit_log
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.config import parse_duration


class SinceType(click.ParamType):
    """A duration back from now (7d, 12h) or a time (2026-12-01, 2026-12-01T08:00, UTC unless it
    names a zone); converted to Unix seconds."""

    name = "DURATION|TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return time.time() - parse_duration(value)
        except ValueError:
            pass
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is neither a duration (7d, 12h) nor a time (2026-12-01T08:00)", param, ctx)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(log: AuditLog) -> str:
    if not log.entries:
        return (
            "no audit entries"
            + (" of that kind" if log.kind else "")
            + (" in that period" if log.since else "")
        )
    rows = [("TIME (UTC)", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAILS")]
    for e in log.entries:
        details = json.dumps(e.details, sort_keys=True, default=str) if e.details else ""
        rows.append((_when(e.at), e.actor, e.action, e.target or "-", e.outcome, details[:120]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)), r[5]]).rstrip() for r in rows
    )


@click.command("audit")
@click.option(
    "--since", type=SinceType(), default=None, help="Only entries in the last DURATION or since TIME."
)
@click.option(
    "--kind", default=None, metavar="ACTION", help="Only this action and those under it (rollback)."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N entries.")
@json_option
@pass_app
def audit_cmd(app: App, since: float | None, kind: str | None, limit: int | None) -> None:
    """Show the audit log: every sensitive action (restores, rollbacks, deploys, key changes,
    prunes, unlocks), who did it, to what, and how it ended. Oldest first; --json prints one JSON
    object per line.

    \b
    Example:
      recoverctl audit --since 7d --kind rollback
      recoverctl audit --since 2026-12-01 --json | jq 'select(.outcome == "failed")'
    """
    log = read_audit_log(app.catalog, since=since, kind=kind, limit=limit)
    if app.json:
        for entry in log.entries:
            click.echo(json.dumps(entry_json(entry), default=str))
        return
    click.echo(_table(log))


COMMANDS = [audit_cmd]
