"""`recoverctl verify`, `repair index`, `repair upgrade`."""

from __future__ import annotations

import click

from recoverctl.actions.repository import FormatUpgrade, upgrade_repository
from recoverctl.actions.verify import RepairIndexResult, VerifyResult, repair_index, verify
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option, repo_option
from recoverctl.cli.passphrase import passphrase


@click.command("verify")
@click.option("--read-data", is_flag=True, help="Download every pack, decrypt and re-hash every blob.")
@click.option(
    "--read-data-subset",
    "subset",
    metavar="P%|n/t",
    help="Read a share of the packs (least recently verified first) or the n-th of t groups.",
)
@json_option
@repo_option
@pass_app
def verify_cmd(app: App, read_data: bool, subset: str | None) -> None:
    """Check the repository structure, and with --read-data the data itself.

    Damaged packs are named with every snapshot and file they affect; exit 13 when anything is
    damaged. Verified packs are remembered in the catalog so '--read-data-subset 10%' rotates.

    \b
    Example:
      recoverctl verify --read-data-subset 10%
    """
    progress = app.progress("verify")
    try:
        data = verify(
            app.config, app.catalog, passphrase(app), read_data=read_data, subset=subset, progress=progress
        )
    finally:
        progress.close()

    def text(r: VerifyResult) -> str:
        report = r.report
        lines = [
            f"repository {r.repository}: ok — {report.snapshots} snapshots, {report.trees} trees, "
            f"{report.packs_total} packs, {len(report.verified)} packs read ({report.blobs_read} blobs)"
        ]
        lines += [f"note: {n}" for n in report.notes]
        return "\n".join(lines)

    app.render(data, text)


@click.group("repair", cls=SuggestingGroup)
def repair_group() -> None:
    """Repair repository metadata."""


@repair_group.command("index")
@json_option
@pass_app
def repair_index_cmd(app: App) -> None:
    """Rebuild the index from the pack headers (after a lost or damaged index file).

    \b
    Example:
      recoverctl repair index
    """
    data = repair_index(app.config, app.catalog, passphrase(app))

    def text(r: RepairIndexResult) -> str:
        n = r.rebuild
        return (
            f"index rebuilt: {n.packs} packs, {n.blobs} blobs in {n.index_files_written} file(s); "
            f"{n.index_files_removed} old file(s) removed; unreadable packs: {len(n.unreadable_packs)}"
        )

    app.render(data, text)


@repair_group.command("upgrade")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@json_option
@pass_app
def repair_upgrade_cmd(app: App, dry_run: bool) -> None:
    """Move the repository to the current format version (3). From 1: every key slot is renamed
    to the hash of its content, so a key file copied under another name is refused. From 2:
    PostgreSQL incrementals may then store a changed chunk as its changed pages (page patches).
    Data, snapshots and passphrases are untouched; recoverctl of an older format can no longer
    open it.

    \b
    Example:
      recoverctl repair upgrade --dry-run
      recoverctl repair upgrade
    """
    data = upgrade_repository(app.config, passphrase(app), app.catalog, dry_run=dry_run)

    def text(r: FormatUpgrade) -> str:
        verb = "would rename" if r.dry_run else "renamed"
        return (
            f"format version {r.version_before} -> {r.version}"
            f"{' (dry run)' if r.dry_run else ''}; {verb} {len(r.keys_renamed)} key slot(s)"
        )

    app.render(data, text)


COMMANDS = [verify_cmd, repair_group]
