"""`recoverctl init`, `key list|add|remove|passwd`, `unlock`."""

from __future__ import annotations

import click

from recoverctl.actions import repository as actions
from recoverctl.actions.unlock import unlock_repository
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option, repo_option
from recoverctl.cli.passphrase import new_passphrase, passphrase
from recoverctl.repo.locks import RemovedLock


@click.command("init")
@json_option
@repo_option
@pass_app
def init(app: App) -> None:
    """Create a new encrypted repository at the configured location.

    The passphrase comes from RECOVERCTL_PASSWORD / RECOVERCTL_PASSWORD_FILE, the config's
    repository.password_file, or a prompt. Refuses a location that already holds a repository.

    \b
    Example:
      export RECOVERCTL_REPOSITORY=s3://backups/prod RECOVERCTL_PASSWORD_FILE=~/.recoverctl-pass
      recoverctl init
    """
    result = actions.init_repository(app.config, passphrase(app, confirm=True), app.catalog)
    app.render(result, lambda r: f"created repository {r.id[:8]} at {r.url} (format v{r.version})")


@click.group("key", cls=SuggestingGroup)
def key_group() -> None:
    """Manage the passphrases (key slots) that open the repository."""


@key_group.command("list")
@json_option
@pass_app
def key_list(app: App) -> None:
    """List key slots; the one that opened the repository is marked '*'.

    \b
    Example:
      recoverctl key list --json
    """
    keys = actions.list_keys(app.config, passphrase(app))

    def text(rows: list[actions.KeySlotInfo]) -> str:
        return "\n".join(
            f"{'*' if k.current else ' '} {k.id[:8]}  "
            + (
                f"unusable: {k.problem}"
                if k.problem or k.kdf is None
                else f"{k.username}@{k.hostname}  {k.kdf['name']} n={k.kdf.get('n')}"
            )
            for k in rows
        )

    app.render(keys, text)


@key_group.command("add")
@json_option
@pass_app
def key_add(app: App) -> None:
    """Add a passphrase (from RECOVERCTL_NEW_PASSWORD(_FILE) or a prompt).

    \b
    Example:
      RECOVERCTL_NEW_PASSWORD_FILE=/root/second-pass recoverctl key add
    """
    result = actions.add_key(app.config, passphrase(app), new_passphrase(), app.catalog)
    app.render(result, lambda r: f"added key {r.added[:8]}")


@key_group.command("remove")
@click.argument("key_id")
@json_option
@pass_app
def key_remove(app: App, key_id: str) -> None:
    """Remove the key slot KEY_ID (prefix); the last key is never removed.

    \b
    Example:
      recoverctl key remove 3f2a9c1b
    """
    result = actions.remove_key(app.config, passphrase(app), key_id, app.catalog)
    app.render(result, lambda r: f"removed key {r.removed[:8]}")


@key_group.command("passwd")
@json_option
@pass_app
def key_passwd(app: App) -> None:
    """Change the passphrase of the current key slot (rewraps the master key; data is untouched).

    \b
    Example:
      RECOVERCTL_NEW_PASSWORD_FILE=/root/new-pass recoverctl key passwd
    """
    result = actions.change_password(app.config, passphrase(app), new_passphrase(), app.catalog)
    app.render(result, lambda r: f"passphrase changed: key {r.old_key[:8]} replaced by {r.new_key[:8]}")


@click.command("unlock")
@click.option("--remove-all", is_flag=True, help="Also remove locks that look alive.")
@json_option
@pass_app
def unlock(app: App, remove_all: bool) -> None:
    """Remove stale repository locks (dead local processes, or not refreshed for 30 min).

    \b
    Example:
      recoverctl unlock --remove-all
    """
    removed = unlock_repository(app.config, passphrase(app), remove_all, app.catalog)

    def text(rows: list[RemovedLock]) -> str:
        return "\n".join(f"removed {r.holder}" for r in rows) or "no stale locks"

    app.render(removed, text)


COMMANDS = [init, key_group, unlock]
