"""`recoverctl postgres setup|restore-point|status|check`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option, repo_option
from recoverctl.units import human_duration, human_size

if TYPE_CHECKING:
    from recoverctl.actions.backup_postgres import (
        LogicalBackupSummary,
        PhysicalBackupPlan,
        PhysicalBackupSummary,
    )
    from recoverctl.actions.postgres_setup import ArchivingSetup, RpoStatus
    from recoverctl.actions.restore_postgres import PhysicalRestoreResult
    from recoverctl.sources.postgres.recovery import RecoveryTarget


@click.group("postgres", cls=SuggestingGroup)
def postgres_group() -> None:
    """PostgreSQL sources: archiving setup, restore points, RPO status."""


@postgres_group.command("setup")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option("--apply", is_flag=True, help="Apply with ALTER SYSTEM and reload (default: only show).")
@click.option("--dry-run", is_flag=True, help="Show what --apply would change (the default without --apply).")
@json_option
@pass_app
def setup(app: App, source: str | None, apply: bool, dry_run: bool) -> None:
    """Show (or apply) the settings PostgreSQL needs to archive WAL into the repository.

    wal_level and archive_mode only take effect after a restart; the output says when one is
    needed. The archive_command runs this recoverctl as the server's OS user, so that user must
    be able to read the config and the repository password file.

    archive_command carries only paths (any role can SHOW it): secrets stay in the files it
    names. Exit 2, naming the key, when the server's archiver could not load what this shell
    sees: a ${VAR} the server lacks, a passphrase only in RECOVERCTL_PASSWORD, a catalog URL
    with a password only in RECOVERCTL_CATALOG.

    \b
    Example:
      recoverctl postgres setup --source main
      sudo -u postgres recoverctl postgres setup --source main --apply
    """
    from recoverctl.actions.postgres_setup import postgres_setup

    result = postgres_setup(app.config, app.catalog, source=source, apply=apply and not dry_run)

    def text(r: ArchivingSetup) -> str:
        lines = []
        for s in r.settings:
            mark = "change" if s["change"] else "ok"
            lines.append(
                f"{mark:6}  {s['name']} = '{s['wanted']}'"
                + (f"   (now '{s['current']}')" if s["change"] else "")
            )
            if s.get("why"):
                lines.append(f"        why: {s['why']}")
        if r.applied:
            lines.append("applied with ALTER SYSTEM and reloaded")
        elif r.changes:
            lines.append("run with --apply to change these (ALTER SYSTEM + reload)")
        if r.restart_needed:
            lines.append("a restart of PostgreSQL is needed for wal_level/archive_mode to take effect")
        lines += [f"warning: {w}" for w in r.warnings]
        return "\n".join(lines)

    app.render(result, text)


@postgres_group.command("restore-point")
@click.argument("name")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option("--dry-run", is_flag=True, help="Only say what would be created.")
@json_option
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
        lambda r: f"restore point '{r.name}' at {r.lsn} (timeline {r.timeline}) on {r.source}",
    )


@postgres_group.command("check")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the segment.")
@json_option
@pass_app
def check(app: App, source: str | None, timeout: float) -> None:
    """Force a WAL switch and confirm the segment reaches the repository (exit 0, or 13 on timeout).

    \b
    Example:
      recoverctl postgres check --source main --timeout 30
    """
    from recoverctl.actions.postgres_setup import postgres_check
    from recoverctl.cli.passphrase import passphrase

    result = postgres_check(app.config, app.catalog, passphrase(app), source=source, timeout=timeout)
    app.render(
        result,
        lambda r: f"{r.source}: segment {r.segment} archived after {human_duration(r.archived_after_s)}",
    )


@postgres_group.command("status")
@click.option("--source", help="Only this postgres source.")
@json_option
@pass_app
def status(app: App, source: str | None) -> None:
    """Show RPO exposure per postgres source: now minus the last archived WAL time, vs the tier target.

    \b
    Example:
      recoverctl postgres status --json
    """
    from recoverctl.actions.postgres_setup import postgres_status

    result = postgres_status(app.config, app.catalog, source=source)

    def text(r: RpoStatus) -> str:
        lines = []
        for s in r.sources:
            if s.exposure_s is None:
                lines.append(f"{s.source}: no WAL archived yet (RPO target {human_duration(s.rpo_target_s)})")
                continue
            verdict = "within" if s.within_target else "OVER"
            if s.last_archived_at is None:
                wal = "no WAL archived yet, from the newest backup"
            else:
                when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.last_archived_at))
                wal = f"last WAL {s.last_archived_segment} at {when}"
            lines.append(
                f"{s.source} ({s.tier}): {wal}, "
                f"exposure {human_duration(s.exposure_s)}, {verdict} RPO target "
                f"{human_duration(s.rpo_target_s)}"
            )
            if s.has_archive_timeout:
                bound = s.archive_bound_s
                lines.append(
                    f"  archive_timeout {s.archive_timeout_s}s: "
                    + (
                        f"guarantees loss <= {human_duration(bound)}"
                        if bound
                        else "off, nothing bounds the loss"
                    )
                )
            if s.streams and s.stream:
                st = s.stream
                lines.append(
                    f"  streaming: {human_duration(st['lag_seconds'])} / {human_size(st['lag_bytes'])} "
                    "behind the primary" + ("" if st["alive"] else " (receiver not reporting)")
                )
        return "\n".join(lines) or "no postgres sources configured"

    app.render(result, text)


# --- `backup postgres` and `restore postgres` -----------------------------------------------------


def _annotations(values: tuple[str, ...]) -> dict[str, str]:
    from recoverctl.cli.backup_cmd import parse_tags

    return parse_tags(values)


@click.command("postgres")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option(
    "--type", "backup_type", type=click.Choice(["full", "incremental"]), default="full", show_default=True,
    help="incremental reads only files changed since the newest backup, still a standalone snapshot.",
)  # fmt: skip
@click.option("--logical", is_flag=True, help="Stream pg_dump -Fc of one database instead.")
@click.option("--database", help="With --logical: the database to dump (default: the source's dbname).")
@click.option("--annotate", "annotations", multiple=True, metavar="K=V", help="Record K=V with the backup.")
@click.option("--dry-run", is_flag=True, help="Check the source and archiving settings; copy nothing.")
@json_option
@pass_app
def backup_postgres_cmd(
    app: App,
    source: str | None,
    backup_type: str,
    logical: bool,
    database: str | None,
    annotations: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Back up a running PostgreSQL cluster (physical, consistent, with its WAL) or one database (logical).

    The snapshot is written only after the backup's last WAL segment is in the repository.
    Pages failing checksum validation are named in the summary (exit 3). WAL archiving must be
    set up first (`recoverctl postgres setup --apply`), else exit 2 with the settings to add.

    \b
    Example:
      recoverctl backup postgres --type full --annotate reason=nightly
      recoverctl backup postgres --type incremental --json
      recoverctl backup postgres --logical --database app
    """
    from recoverctl.actions.backup_postgres import backup_postgres, backup_postgres_logical
    from recoverctl.cli.passphrase import passphrase

    if logical and dry_run:
        name, _ = app.config.source(source, "postgres")
        app.render({"source": name, "logical": True, "dry_run": True}, f"would dump {name}")
        return
    password = passphrase(app)
    # The catalog opens in a child process: the backup process never loads SQLAlchemy.
    with app.run_recorder() as recorder:
        progress = app.progress("backup postgres")
        try:
            if logical:
                logical_result = backup_postgres_logical(
                    app.config, recorder, password, source=source, database=database,
                    annotations=_annotations(annotations), progress=progress,
                )  # fmt: skip
            else:
                result = backup_postgres(
                    app.config, recorder, password, source=source, backup_type=backup_type,
                    annotations=_annotations(annotations), dry_run=dry_run, progress=progress,
                )  # fmt: skip
        finally:
            progress.close()
    if logical:
        app.render(logical_result, _logical_backup_text)
    else:
        app.render(result, _physical_backup_text)


def _logical_backup_text(r: LogicalBackupSummary) -> str:
    return (
        f"logical snapshot {str(r.snapshot_id)[:8]} of {r.source}/{r.database}: "
        f"{human_size(r.bytes)} in {human_duration(r.duration_s)}"
    )


def _physical_backup_text(r: PhysicalBackupSummary | PhysicalBackupPlan) -> str:
    from recoverctl.actions.backup_postgres import PhysicalBackupPlan

    standby = f" from standby {r.standby_host}" if r.standby_host else ""
    if isinstance(r, PhysicalBackupPlan):
        return f"would back up {r.source}{standby} ({r.data_dir}), type {r.type}"
    return (
        f"{r.type} backup {str(r.snapshot_id)[:8]} of {r.source}{standby}: "
        f"LSN {r.start_lsn} - {r.stop_lsn} "
        f"(timeline {r.timeline}, WAL {r.wal_range[0]}..{r.wal_range[1]}); files "
        f"{r.files_new} new, {r.files_changed} changed, {r.files_unmodified} unmodified; "
        f"read {human_size(r.bytes_read)}, added {human_size(r.bytes_added)} "
        f"in {human_duration(r.duration_s)}; "
        f"{r.pages_checked} pages checksum-validated"
    )


@click.command("postgres")
@click.argument("snapshot_ref", required=False, metavar="[SNAPSHOT]")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option(
    "--target-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory to create."
)
@click.option("--snapshot", help="Backup to start from (default: newest one before the target).")
@click.option("--to-time", help="Recover to this time (ISO 8601 or timestamptz text, with zone).")
@click.option("--to-lsn", help="Recover to this LSN (e.g. 0/3000060).")
@click.option("--to-name", help="Recover to this named restore point.")
@click.option("--to-xid", help="Recover to this transaction id.")
@click.option("--to-latest", is_flag=True, help="Recover to the end of the archive (default).")
@click.option("--to-immediate", is_flag=True, help="Stop as soon as the backup is consistent.")
@click.option("--target-action", type=click.Choice(["promote", "pause", "shutdown"]), default="promote",
              show_default=True, help="What the server does at the target.")  # fmt: skip
@click.option("--delta", is_flag=True, help="Reuse a non-empty target dir, keeping files that match.")
@click.option("--tablespace-map", "tablespace_maps", multiple=True, metavar="OID_OR_NAME=DIR",
              help="Restore this tablespace to DIR instead of its original one (repeatable).")  # fmt: skip
@click.option("--wal-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Put pg_wal in DIR (linked from the target, like initdb --waldir); "
              "default: a directory inside the target.")  # fmt: skip
@click.option("--start", is_flag=True, help="Start the restored server and wait for recovery to finish.")
@click.option("--port", type=int, help="With --start: the port for the restored server.")
@click.option("--os-user", help="OS user the restored server runs as (default: postgres when root).")
@click.option("--logical", is_flag=True, help="Restore a logical dump (SNAPSHOT) into --database.")
@click.option("--database", help="With --logical: the database to restore into.")
@click.option("--table", "tables", multiple=True, help="With --logical: only this table (repeatable).")
@click.option("--clean", is_flag=True, help="With --logical: drop objects before recreating them.")
@click.option("--dry-run", is_flag=True, help="Choose the snapshot and say what would be done.")
@json_option
@repo_option
@pass_app
def restore_postgres_cmd(
    app: App,
    snapshot_ref: str | None,
    source: str | None,
    target_dir: Path | None,
    snapshot: str | None,
    to_time: str | None,
    to_lsn: str | None,
    to_name: str | None,
    to_xid: str | None,
    to_latest: bool,
    to_immediate: bool,
    target_action: str,
    delta: bool,
    tablespace_maps: tuple[str, ...],
    wal_dir: Path | None,
    start: bool,
    port: int | None,
    os_user: str | None,
    logical: bool,
    database: str | None,
    tables: tuple[str, ...],
    clean: bool,
    dry_run: bool,
) -> None:
    """Restore a PostgreSQL backup: point-in-time (physical) or a logical dump.

    Physical: picks the newest backup consistent before the target, writes the files,
    backup_label, recovery.signal, restore_command (`recoverctl wal fetch`) and the target. With
    --start it starts the server on --port and waits until recovery ends, then reports the
    recovered LSN and last commit time. A WAL gap fails naming the missing segment.
    Tablespaces are restored to their original directories (which must be empty unless
    --delta), or elsewhere with --tablespace-map; pg_tblspc links and tablespace_map follow.
    pg_wal is a directory inside the target (also when the source's pg_wal is a link to another
    disk), or a link to --wal-dir; other symlinks pointing outside the data directory are not
    restored (listed as links_skipped).

    \b
    Example:
      recoverctl restore postgres --target-dir /srv/pg-restore --to-time '2026-11-27 01:53:20+00'
      recoverctl restore postgres --target-dir /tmp/pg --to-name before-release-42 --start --port 5499
      recoverctl restore postgres --target-dir /srv/pg2 --tablespace-map fast=/srv/pg2-fast --to-latest
      recoverctl restore postgres --logical latest --database app --table public.orders
    """
    from recoverctl.cli.passphrase import passphrase
    from recoverctl.errors import UsageError

    if logical:
        _restore_logical(app, source, snapshot_ref or snapshot or "latest", database, tables, clean, dry_run)
        return
    if snapshot_ref and not snapshot:
        snapshot = snapshot_ref
    if target_dir is None:
        raise UsageError("--target-dir is required", hint="name an empty directory to restore into")
    target = _recovery_target(to_time, to_lsn, to_name, to_xid, to_latest, to_immediate)
    if start and port is None:
        raise UsageError("--start needs --port", hint="pick a free port, e.g. --port 5499")
    remap = _tablespace_remap(tablespace_maps)
    wal = wal_dir.absolute() if wal_dir else None
    if dry_run:
        from recoverctl.actions.restore_postgres import plan_restore

        plan = plan_restore(
            app.config, app.catalog, passphrase(app), source=source, snapshot=snapshot, target=target,
            tablespace_map=remap, wal_dir=wal,
        )  # fmt: skip
        app.render(plan, lambda r: f"would restore backup {r.snapshot_id[:8]} and recover to {r.target}")
        return
    from recoverctl.actions.restore_postgres import restore_postgres

    result = restore_postgres(
        app.config, app.catalog, passphrase(app), source=source, target_dir=target_dir, snapshot=snapshot,
        target=target, target_action=target_action, delta=delta, start_port=port if start else None,
        os_user=os_user, tablespace_map=remap, wal_dir=wal,
    )  # fmt: skip
    app.render(result, lambda r: _physical_restore_text(r, start))


def _restore_logical(
    app: App,
    source: str | None,
    ref: str,
    database: str | None,
    tables: tuple[str, ...],
    clean: bool,
    dry_run: bool,
) -> None:
    from recoverctl.actions.restore_postgres import restore_postgres_logical
    from recoverctl.cli.passphrase import passphrase
    from recoverctl.errors import UsageError

    if not database:
        raise UsageError("--logical needs --database", hint="create it first with createdb if needed")
    if dry_run:
        app.render(
            {"snapshot": ref, "database": database, "dry_run": True},
            f"would restore {ref} into {database}",
        )
        return
    out = restore_postgres_logical(
        app.config, app.catalog, passphrase(app), source=source, snapshot=ref, database=database,
        tables=list(tables) or None, clean=clean,
    )  # fmt: skip
    app.render(
        out, lambda r: f"restored {r.snapshot_id[:8]} into database {r.database} ({human_size(r.bytes)})"
    )


def _recovery_target(
    to_time: str | None,
    to_lsn: str | None,
    to_name: str | None,
    to_xid: str | None,
    to_latest: bool,
    to_immediate: bool,
) -> RecoveryTarget:
    """Given the --to-* options, return the recovery target; raise UsageError for more than one."""
    from recoverctl.errors import UsageError
    from recoverctl.sources.postgres.recovery import RecoveryTarget

    options = {
        "time": to_time, "lsn": to_lsn, "name": to_name, "xid": to_xid,
        "latest": "yes" if to_latest else None, "immediate": "yes" if to_immediate else None,
    }  # fmt: skip
    chosen = [(k, v) for k, v in options.items() if v]
    if len(chosen) > 1:
        raise UsageError(
            "give at most one of --to-time/--to-lsn/--to-name/--to-xid/--to-latest/--to-immediate"
        )
    kind, value = chosen[0] if chosen else ("latest", None)
    return RecoveryTarget(kind, None if kind in ("latest", "immediate") else value)


def _tablespace_remap(items: tuple[str, ...]) -> dict[str, str]:
    """Given --tablespace-map OID_OR_NAME=DIR options, return {oid or name: absolute dir}."""
    from recoverctl.errors import UsageError

    remap: dict[str, str] = {}
    for item in items:
        key, sep, directory = item.partition("=")
        if not sep or not key or not directory:
            raise UsageError(
                f"--tablespace-map '{item}' is not OID_OR_NAME=DIR",
                hint="e.g. --tablespace-map fast=/srv/pg-fast",
            )
        remap[key] = str(Path(directory).absolute())
    return remap


def _physical_restore_text(r: PhysicalRestoreResult, started: bool) -> str:
    lines = [
        f"restored backup {r.snapshot_id[:8]} of {r.source} into {r.target_dir} "
        f"({human_size(r.bytes_restored)}, {human_duration(r.phases['fetch'])})"
    ]
    lines += [f"not restored: symlink {x['path'].lstrip('/')} -> {x['target']}" for x in r.links_skipped]
    if r.server:
        lines.append(f"server running on port {r.server['port']} (pid {r.server['pid']})")
    if r.recovered_lsn:
        ts = r.recovered_commit_ts
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "unknown"
        lines.append(f"recovered to LSN {r.recovered_lsn}, last commit at {when}")
    elif not started:
        lines.append("start the server on it to run recovery (recovery.signal and restore_command are set)")
    if r.passphrase_file:
        lines.append(
            f"restore_command reads the repository passphrase from {r.passphrase_file} while "
            f"recovery is paused: remove {Path(r.passphrase_file).parent} once it has ended"
        )
    return "\n".join(lines)


class _RestoreGroup(SuggestingGroup):
    """`restore SNAPSHOT ...` (files, from the repository engine) plus `restore postgres ...`.

    Arguments that do not start with a subcommand name go to the original `restore` command.
    """

    def __init__(self, default: click.Command):
        super().__init__(name=default.name, help=default.help, context_settings=default.context_settings)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            return super().parse_args(ctx, args)
        if args[:1] in (["--help"], ["-h"]) or ctx.resilient_parsing:
            # Completion parses resiliently: it resolves the snapshot form via resolve_command.
            return super().parse_args(ctx, args)
        ctx.meta["restore.default_args"] = list(args)
        return []

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """A word that names no subcommand starts the snapshot form (how completion finds its options)."""
        if args and args[0] not in self.commands:
            return self.default.name, self.default, args
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        args = ctx.meta.pop("restore.default_args", None)
        if args is not None:
            # Parented on the group's parent: its usage and errors say `recoverctl restore`, the
            # words the user typed, not `recoverctl restore restore`.
            sub = self.default.make_context(ctx.info_name, args, parent=ctx.parent)
            with sub:
                return self.default.invoke(sub)
        return super().invoke(ctx)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Both forms, each with its own arguments."""
        formatter.write_usage(ctx.command_path, " ".join(self.default.collect_usage_pieces(ctx)))
        for name in self.list_commands(ctx):
            sub = self.commands[name]
            formatter.write_usage(
                f"{ctx.command_path} {name}", " ".join(sub.collect_usage_pieces(ctx)), prefix="       "
            )

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The snapshot form's options, then the subcommands."""
        params = [p for p in self.default.get_params(ctx) if isinstance(p, click.Option)]
        records = [r for p in params if (r := p.get_help_record(ctx)) is not None]
        with formatter.section("Options"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)


def _restore_group() -> click.Command:
    from recoverctl.cli.browse_cmd import restore_cmd

    group = _RestoreGroup(restore_cmd)
    group.add_command(restore_postgres_cmd)
    return group


def _backup_group() -> click.Command:
    from recoverctl.cli.backup_cmd import backup_group

    backup_group.add_command(backup_postgres_cmd)
    return backup_group


COMMANDS = [postgres_group, _backup_group(), _restore_group()]
