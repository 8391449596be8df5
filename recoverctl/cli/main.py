"""The `recoverctl` command: global options, command registry, and the error → exit code contract."""

from __future__ import annotations

import json
import sys
import traceback

import click

from recoverctl import __version__
from recoverctl.cli.context import App
from recoverctl.errors import ExitCode, RecoverctlError
from recoverctl.logs import setup_logging

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="recoverctl")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Config file (default: $RECOVERCTL_CONFIG, "
    "./recoverctl.yaml, ~/.config/recoverctl/recoverctl.yaml, /etc/recoverctl/recoverctl.yaml).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output; errors as JSON on stderr.")
@click.option("--log-json", is_flag=True, help="Structured JSON logs on stderr.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, as_json: bool, log_json: bool, verbose: int, quiet: bool
) -> None:
    """Back up a PostgreSQL-backed web stack, prove it restores, and roll bad deployments back.

    \b
    Example:
      export RECOVERCTL_REPOSITORY=/srv/backups RECOVERCTL_PASSWORD_FILE=~/.recoverctl-pass
      recoverctl storage check /srv/backups
    """
    app = App(config_path=config_path, json=as_json, log_json=log_json, verbosity=-1 if quiet else verbose)
    ctx.obj = app
    ctx.call_on_close(app.close)
    setup_logging(app.verbosity, log_json)


def _register() -> None:
    # One line per command module: a new capability adds its module here.
    from recoverctl.cli import (
        backup_cmd,
        browse_cmd,
        catalog_cmd,
        config_cmd,
        deploy_cmd,
        drill_cmd,
        forget_cmd,
        notify_cmd,
        postgres_cmd,
        releases_cmd,
        repo_cmd,
        rollback_cmd,
        scheduler_cmd,
        serve_cmd,
        status_cmd,
        storage_cmd,
        summary_cmd,
        verify_cmd,
        wal_cmd,
    )

    for module in (
        config_cmd,
        catalog_cmd,
        storage_cmd,
        repo_cmd,
        backup_cmd,
        browse_cmd,
        verify_cmd,
        forget_cmd,
        deploy_cmd,
        rollback_cmd,
        releases_cmd,
        drill_cmd,
        status_cmd,
        notify_cmd,
        scheduler_cmd,
        summary_cmd,
        serve_cmd,
        postgres_cmd,
        wal_cmd,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def _emit_error(err: RecoverctlError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(err.to_dict(), default=str), err=True)
        return
    click.secho(f"error: {err.message}", fg="red", err=True)
    if err.hint:
        click.echo(f"hint: {err.hint}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        cli.main(args=args, prog_name="recoverctl", standalone_mode=False)
    except RecoverctlError as e:
        _emit_error(e, as_json)
        sys.exit(int(e.exit_code))
    except click.exceptions.Abort:
        click.echo("cancelled", err=True)
        sys.exit(int(ExitCode.CANCELLED))
    except KeyboardInterrupt:
        click.echo("cancelled", err=True)
        sys.exit(int(ExitCode.CANCELLED))
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        if as_json:
            click.echo(
                json.dumps({"error": "UsageError", "message": e.format_message(), "exit_code": 2}), err=True
            )
        else:
            e.show()
        sys.exit(int(ExitCode.USAGE))
    except BrokenPipeError:
        sys.exit(int(ExitCode.FAILED))
    except Exception:
        traceback.print_exc()
        click.echo(
            "error: unexpected failure (a bug in recoverctl): the traceback above says where", err=True
        )
        sys.exit(int(ExitCode.FAILED))
    sys.exit(0)
