"""Getting passphrases in the CLI: environment or file first, a hidden TTY prompt otherwise."""

from __future__ import annotations

import os
import sys

import click

from recoverctl.cli.context import App
from recoverctl.config import read_secret_file, repository_password
from recoverctl.errors import UsageError

ENV_NEW_PASSWORD = "RECOVERCTL_NEW_PASSWORD"
ENV_NEW_PASSWORD_FILE = "RECOVERCTL_NEW_PASSWORD_FILE"


def _prompt(text: str, confirm: bool, missing: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            missing, hint="set RECOVERCTL_PASSWORD_FILE (or RECOVERCTL_PASSWORD) or run on a TTY"
        )
    value: str = click.prompt(text, hide_input=True, confirmation_prompt=confirm, err=True)
    return value


def passphrase(app: App, *, confirm: bool = False) -> str:
    """Return the repository passphrase (env, password file, or prompt); raise UsageError without a TTY."""
    value = repository_password(app.config)
    if value is not None:
        return value
    return _prompt("repository passphrase", confirm, "no repository passphrase given")


def new_passphrase() -> str:
    """Return a new passphrase from RECOVERCTL_NEW_PASSWORD(_FILE) or a confirmed prompt."""
    if os.environ.get(ENV_NEW_PASSWORD):
        return os.environ[ENV_NEW_PASSWORD]
    if os.environ.get(ENV_NEW_PASSWORD_FILE):
        return read_secret_file(
            os.environ[ENV_NEW_PASSWORD_FILE], f"the new passphrase ({ENV_NEW_PASSWORD_FILE})"
        )
    return _prompt("new passphrase", True, "no new passphrase given")
