"""`recoverctl config check|show`."""

from __future__ import annotations

import click
import yaml

from recoverctl.cli.context import App, pass_app
from recoverctl.config import loose_config_mode, redacted_dump


@click.group("config")
def config_group() -> None:
    """Validate and display the configuration."""


@config_group.command("check")
@pass_app
def check(app: App) -> None:
    """Validate the config file; exit 0 when valid, 2 naming each bad key otherwise.

    Warns (exit 0) when the file holds a secret inline and its group or others can read it.

    \b
    Example:
      recoverctl --config /etc/recoverctl/recoverctl.yaml config check
    """
    cfg = app.config
    warning = loose_config_mode(cfg)
    warnings = [warning] if warning else []
    app.render(
        {"valid": True, "file": str(cfg.path) if cfg.path else None, "warnings": warnings},
        "\n".join(
            [f"{cfg.path or 'environment-only configuration'}: valid", *(f"warning: {w}" for w in warnings)]
        ),
    )


@config_group.command("show")
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
