"""`recoverctl scheduler init|run|install|status` and `recoverctl run-job NAME`."""

from __future__ import annotations

import time

import click

from recoverctl.actions.schedules import (
    Installed,
    NotRun,
    SchedulerStatus,
    install,
    run_occurrence,
    scheduler_status,
)
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.config import parse_duration
from recoverctl.errors import UsageError
from recoverctl.scheduler.defaults import DEFAULT_SCHEDULE_YAML
from recoverctl.scheduler.execute import JobResult
from recoverctl.units import human_duration


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group("scheduler", cls=SuggestingGroup)
def scheduler_group() -> None:
    """Run scheduled jobs: a long-running loop, or cron/systemd calling `run-job`."""


@scheduler_group.command("init")
@json_option
@pass_app
def init(app: App) -> None:
    """Print the runbook's default schedule as YAML to paste into the config.

    \b
    Example:
      recoverctl scheduler init >> /etc/recoverctl/recoverctl.yaml
    """
    app.render({"yaml": DEFAULT_SCHEDULE_YAML}, DEFAULT_SCHEDULE_YAML.rstrip())


@scheduler_group.command("run")
@click.option("--poll", default="1s", show_default=True, callback=_duration, help="Loop interval.")
@click.option(
    "--lease",
    default="60s",
    show_default=True,
    callback=_duration,
    help="Lease on a claimed run; renewed while it runs, so a dead runner's job is abandoned after it.",
)
@click.option(
    "--metrics-textfile", metavar="PATH", help="Write Prometheus metrics here (node_exporter textfile)."
)
@json_option
@pass_app
def run(app: App, poll: float, lease: float, metrics_textfile: str | None) -> None:
    """Run due jobs until SIGTERM; several runners may share one catalog (each job runs once).

    SIGTERM stops claiming and lets running jobs finish within their timeout.

    \b
    Example:
      RECOVERCTL_CATALOG=postgresql://recoverctl@db/recoverctl recoverctl scheduler run \\
          --metrics-textfile /var/lib/node_exporter/recoverctl.prom
    """
    from recoverctl.scheduler.loop import SchedulerLoop

    cfg = app.config
    if not [s for s in cfg.schedules if s.enabled]:
        raise UsageError("no enabled schedules", hint="add 'schedules:' (see 'recoverctl scheduler init')")
    loop = SchedulerLoop(cfg, app.catalog, poll=poll, lease=lease, metrics_textfile=metrics_textfile)
    result = loop.run()
    app.render(result, lambda r: f"scheduler {r.runner} stopped after starting {len(r.started)} job(s)")


@scheduler_group.command("install")
@click.option("--cron", "mode", flag_value="cron", help="Crontab lines calling run-job.")
@click.option("--systemd", "mode", flag_value="systemd", help="systemd service + timer per schedule.")
@click.option(
    "--user", is_flag=True, help="systemd user units (~/.config/systemd/user) instead of system ones."
)
@click.option("--print", "print_only", is_flag=True, help="Print instead of installing.")
@click.option("--dir", "directory", metavar="DIR", help="Write systemd units here instead of the default.")
@click.option("--dry-run", is_flag=True, help="Same as --print: show what would be installed.")
@json_option
@pass_app
def install_cmd(
    app: App, mode: str | None, user: bool, print_only: bool, directory: str | None, dry_run: bool
) -> None:
    """Install (or --print) crontab lines or systemd units that call `recoverctl run-job NAME`.

    \b
    Example:
      recoverctl scheduler install --cron --print
      sudo recoverctl scheduler install --systemd
    """
    if mode is None:
        raise UsageError("choose --cron or --systemd")
    result = install(
        app.config, mode=mode, user=user, print_only=print_only, directory=directory, dry_run=dry_run
    )

    def text(r: Installed) -> str:
        if r.mode == "cron":
            return (r.crontab or "").rstrip() + ("\n# installed into the crontab" if r.installed else "")
        units = r.units or {}
        if not r.installed:
            return "\n".join(f"# --- {name}\n{body}" for name, body in units.items()).rstrip()
        return f"wrote {len(units)} unit(s) to {r.directory}\nnext: {r.next}"

    app.render(result, text)


@scheduler_group.command("status")
@click.option("--limit", default=20, show_default=True, help="Recent runs to show.")
@json_option
@pass_app
def status(app: App, limit: int) -> None:
    """Show scheduler heartbeats and the most recent scheduled runs.

    \b
    Example:
      recoverctl scheduler status --json
    """
    data = scheduler_status(app.catalog, limit)

    def text(d: SchedulerStatus) -> str:
        lines = [f"runner {b.name}: {b.details.get('state')} ({d.age_s(b)}s ago)" for b in d.heartbeats]
        lines += [
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r.due_at))}  "
            f"{r.schedule:<24} {r.state:<10} {r.runner or ''}"
            for r in d.runs
        ]
        return "\n".join(lines) or "no scheduler has run yet"

    app.render(data, text)


@click.command("run-job")
@click.argument("name")
@click.option(
    "--now",
    "now_as_due",
    is_flag=True,
    help="Run now as an extra occurrence instead of the current cron occurrence.",
)
@click.option(
    "--lease", default="60s", show_default=True, callback=_duration, help="Lease on the claimed run."
)
@click.option("--metrics-textfile", metavar="PATH", help="Write Prometheus metrics here after the run.")
@json_option
@pass_app
def run_job_cmd(app: App, name: str, now_as_due: bool, lease: float, metrics_textfile: str | None) -> None:
    """Run one scheduled job with the scheduler's lease, recording and notifications (cron mode).

    The occurrence is the latest cron time at or before now: the same line on several hosts runs
    the job once; the others report it as taken and exit 0. A failed job exits with its exit code.

    \b
    Example:
      recoverctl run-job hourly-incremental
    """
    result = run_occurrence(
        app.config, app.catalog, name, lease=lease, now_as_due=now_as_due, metrics_textfile=metrics_textfile
    )

    def text(r: JobResult | NotRun) -> str:
        if isinstance(r, NotRun):
            return f"{name}: not run ({r.state}: {r.detail})"
        return f"{name}: {r.state} in {human_duration(r.duration)} (exit {r.exit_code})"

    app.render(result, text)


COMMANDS = [scheduler_group, run_job_cmd]
