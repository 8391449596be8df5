"""`recoverctl wal push|fetch`: PostgreSQL's archive_command and restore_command.

PostgreSQL runs these once per WAL file, so this module imports as little as possible up front.
"""

from __future__ import annotations

from pathlib import Path

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.units import human_duration, human_size


@click.group("wal", cls=SuggestingGroup)
def wal_group() -> None:
    """WAL archiving for postgres sources (archive_command / restore_command)."""


@wal_group.command("push")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@json_option
@pass_app
def push(app: App, path: Path, source: str | None) -> None:
    """Store WAL file PATH (compressed, encrypted) in the repository under wal/<source>/<timeline>/.

    Idempotent: pushing the same file again succeeds; different content under an existing name
    fails (exit 13) and is never overwritten. Use as archive_command (see `postgres setup`).

    \b
    Example:
      archive_command = 'recoverctl --config /etc/recoverctl/recoverctl.yaml wal push --source main %p'
      archive_command = 'recoverctl-wal --config /etc/recoverctl/recoverctl.yaml push --source main %p'
    """
    from recoverctl.actions.wal import wal_push
    from recoverctl.cli.passphrase import passphrase

    result = wal_push(app.config, passphrase(app), source=source, path=path)
    app.render(result, lambda r: "" if app.verbosity <= 0 else f"{r.name}: {r.status}")


@wal_group.command("fetch")
@click.argument("name")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@json_option
@pass_app
def fetch(app: App, name: str, dest: Path, source: str | None) -> None:
    """Write WAL file NAME from the repository to DEST; exit 10 (and write nothing) when missing.

    Use as restore_command; `restore postgres` writes it for you.

    \b
    Example:
      restore_command = 'recoverctl-wal --config /etc/recoverctl/recoverctl.yaml fetch --source main %f %p'
    """
    from recoverctl.actions.wal import wal_fetch
    from recoverctl.cli.passphrase import passphrase

    result = wal_fetch(app.config, passphrase(app), source=source, name=name, dest=dest)
    app.render(result, lambda r: "" if app.verbosity <= 0 else f"{r.name}: {human_size(r.bytes)}")


@wal_group.command("expire")
@click.option("--source", help="Only this postgres source (default: all).")
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@json_option
@pass_app
def expire(app: App, source: str | None, dry_run: bool) -> None:
    """Remove archived WAL older than the oldest kept physical backup needs (run after forget).

    \b
    Example:
      recoverctl forget --keep-daily 7 --keep-weekly 4 && recoverctl wal expire
    """
    from recoverctl.actions.wal import WalExpire, expire_wal
    from recoverctl.cli.passphrase import passphrase

    result = expire_wal(app.config, passphrase(app), source=source, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"

    def text(r: WalExpire) -> str:
        return "\n".join(
            f"{s.source}: {verb} {len(s.removed)} WAL file(s) older than {s.oldest_needed}" for s in r.sources
        )

    app.render(result, text)


@wal_group.command("stream")
@click.option("--source", help="Postgres source name (optional when only one is configured).")
@click.option(
    "--print-units",
    type=click.Choice(["systemd", "kubernetes"]),
    help="Print the service definitions that keep every receiver running, and exit.",
)
@click.option(
    "--image", default="recoverctl:latest", show_default=True, help="Image for --print-units kubernetes."
)
@json_option
@pass_app
def stream(app: App, source: str | None, print_units: str | None, image: str) -> None:
    """Stream WAL into the repository with pg_receivewal until SIGTERM (sources.<name>.wal.mode: stream).

    Whole segments are stored as `wal push` stores them; the segment being written is uploaded
    every wal.flush_interval, so `restore --to-latest` loses at most a few seconds. Reconnects
    with backoff after a primary restart or failover. Run it as a service: `scheduler install
    --systemd` installs its unit, `--print-units kubernetes` prints a manifest.

    \b
    Example:
      recoverctl wal stream --source main
      recoverctl wal stream --print-units kubernetes --image registry.example/recoverctl:1.4
    """
    from recoverctl.actions.wal_stream import stream_units, wal_stream
    from recoverctl.cli.passphrase import passphrase

    def line(st: object) -> None:
        if app.verbosity > 0:
            click.echo(
                f"{getattr(st, 'source', '')}: uploaded to {getattr(st, 'uploaded_lsn', None)}, "
                f"lag {human_size(getattr(st, 'lag_bytes', None))} / "
                f"{human_duration(getattr(st, 'lag_seconds', None))}",
                err=True,
            )

    if print_units:
        units = stream_units(app.config, print_units, image)
        sep = "---\n" if print_units == "kubernetes" else ""
        app.render(units, lambda u: sep.join(f"# {name}\n{text}" for name, text in u.units.items()).rstrip())
        return
    result = wal_stream(app.config, app.catalog, passphrase(app), source=source, on_status=line)
    app.render(result, lambda r: f"{r.source}: stopped, {r.stored_total} stored, last {r.last_stored}")


COMMANDS = [wal_group]
