"""`recoverctl forget`, `prune`."""

from __future__ import annotations

import datetime as dt

import click

from recoverctl.actions.forget import ForgetResult, PruneReport, PruneResult, forget, prune
from recoverctl.cli.backup_cmd import parse_tags
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.cli.passphrase import passphrase
from recoverctl.config import parse_duration
from recoverctl.errors import UsageError
from recoverctl.repo.retention import Policy
from recoverctl.units import human_size


def _prune_text(r: PruneReport) -> str:
    head = "would delete" if r.dry_run else "deleted"
    p = r.plan
    lines = [
        f"prune: {head} {len(p.delete)} pack(s), repacked {len(p.repack)}, kept {p.keep}; "
        f"unused {human_size(p.bytes_unused)} of {human_size(p.bytes_total)}; "
        f"freed {human_size(p.bytes_freed)}"
    ]
    lines += [f"  still locked (Object Lock), not deleted yet: {k}" for k in p.locked]
    lines += [
        f"  WAL of '{w.source}': {head} {len(w.removed)} segment file(s) before {w.oldest_needed}"
        for w in r.wal
        if w.oldest_needed
    ]
    if r.partial_writes:
        lines.append(f"  {head} {len(r.partial_writes)} leftover(s) of interrupted writes")
    if r.partial_writes_unknown:
        lines.append(f"  leftovers of interrupted writes not listed: {r.partial_writes_unknown}")
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

    def text(r: ForgetResult) -> str:
        lines = []
        for x in r.decisions:
            s = x.snapshot
            when = dt.datetime.fromtimestamp(s.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            verdict = "keep  " if x.keep else ("would remove" if r.dry_run else "remove")
            why = ", ".join(x.reasons) or "no rule"
            lines.append(f"{verdict} {s.id[:8]} {when} {s.kind} {','.join(s.paths)}  ({why})")
        lines.append(f"{r.kept} kept, {len(r.removed)} {'to remove' if r.dry_run else 'removed'}")
        if r.prune is not None:
            lines.append(_prune_text(r.prune))
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

    def text(r: PruneResult) -> str:
        return _prune_text(r.report)

    app.render(data, text)


COMMANDS = [forget_cmd, prune_cmd]
