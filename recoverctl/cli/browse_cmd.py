"""`recoverctl snapshots`, `ls`, `diff`, `cat`/`dump`, `restore`."""

from __future__ import annotations

import sys

import click

from recoverctl.actions import browse
from recoverctl.actions.browse import FileListing, SnapshotDiff, SnapshotListing
from recoverctl.actions.restore import TreeRestoreResult
from recoverctl.actions.restore import restore as restore_action
from recoverctl.cli.backup_cmd import parse_tags
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option, repo_option
from recoverctl.cli.passphrase import passphrase
from recoverctl.errors import UsageError
from recoverctl.repo.snapshot import iso
from recoverctl.units import human_duration, human_size


@click.command("snapshots")
@click.option("--kind", help="Only snapshots of this kind (files, volume, postgres, ...).")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Only snapshots with this tag.")
@json_option
@repo_option
@pass_app
def snapshots(app: App, kind: str | None, tags: tuple[str, ...]) -> None:
    """List snapshots in the repository, oldest first.

    \b
    Example:
      recoverctl snapshots --json
    """
    listing = browse.list_snapshots(app.config, passphrase(app), kind=kind, tags=parse_tags(tags))

    def text(listing: SnapshotListing) -> str:
        lines = [f"{'ID':<9} {'TIME':<21} {'KIND':<9} {'SIZE':>10}  PATHS / TAGS"]
        for s in listing.snapshots:
            tag = " ".join(f"{k}={v}" for k, v in s.tags.items())
            flag = " (partial)" if s.partial else ""
            size = human_size(s.summary.get("bytes_total"))
            lines.append(
                f"{s.short_id:<9} {iso(s.time):<21} {s.kind:<9} {size:>10}  {', '.join(s.paths)} {tag}{flag}"
            )
        lines.append(f"{len(listing.snapshots)} snapshot(s)")
        return "\n".join(lines)

    app.render(listing, text)


@click.command("ls")
@click.argument("snapshot")
@click.argument("path", default="/")
@click.option("--no-recursive", is_flag=True, help="Only the entries directly below PATH.")
@json_option
@repo_option
@pass_app
def ls_cmd(app: App, snapshot: str, path: str, no_recursive: bool) -> None:
    """List files in SNAPSHOT (id prefix or 'latest') below PATH.

    \b
    Example:
      recoverctl ls latest /srv/app
    """
    data = browse.list_files(app.config, passphrase(app), snapshot, path, recursive=not no_recursive)

    def text(listing: FileListing) -> str:
        return "\n".join(
            f"{n.mode:>7} {n.user or n.uid!s:>8} {human_size(n.size):>10} {n.mtime} {n.path}"
            + (f" -> {n.target}" if n.target is not None else "")
            for n in listing.nodes
        )

    app.render(data, text)


@click.command("diff")
@click.argument("a")
@click.argument("b")
@json_option
@pass_app
def diff_cmd(app: App, a: str, b: str) -> None:
    """Show what changed between snapshots A and B (+ added, - removed, M modified, U metadata).

    \b
    Example:
      recoverctl diff 3f2a9c1b latest
    """
    data = browse.diff_snapshots(app.config, passphrase(app), a, b)
    marks = {"added": "+", "removed": "-", "modified": "M", "metadata": "U"}

    def text(d: SnapshotDiff) -> str:
        lines = [f"{marks[c['change']]}  {c['path']}" for c in d.changes]
        lines.append(", ".join(f"{k}: {v}" for k, v in sorted(d.counts.items())) or "no changes")
        return "\n".join(lines)

    app.render(data, text)


def _cat(app: App, snapshot: str, path: str) -> None:
    out = sys.stdout.buffer
    for data in browse.cat_file(app.config, passphrase(app), snapshot, path):
        out.write(data)
    out.flush()


@click.command("cat")
@click.argument("snapshot")
@click.argument("path")
@json_option
@pass_app
def cat_cmd(app: App, snapshot: str, path: str) -> None:
    """Write one file of SNAPSHOT to stdout (damaged data → exit 13, nothing wrong is written).

    \b
    Example:
      recoverctl cat latest /etc/nginx/nginx.conf
    """
    _cat(app, snapshot, path)


@click.command("dump")
@click.argument("snapshot")
@click.argument("path")
@json_option
@pass_app
def dump_cmd(app: App, snapshot: str, path: str) -> None:
    """Same as 'cat': stream one file (e.g. a stored dump) to stdout.

    \b
    Example:
      recoverctl dump latest /db.dump | pg_restore -d app
    """
    _cat(app, snapshot, path)


@click.command("restore")
@click.argument("snapshot")
@click.option("--target", type=click.Path(), help="Directory to restore into.")
@click.option("--target-volume", metavar="NAME", help="Docker volume to restore into (created when missing).")
@click.option(
    "--force",
    is_flag=True,
    help="Restore into a non-empty target: --target: write the snapshot over it, keep other entries; "
    "--target-volume: replace the volume's content.",
)
@click.option("--include", "includes", multiple=True, metavar="PATH", help="Only this path (repeatable).")
@click.option("--verify", is_flag=True, help="Re-read every restored file and compare with the snapshot.")
@click.option(
    "--delta", is_flag=True, help="Keep files that already match; remove files not in the snapshot."
)
@click.option(
    "--dry-run", is_flag=True, help="With --target: list what would be removed and replaced; change nothing."
)
@json_option
@repo_option
@pass_app
def restore_cmd(
    app: App,
    snapshot: str,
    target: str | None,
    target_volume: str | None,
    force: bool,
    includes: tuple[str, ...],
    verify: bool,
    delta: bool,
    dry_run: bool,
) -> None:
    """Restore SNAPSHOT (id prefix or 'latest') into --target.

    Files are written to temporary names and renamed into place only when every byte was
    authenticated; damaged files are skipped and named, and the command exits 13. Nothing is
    written outside the target: a tampered snapshot (entry names like '..') exits 13, and symlinks
    already in the target are replaced, never followed. A non-empty target is refused (exit 2)
    unless --force (write over it) or --delta (make it equal to the snapshot; preview the
    deletions with --delta --dry-run).
    --target-volume restores into a Docker volume instead (a non-empty one needs --force).

    \b
    Example:
      recoverctl restore latest --target /tmp/restore --include /srv/app/config
      recoverctl restore latest --target /srv/app --delta --dry-run
      recoverctl restore 3f2a9c1b --target-volume app-uploads-restored
    """
    if (target is None) == (target_volume is None):
        raise UsageError("give exactly one of --target DIR or --target-volume NAME")
    if dry_run and target is None:
        raise UsageError("--dry-run works with --target DIR only")
    progress = app.progress("restore")
    if target_volume is not None:
        from recoverctl.actions.volume import restore_volume

        try:
            vdata = restore_volume(
                app.config,
                app.catalog,
                passphrase(app),
                snapshot,
                target_volume,
                force=force,
                progress=progress,
            )
        finally:
            progress.close()
        app.render(
            vdata,
            lambda r: f"restored snapshot {r.snapshot[:8]} into volume {r.volume}: {r.result.files} files",
        )
        return
    assert target is not None
    password = passphrase(app)
    try:
        with app.run_recorder() as recorder:
            data = restore_action(
                app.config,
                recorder,
                password,
                snapshot,
                target,
                include=list(includes) or None,
                verify=verify,
                delta=delta,
                force=force,
                dry_run=dry_run,
                progress=progress,
            )
    finally:
        progress.close()
    app.render(data, _restore_text)


def _restore_text(r: TreeRestoreResult) -> str:
    res = r.result
    if not res.dry_run:
        return (
            f"restored snapshot {r.snapshot[:8]} to {r.target}: {res.files} files, "
            f"{res.dirs} dirs, {human_size(res.bytes)} in {human_duration(res.duration_s)}"
        )
    lines = [f"would remove   {p}" for p in res.would_remove]
    lines += [f"would replace  {p}" for p in res.would_overwrite]
    lines.append(
        f"dry run of snapshot {r.snapshot[:8]} into {r.target}: {res.files} files "
        f"({human_size(res.bytes)}) to write, {res.skipped} unchanged, "
        f"{len(res.would_remove)} to remove, {len(res.would_overwrite)} to replace; nothing changed"
    )
    return "\n".join(lines)


COMMANDS = [snapshots, ls_cmd, diff_cmd, cat_cmd, dump_cmd, restore_cmd]
