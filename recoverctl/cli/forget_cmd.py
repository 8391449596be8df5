"""`recoverctl forget`, `prune`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from recoverctl.actions.forget import forget, prune
from recoverctl.cli.backup_cmd import parse_tags
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.cli.passphrase import passphrase
from recoverctl.config import parse_duration
from recoverctl.errors import UsageError
from recoverctl.repo.retention import Policy


def _prune_text(d: dict[str, Any]) -> str:
    head = "would delete" if d["dry_run"] else "deleted"
    lines = [
        f"prune: {head} {d['packs_delete']} pack(s), repacked {d['packs_repack']}, kept {d['packs_keep']}; "
        f"unused {d['bytes_unused']} of {d['bytes_total']} bytes; freed {d['bytes_freed']} bytes"
    ]
    lines += [f"  still locked (Object Lock), not deleted yet: {k}" for k in d["locked_not_deleted"]]
    lines += [
        f"  WAL of '{w['source']}': {head} {len(w['removed'])} segment file(s) before {w['oldest_needed']}"
        for w in d["wal"]
        if w["oldest_needed"]
    ]
    if d["partial_writes"]:
        lines.append(f"  {head} {len(d['partial_writes'])} leftover(s) of interrupted writes")
    if d.get("partial_writes_unknown"):
        lines.append(f"  leftovers of interrupted writes not listed: {d['partial_writes_unknown']}")
    return "\n".join(lines)


@click.command("forget")
@click.option("--keep-last", type=int, default=0, metavar="N", help="Keep the newest N.")
@click.option("--keep-hourly", type=int, default=0, metavar="N", help="Keep the newest of each of N hours.")
@click.option("--keep-daily", type=int, default=0, metavar="N", help="Keep the newest of each of N days.")
@click.option("--keep-weekly", type=int, default=0, metavar="N", help="Keep the newest of each of N weeks.")
@click.option("--keep-monthly", type=int, default=0, metavar="N", help="Keep the newest of each of N months.")
@click.option("--keep-yearly", type=int, default=0, metavar="N", help="Keep the newest of each of N years.")
@click.option("--keep-within", metavar="DURATION", help="Keep all within DURATION (e.g. 7d) of the newest.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Only consider snapshots with this tag.")
@click.option("--kind", help="Only consider snapshots of this kind.")
@click.option("--prune", "do_prune", is_flag=True, help="Prune afterwards.")
@click.option("--max-unused", type=float, default=5.0, show_default=True, help="With --prune: see 'prune'.")
@click.option("--dry-run", is_flag=True, help="Show the decisions, remove nothing.")
@json_option
@pass_app
def forget_cmd(
    app: App,
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: str | None,
    tags: tuple[str, ...],
    kind: str | None,
    do_prune: bool,
    max_unused: float,
    dry_run: bool,
) -> None:
    """Remove snapshots no keep rule selects; each decision is shown with the rule that kept it.

    Without --keep-* options the config's 'retention:' block decides, per source (this is what
    the scheduled 'forget --prune' uses). Snapshots pinned in the catalog (releases, running
    drills) are always kept. Groups of (kind, source, paths) are judged separately.

    \b
    Example:
      recoverctl forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune --dry-run
      recoverctl forget --prune            # the config's retention: block
    """
    try:
        within = parse_duration(keep_within) if keep_within else 0.0
    except ValueError as e:
        raise UsageError(str(e)) from None
    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, within)
    data = forget(
        app.config,
        app.catalog,
        passphrase(app),
        policy,
        tags=parse_tags(tags),
        kind=kind,
        prune=do_prune,
        max_unused=max_unused,
        dry_run=dry_run,
    )

    def text(d: dict[str, Any]) -> str:
        lines = []
        for x in d["decisions"]:
            when = dt.datetime.fromtimestamp(x["time"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            verdict = "keep  " if x["keep"] else ("would remove" if d["dry_run"] else "remove")
            why = ", ".join(x["reasons"]) or "no rule"
            lines.append(f"{verdict} {x['id'][:8]} {when} {x['kind']} {','.join(x['paths'])}  ({why})")
        lines.append(f"{d['kept']} kept, {len(d['removed'])} {'to remove' if d['dry_run'] else 'removed'}")
        if "prune" in d:
            lines.append(_prune_text(d["prune"]))
        return "\n".join(lines)

    app.render(data, text)


@click.command("prune")
@click.option(
    "--max-unused",
    type=float,
    default=5.0,
    show_default=True,
    metavar="P",
    help="Repack partly used packs until unused space is at most P% of the repository.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted and repacked.")
@json_option
@pass_app
def prune_cmd(app: App, max_unused: float, dry_run: bool) -> None:
    """Delete data no snapshot references and repack partly used packs (exclusive lock).

    Also deletes archived WAL older than the oldest kept backup of each postgres source needs
    (as 'wal expire' does) and leftovers of writes interrupted more than a day ago (temp files,
    unfinished S3 multipart uploads). Objects still under S3 Object Lock retention are never
    deleted; they are listed.

    \b
    Example:
      recoverctl prune --max-unused 10
    """
    data = prune(app.config, app.catalog, passphrase(app), max_unused=max_unused, dry_run=dry_run)
    app.render(data, _prune_text)


COMMANDS = [forget_cmd, prune_cmd]
