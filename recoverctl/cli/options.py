"""Options shared by commands: `--json` after the subcommand works like the global flag."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from recoverctl.cli.context import App

F = TypeVar("F", bound=Callable[..., Any])


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    # No App when a command line is only parsed (schedules in `config check`, shell completion).
    if value and app is not None:
        app.json = True


def json_option(f: F) -> F:
    """Accept `--json` on the subcommand itself (same effect as `recoverctl --json ...`)."""
    return click.option(
        "--json",
        "_json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Machine-readable output.",
    )(f)


def use_repository(app: App, name: str | None) -> None:
    """Point the command at repository `name` of `repositories:` (None: leave it as it is)."""
    if name:
        # Every action reads `config.repository`: pointing it at the named one is all --repo takes.
        app._config = app.config.for_repository(name)


def _use_repository(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    app = ctx.find_object(App)
    if app is not None:  # None when a command line is only parsed, as in _set_json
        use_repository(app, value)


def repo_option(f: F) -> F:
    """Accept `--repo NAME`: work on that repository of `repositories:` (default: the primary)."""
    return click.option(
        "--repo",
        "_repo",
        metavar="NAME",
        expose_value=False,
        callback=_use_repository,
        help="Repository of 'repositories:' to use (default: the primary, the first).",
    )(f)
