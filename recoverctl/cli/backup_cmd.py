"""`recoverctl backup files PATH...` (other sources add subcommands to `backup_group`)."""

from __future__ import annotations

import json
from typing import Any

import click

from recoverctl.actions.backup import backup_files
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.cli.passphrase import passphrase
from recoverctl.errors import PartialError, UsageError
from recoverctl.sources.files import read_exclude_file
from recoverctl.units import human_duration, human_size


def parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    """Given ('k=v', ...), return {k: v}; raise UsageError for a value without '='."""
    tags = {}
    for v in values:
        if "=" not in v:
            raise UsageError(f"invalid tag '{v}'", hint="use --tag KEY=VALUE")
        k, _, val = v.partition("=")
        tags[k.strip()] = val.strip()
    return tags


@click.group("backup", cls=SuggestingGroup)
def backup_group() -> None:
    """Back up a source into the repository."""


@backup_group.command("files")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag the snapshot (repeatable).")
@click.option(
    "--exclude", "excludes", multiple=True, metavar="GLOB", help="Skip matching paths (repeatable)."
)
@click.option(
    "--exclude-file", "exclude_files", multiple=True, type=click.Path(), help="Read globs from a file."
)
@click.option("--one-file-system", is_flag=True, help="Do not cross into other file systems.")
@click.option("--force-read", is_flag=True, help="Read every file, even when unchanged since the parent.")
@click.option(
    "--source",
    metavar="NAME",
    help="Record the snapshot under this source name; without PATHS, back up its configured paths.",
)
@click.option("--dry-run", is_flag=True, help="Read and hash, report what would be added, write nothing.")
@json_option
@pass_app
def files(
    app: App,
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    excludes: tuple[str, ...],
    exclude_files: tuple[str, ...],
    one_file_system: bool,
    force_read: bool,
    source: str | None,
    dry_run: bool,
) -> None:
    """Back up files and directories (deduplicated, compressed, encrypted).

    Files unchanged since the previous snapshot of the same paths (size, mtime, ctime, inode) are
    not read again. Files that vanish or change while read are reported and the command exits 3.
    With --json, prints status lines while running and one summary line at the end.

    \b
    Without PATHS, backs up the `paths` of files source --source (or of the only files source),
    with its `exclude` globs and `one_file_system`.

    \b
    Example:
      recoverctl backup files /srv/app /etc/nginx --tag env=prod --exclude '*.tmp'
      recoverctl backup files --source uploads
    """
    patterns = list(excludes)
    if not paths:
        if source is None and not any(s.type == "files" for s in app.config.sources.values()):
            raise UsageError(
                "nothing to back up: give PATHS", hint="or define a files source (sources: NAME: type: files)"
            )
        # The files source's own definition fills what the command line left out.
        source, configured = app.config.source(source, "files")
        paths = tuple(configured.paths)
        patterns = [*configured.exclude, *patterns]
        one_file_system = one_file_system or configured.one_file_system
    for f in exclude_files:
        patterns += read_exclude_file(f)
    password = passphrase(app)
    with app.run_recorder() as recorder:
        progress = app.progress("backup", status_lines=True)
        try:
            result = backup_files(
                app.config,
                recorder,
                password,
                list(paths),
                tags=parse_tags(tags),
                excludes=patterns,
                one_file_system=one_file_system,
                force_read=force_read,
                dry_run=dry_run,
                source=source,
                progress=progress,
            )
        finally:
            progress.close()
    _print_summary(app, result, dry_run)
    if result.partial:
        raise PartialError(
            f"backup finished with {len(result.warnings)} problem(s); snapshot "
            f"{str(result.snapshot_id)[:8]} is marked partial",
            hint="see the warnings above; files that changed while read are flagged in the snapshot",
        )


def _print_summary(app: App, result: Any, dry_run: bool, extra: dict[str, Any] | None = None) -> None:
    summary: dict[str, Any] = {
        "message_type": "summary",
        "snapshot_id": result.snapshot_id,
        "dry_run": dry_run,
        "partial": result.partial,
        **result.summary,
        **(extra or {}),
    }
    if app.json:
        click.echo(json.dumps(summary))
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    s = summary
    head = "dry run: would add" if dry_run else f"snapshot {str(s['snapshot_id'])[:8]} saved:"
    click.echo(
        f"{head} {human_size(s['bytes_added'])} ({human_size(s['bytes_added_stored'])} stored); files: "
        f"{s['files_new']} new, {s['files_changed']} changed, {s['files_unmodified']} unmodified; "
        f"read {human_size(s['bytes_read'])} in {human_duration(s['duration_s'])}"
    )


@backup_group.command("volume")
@click.argument("name")
@click.option(
    "--stop-containers", is_flag=True, help="Stop running containers using the volume during the copy."
)
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag the snapshot (repeatable).")
@click.option("--dry-run", is_flag=True, help="Read and hash, report what would be added, write nothing.")
@json_option
@pass_app
def volume(app: App, name: str, stop_containers: bool, tags: tuple[str, ...], dry_run: bool) -> None:
    """Back up Docker volume NAME from the local engine (reads the volume's mountpoint; run as root).

    With --stop-containers, containers using the volume are stopped for a consistent copy and
    always started again, also when the backup fails or is interrupted.

    \b
    Example:
      recoverctl backup volume app-uploads --stop-containers --tag env=prod
    """
    from recoverctl.actions.volume import backup_volume

    progress = app.progress("backup volume", status_lines=True)
    try:
        backup = backup_volume(
            app.config,
            app.catalog,
            passphrase(app),
            name,
            stop_containers=stop_containers,
            tags=parse_tags(tags),
            dry_run=dry_run,
            progress=progress,
        )
    finally:
        progress.close()
    result = backup.result
    _print_summary(app, result, dry_run, {"volume": name, "stopped_containers": backup.stopped_containers})
    if result.partial:
        raise PartialError(f"backup of volume '{name}' finished with {len(result.warnings)} problem(s)")


COMMANDS = [backup_group]
