"""`recoverctl config check|show`."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import click
import yaml

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.config import loose_config_mode, redacted_dump
from recoverctl.errors import ConfigError
from recoverctl.notify.routing import unserved_routes
from recoverctl.scheduler.feasibility import schedule_problems


@click.group("config", cls=SuggestingGroup)
def config_group() -> None:
    """Validate and display the configuration."""


def parse_job(job: str) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """Parse a schedule's job line as `recoverctl` would; return the command path and its
    parameters, or raise ValueError saying why it is not a valid command line."""
    from recoverctl.cli.main import cli

    try:
        args = shlex.split(job)
        command: click.Command = cli
        ctx = command.make_context("recoverctl", args)
        path: list[str] = []
        while isinstance(command, click.Group):
            # What Group.invoke does: the words after the group's own options name the subcommand.
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                raise ValueError(f"'{' '.join(['recoverctl', *path])}' needs a subcommand")
            name, sub, rest = command.resolve_command(ctx, rest)
            assert name is not None and sub is not None
            path.append(name)
            command = sub
            ctx = command.make_context(name, rest, parent=ctx)
        return tuple(path), ctx.params
    except click.exceptions.Exit:
        raise ValueError("it only prints help or the version") from None
    except click.ClickException as e:
        raise ValueError(e.format_message()) from None


@config_group.command("check")
@json_option
@pass_app
def check(app: App) -> None:
    """Validate the config file; exit 0 when valid, 2 naming each bad key otherwise.

    Scheduled jobs are checked too: a job that can never succeed (not a recoverctl command line,
    a source or service the config lacks, 'forget' with no keep rule and no 'retention:') is an
    error.

    A postgres source with backup_from: standby is checked against its servers: the standby must
    be in recovery, a standby of this primary (system identifier, timeline), its data directory
    readable here.

    Warns (exit 0) when the file holds a secret inline and its group or others can read it, and
    names the runbook's notification routes no channel serves (e.g. "critical → voice: no twilio
    channel configured").

    \b
    Example:
      recoverctl --config /etc/recoverctl/recoverctl.yaml config check
    """
    from recoverctl.actions.backup_postgres import check_standbys

    cfg = app.config
    check_standbys(cfg)
    problems = schedule_problems(cfg, parse_job)
    if problems:
        where = f"'{cfg.path}'" if cfg.path else "configuration from the environment"
        raise ConfigError(
            f"schedules in {where} can never succeed:\n  " + "\n  ".join(problems),
            hint="fix or disable (enabled: false) the schedules named above",
            details={"file": str(cfg.path) if cfg.path else None, "errors": problems},
        )
    warning = loose_config_mode(cfg)
    warnings = ([warning] if warning else []) + cfg.target_warnings()
    unserved = unserved_routes(cfg)
    app.render(
        {
            "valid": True,
            "file": str(cfg.path) if cfg.path else None,
            "warnings": warnings,
            "unserved_routes": unserved,
        },
        "\n".join(
            [
                # The routes are advice, listed before the verdict, which stays the last word.
                *(f"unserved runbook route: {u}" for u in unserved),
                f"{cfg.path or 'environment-only configuration'}: valid",
                *(f"warning: {w}" for w in warnings),
            ]
        ),
    )


@config_group.command("show")
@json_option
@pass_app
def show(app: App) -> None:
    """Print the effective configuration with secrets redacted.

    \b
    Example:
      recoverctl config show --json
    """
    data = redacted_dump(app.config)
    app.render(data, lambda d: yaml.safe_dump(d, sort_keys=False).rstrip())


COMMANDS = [config_group]
