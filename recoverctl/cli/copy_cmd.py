"""`recoverctl copy`: bring snapshots and WAL from the primary repository to its copies."""

from __future__ import annotations

import click

from recoverctl.actions.copy import CopyResult, copy_repositories
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.cli.passphrase import passphrase
from recoverctl.config import Config, repository_password
from recoverctl.errors import ConfigError
from recoverctl.units import human_size


def copy_passphrase(cfg: Config, name: str) -> str:
    """Return the passphrase of copy repository `name` from its own password_env/password_file;
    raise ConfigError when it has none (a copy has its own key, never the primary's variable)."""
    secret = repository_password(cfg.for_repository(name))
    if secret is None:
        raise ConfigError(
            f"no passphrase for repository '{name}'",
            hint=f"set repositories.{name}.password_file or repositories.{name}.password_env",
        )
    return secret


@click.command("copy")
@click.option("--to", "to", metavar="NAME", help="Copy to this repository only (default: every copy).")
@click.option("--source", help="Copy only this source's snapshots and WAL.")
@click.option("--dry-run", is_flag=True, help="Only count what each copy lacks.")
@json_option
@pass_app
def copy_cmd(app: App, to: str | None, source: str | None, dry_run: bool) -> None:
    """Copy every snapshot and WAL segment from the primary repository to each copy.

    The repositories are the ones under 'repositories:' (the first is the primary). Data is
    re-encrypted for each copy's key and deduplicated there; a copy that was interrupted resumes
    without sending again what arrived. Each copy's passphrase comes from its own password_file
    or password_env.

    \b
    Example:
      recoverctl copy
      recoverctl copy --to offsite --dry-run
    """
    cfg = app.config
    with app.run_recorder() as recorder:
        progress = app.progress("copy", status_lines=True)
        try:
            result = copy_repositories(
                cfg,
                recorder,
                passphrase(app),
                lambda name: copy_passphrase(cfg, name),
                to=to,
                source=source,
                dry_run=dry_run,
                progress=progress,
            )
        finally:
            progress.close()

    def text(r: CopyResult) -> str:
        if not r.copies:
            return "nothing to copy to: only one repository is configured (add more under 'repositories:')"
        lines = []
        for c in r.copies:
            s = c.stats
            if c.dry_run:
                lines.append(
                    f"{c.name} ({c.url}): would copy {c.snapshots_to_copy} snapshot(s) and "
                    f"{c.wal_to_copy} WAL object(s); {s.snapshots_present} snapshot(s) and "
                    f"{s.wal_present} WAL object(s) already there"
                )
                continue
            lines.append(
                f"{c.name} ({c.url}): {s.snapshots_copied} snapshot(s) copied, {s.snapshots_present} already "
                f"there; {s.blobs_sent} blob(s) sent, {s.blobs_deduplicated} already there; "
                f"{s.wal_copied} WAL object(s) copied, {s.wal_present} already there; "
                f"{human_size(s.bytes_uploaded + s.wal_bytes_uploaded)} uploaded"
            )
        return "\n".join(lines)

    app.render(result, text)


COMMANDS = [copy_cmd]
