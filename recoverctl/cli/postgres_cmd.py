"""`recoverctl postgres setup|restore-point|status|check`."""

from __future__ import annotations

import time
from typing import Any

import click

from recoverctl.cli.context import App, pass_app


@click.group("postgres")
def postgres_group() -> None:
    """PostgreSQL sources: archiving setup, restore points, RPO status."""


@postgres_group.command("setup")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option("--apply", is_flag=True, help="Apply with ALTER SYSTEM and reload (default: only show).")
@click.option("--dry-run", is_flag=True, help="Show what --apply would change (the default without --apply).")
@pass_app
def setup(app: App, source: str | None, apply: bool, dry_run: bool) -> None:
    """Show (or apply) the settings PostgreSQL needs to archive WAL into the repository.

    wal_level and archive_mode only take effect after a restart; the output says when one is
    needed. The archive_command runs this recoverctl as the server's OS user, so that user must
    be able to read the config and the repository password file.

    \b
    Example:
      recoverctl postgres setup --source main
      sudo -u postgres recoverctl postgres setup --source main --apply
    """
    from recoverctl.actions.postgres_setup import postgres_setup

    result = postgres_setup(app.config, app.catalog, source=source, apply=apply and not dry_run)

    def text(d: dict[str, Any]) -> str:
        lines = []
        for s in d["settings"]:
            mark = "change" if s["change"] else "ok"
            lines.append(
                f"{mark:6}  {s['name']} = '{s['wanted']}'"
                + (f"   (now '{s['current']}')" if s["change"] else "")
            )
        if d["applied"]:
            lines.append("applied with ALTER SYSTEM and reloaded")
        elif d["changes"]:
            lines.append("run with --apply to change these (ALTER SYSTEM + reload)")
        if d["restart_needed"]:
            lines.append("a restart of PostgreSQL is needed for wal_level/archive_mode to take effect")
        return "\n".join(lines)

    app.render(result, text)


@postgres_group.command("restore-point")
@click.argument("name")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option("--dry-run", is_flag=True, help="Only say what would be created.")
@pass_app
def restore_point(app: App, name: str, source: str | None, dry_run: bool) -> None:
    """Create a named restore point (pg_create_restore_point) and record it in the catalog.

    `restore postgres --to-name NAME` recovers to exactly this point.

    \b
    Example:
      recoverctl postgres restore-point before-release-42
    """
    from recoverctl.actions.postgres_setup import create_restore_point

    if dry_run:
        src_name, _ = app.config.source(source, "postgres")
        app.render(
            {"source": src_name, "name": name, "dry_run": True},
            f"would create restore point '{name}' on {src_name}",
        )
        return
    result = create_restore_point(app.config, app.catalog, source=source, name=name)
    app.render(
        result,
        lambda d: f"restore point '{d['name']}' at {d['lsn']} (timeline {d['timeline']}) on {d['source']}",
    )


@postgres_group.command("status")
@click.option("--source", help="Only this postgres source.")
@pass_app
def status(app: App, source: str | None) -> None:
    """Show RPO exposure per postgres source: now minus the last archived WAL time, vs the tier target.

    \b
    Example:
      recoverctl postgres status --json
    """
    from recoverctl.actions.postgres_setup import postgres_status

    result = postgres_status(app.config, app.catalog, source=source)

    def text(d: dict[str, Any]) -> str:
        lines = []
        for s in d["sources"]:
            if s["exposure_s"] is None:
                lines.append(f"{s['source']}: no WAL archived yet (RPO target {s['rpo_target_s']:.0f}s)")
                continue
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s["last_archived_at"]))
            verdict = "within" if s["within_target"] else "OVER"
            lines.append(
                f"{s['source']} ({s['tier']}): last WAL {s['last_archived_segment']} at {when}, "
                f"exposure {s['exposure_s']:.0f}s, {verdict} RPO target {s['rpo_target_s']:.0f}s"
            )
        return "\n".join(lines) or "no postgres sources configured"

    app.render(result, text)


COMMANDS = [postgres_group]
