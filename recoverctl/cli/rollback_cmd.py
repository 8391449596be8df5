"""`recoverctl rollback SERVICE`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.errors import RecoverctlError, UsageError
from recoverctl.units import human_duration, human_size

if TYPE_CHECKING:
    from recoverctl.actions.rollback_result import RollbackResult

# Kept here (not imported from the action) so `recoverctl --help` does not load alembic and docker.
SCHEMA_MODES = ("keep", "downgrade", "pitr")


def _plan_text(plan: dict[str, Any]) -> str:
    schema = plan["schema"]
    lines = [
        f"rollback plan for {plan['service']} on {plan['target']}:",
        f"  {plan['from_version']} -> {plan['to_version']}",
        f"  schema: {schema['mode']} (now {schema.get('current_revision') or '-'}, "
        f"target {schema.get('target_revision') or '-'})",
    ]
    if schema.get("restore_point"):
        lines.append(
            f"    restore point {schema['restore_point']} (LSN {schema['restore_lsn']}); "
            f"{human_size(schema['wal_bytes_after'])} of WAL written since will be lost"
        )
    for m in schema.get("migrations", []):
        lines.append(f"    downgrade {m['revision']} -> {m['down_revision']}: {m['doc'] or ''}")
    lines.append("  steps: " + " -> ".join(plan["steps"]))
    lines += [f"  WARNING: {w}" for w in plan["warnings"]]
    return "\n".join(lines)


def _result_text(r: RollbackResult) -> str:
    took = human_duration(r.duration_s)
    lines = [f"rollback of {r.service} {r.from_version} -> {r.to_version}: {r.result} in {took}"]
    lines += [f"  {s.name:<13} {s.outcome:<8} {human_duration(s.seconds)}" for s in r.steps]
    return "\n".join(lines)


@click.command("rollback")
@click.argument("service")
@click.option(
    "--to", "to_version", metavar="VERSION", help="Release to go back to (default: previous good one)."
)
@click.option(
    "--schema",
    type=click.Choice(SCHEMA_MODES),
    default="keep",
    show_default=True,
    help="keep the database, downgrade its schema (alembic), or pitr to the restore point.",
)
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--reason", metavar="TEXT", help="Why (recorded in the audit log and the notification).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a TTY).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted or failed rollback of SERVICE from the step it stopped at.",
)
@json_option
@pass_app
def rollback_command(
    app: App,
    service: str,
    to_version: str | None,
    schema: str,
    dry_run: bool,
    reason: str | None,
    yes: bool,
    resume: bool,
) -> None:
    """Roll SERVICE back to its previous good release (or --to VERSION).

    Shows the plan first (versions, schema revisions, data that a downgrade drops), checks
    the engine / every host and the target artifact before anything is stopped, then runs the
    persisted steps lock -> stop_current -> schema -> start_target -> verify -> notify -> record.
    An unreachable engine, host or catalog is retried within the service's retry.window; a
    step that still fails says where and in what state it left the service, and --resume
    continues from it. Exit 13 when the health check fails afterwards, 11 when another
    deploy/rollback runs.

    \b
    Example:
      recoverctl rollback web --dry-run
      recoverctl rollback web --yes --reason "error rate 7%" --json
      recoverctl rollback api --to 1.4.2 --schema downgrade --yes
      recoverctl rollback web --resume --yes
    """
    from recoverctl.actions.rollback import plan_rollback, rollback
    from recoverctl.actions.rollback_result import RollbackPlanned, RollbackResult

    cfg, catalog = app.config, app.catalog
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to roll back '{service}' without confirmation",
                hint="pass --yes (no TTY to ask on), or --dry-run to see the plan",
            )
        if not resume:
            plan = plan_rollback(cfg, catalog, service, to_version=to_version, schema=schema)
            click.echo(_plan_text(plan), err=True)
        if not click.confirm("proceed?", err=True):
            raise click.exceptions.Abort()
    try:
        result = rollback(
            cfg,
            catalog,
            service,
            to_version=to_version,
            schema=schema,
            dry_run=dry_run,
            reason=reason,
            resume=resume,
        )
    except RecoverctlError as e:
        summary = e.details.get("rollback")
        if isinstance(summary, dict):
            app.render(RollbackResult.from_json(summary), _result_text)
        raise
    if isinstance(result, RollbackPlanned):
        app.render(result, lambda r: _plan_text(r.plan))
    else:
        app.render(result, _result_text)


COMMANDS = [rollback_command]
