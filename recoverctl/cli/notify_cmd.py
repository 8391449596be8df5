"""`recoverctl notify test|deliver`."""

from __future__ import annotations

from typing import Any

import click

from recoverctl.actions.deliver import send_test
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.errors import PartialError, RecoverctlError
from recoverctl.notify.delivery import deliver_pending


@click.group("notify")
def notify_group() -> None:
    """Notification channels: Slack, email, SMS, voice calls, PagerDuty, webhooks."""


def _result_lines(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        extra = f" ({r['attempts']} attempt(s))" if r.get("attempts") else ""
        err = f": {r['error']}" if r.get("error") else ""
        lines.append(f"{r['channel']:<20} {r['channel_type']:<10} {r['status']}{extra}{err}")
    return "\n".join(lines)


@notify_group.command("test")
@click.option("--channel", metavar="NAME", help="Only this channel (default: the route of --severity).")
@click.option(
    "--severity",
    type=click.Choice(["critical", "warning", "info"]),
    default="warning",
    show_default=True,
    help="Severity of the test message, and the route used without --channel.",
)
@click.option("--dry-run", is_flag=True, help="Show which channels would be sent to; send nothing.")
@json_option
@pass_app
def test(app: App, channel: str | None, severity: str, dry_run: bool) -> None:
    """Send a test message and report per-channel results (exit 3 if some failed, 1 if all).

    \b
    Example:
      recoverctl notify test --channel slack-alerts --severity critical
      recoverctl notify test --severity warning --json
    """
    result = send_test(app.config, app.catalog, channel, severity, dry_run)
    app.render(result, lambda d: _result_lines(d["results"]))
    failed = [r for r in result["results"] if r["status"] == "failed"]
    if failed and len(failed) == len(result["results"]):
        raise RecoverctlError(
            f"test notification failed on every channel ({', '.join(r['channel'] for r in failed)})",
            hint="check the URLs, credentials and reachability shown above",
        )
    if failed:
        raise PartialError(
            f"test notification failed on {', '.join(r['channel'] for r in failed)}",
            hint="the other channels delivered; fix the failing ones",
        )


@notify_group.command("deliver")
@json_option
@pass_app
def deliver(app: App) -> None:
    """Send events recorded in the catalog that were not delivered yet (the scheduler does this too).

    \b
    Example:
      recoverctl notify deliver --json
    """
    result = deliver_pending(app.config, app.catalog)

    def text(d: dict[str, Any]) -> str:
        head = (
            f"{d['events']} event(s): {d['sent']} delivered, {d['failed']} failed, "
            f"{d['collected_for_summary']} kept for the daily summary"
        )
        return "\n".join([head, _result_lines(d["deliveries"])]).rstrip()

    app.render(result, text)


COMMANDS = [notify_group]
