"""The `recoverctl` command: global options, command registry, and the error → exit code contract."""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import signal
import sys
import threading
import traceback
from types import FrameType

import click

from recoverctl import __version__
from recoverctl.cli.context import App
from recoverctl.cli.options import SuggestingGroup
from recoverctl.errors import ExitCode, RecoverctlError
from recoverctl.interrupts import interrupt, stop_requested
from recoverctl.logs import setup_logging
from recoverctl.repo.malloc_tuning import tune_malloc

# At exit the interpreter runs the cycle collector over every object and module a command loaded:
# ~0.15 s of an unchanged re-backup here. Frozen (permanent generation) they are skipped; objects
# are still released by reference counting, and the other atexit handlers have run by then.
atexit.register(gc.freeze)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Command name → the modules that define or extend it. Modules are imported only when their
# command runs, so `wal push` (run by PostgreSQL once per WAL segment) and every other command
# start without importing the whole tool. A new capability adds its lines here.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "alerts": ("serve_cmd",),
    "audit": ("audit_cmd",),
    "backup": ("backup_cmd", "postgres_cmd"),
    "cat": ("browse_cmd",),
    "catalog": ("catalog_cmd",),
    "completion": ("completion_cmd",),
    "config": ("config_cmd",),
    "copy": ("copy_cmd",),
    "deploy": ("deploy_cmd",),
    "diff": ("browse_cmd",),
    "drill": ("drill_cmd",),
    "dump": ("browse_cmd",),
    "forget": ("forget_cmd",),
    "incidents": ("incidents_cmd",),
    "init": ("repo_cmd",),
    "key": ("repo_cmd",),
    "ls": ("browse_cmd",),
    "man": ("man_cmd",),
    "notify": ("notify_cmd",),
    "postgres": ("postgres_cmd",),
    "prune": ("forget_cmd",),
    "release": ("releases_cmd",),
    "releases": ("releases_cmd",),
    "repair": ("verify_cmd",),
    "restore": ("browse_cmd", "postgres_cmd"),
    "rollback": ("rollback_cmd",),
    "run-job": ("scheduler_cmd",),
    "scheduler": ("scheduler_cmd",),
    "serve": ("serve_cmd",),
    "snapshots": ("browse_cmd",),
    "status": ("status_cmd",),
    "storage": ("storage_cmd",),
    "summary": ("summary_cmd",),
    "unlock": ("repo_cmd",),
    "verify": ("verify_cmd",),
    "wal": ("wal_cmd",),
    "worker": ("serve_cmd",),
}


def _load(name: str) -> click.Command | None:
    found: click.Command | None = None
    for module_name in COMMAND_MODULES.get(name, ()):
        module = importlib.import_module(f"recoverctl.cli.{module_name}")
        for command in module.COMMANDS:
            if command.name == name:
                found = command
    return found


class LazyGroup(SuggestingGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
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
@click.option("--no-color", is_flag=True, help="No colours even on a terminal (as NO_COLOR=1 does).")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    as_json: bool,
    log_json: bool,
    verbose: int,
    quiet: bool,
    no_color: bool,
) -> None:
    """Back up a PostgreSQL-backed web stack, prove it restores, and roll bad deployments back.

    \b
    Example:
      export RECOVERCTL_REPOSITORY=/srv/backups RECOVERCTL_PASSWORD_FILE=~/.recoverctl-pass
      recoverctl storage check /srv/backups
    """
    if no_color or os.environ.get("NO_COLOR"):
        ctx.color = False  # every subcommand's context inherits it, and click.echo strips styles
        # Rich (progress lines) and the programs recoverctl runs read the convention itself.
        os.environ["NO_COLOR"] = "1"
    app = App(config_path=config_path, json=as_json, log_json=log_json, verbosity=-1 if quiet else verbose)
    ctx.obj = app
    ctx.call_on_close(app.close)
    setup_logging(app.verbosity, log_json)


def colour_wanted(args: list[str]) -> bool | None:
    """Given the command line, return False when colour is turned off (`--no-color`, or NO_COLOR
    set and not empty: https://no-color.org), else None (click's default: colour on a terminal)."""
    return False if "--no-color" in args or os.environ.get("NO_COLOR") else None


def _emit_error(err: RecoverctlError, as_json: bool, color: bool | None) -> None:
    if as_json:
        click.echo(json.dumps(err.to_dict(), default=str), err=True)
        return
    click.secho(f"error: {err.message}", fg="red", err=True, color=color)
    for note in getattr(err, "__notes__", ()):
        click.echo(f"note: {note}", err=True)
    if err.hint:
        click.echo(f"hint: {err.hint}", err=True)


def _keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    # Python's own SIGINT handler, except that it waits for a catalog transaction to end.
    stop_requested.set()
    interrupt(KeyboardInterrupt())


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the documented exit code."""
    tune_malloc()  # before any thread makes its own heap (repo/malloc_tuning.py)
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    # Only where Python's own handler is in place: an ignored SIGINT (nohup, `cmd &` in a
    # script) stays ignored, and a caller's own handler stays theirs.
    replace = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    stop_requested.clear()  # in-process callers (tests) run many commands in one process
    if replace:
        signal.signal(signal.SIGINT, _keyboard_interrupt)
    try:
        _run(args, as_json)
    finally:
        if replace:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(args: list[str], as_json: bool) -> None:
    try:
        cli.main(args=args, prog_name="recoverctl", standalone_mode=False)
    except RecoverctlError as e:
        _emit_error(e, as_json, colour_wanted(args))
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
