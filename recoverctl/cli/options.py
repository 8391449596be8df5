"""Options shared by commands (`--json` after the subcommand works like the global flag, `--repo`)
and the group class every command group uses."""

from __future__ import annotations

import difflib
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


class SuggestingGroup(click.Group):
    """A command group whose unknown subcommand fails (exit 2) naming the closest ones."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as click does; an unknown name fails with "Did you mean ...?" when one is close."""
        name = args[0]
        if not ctx.resilient_parsing and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if close:
                ctx.fail(
                    f"No such command '{name}'. Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
                )
        return super().resolve_command(ctx, args)
