"""`recoverctl notify test|deliver`."""

from __future__ import annotations

from collections.abc import Sequence

import click

from recoverctl.actions.deliver import PlannedDelivery, send_test
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.errors import PartialError, RecoverctlError
from recoverctl.notify.delivery import Delivery, DeliveryReport, deliver_pending


@click.group("notify", cls=SuggestingGroup)
def notify_group() -> None:
    """Notification channels: Slack, email, SMS, voice calls, PagerDuty, webhooks."""


def _result_lines(results: Sequence[Delivery | PlannedDelivery]) -> str:
    lines = []
    for r in results:
        extra = f" ({r.attempts} attempt(s))" if r.attempts else ""
        err = f": {r.error}" if r.error else ""
        lines.append(f"{r.channel:<20} {r.channel_type:<10} {r.status}{extra}{err}")
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
    app.render(result, lambda r: _result_lines(r.results))
    failed = [r for r in result.results if r.status == "failed"]
    if failed and len(failed) == len(result.results):
        raise RecoverctlError(
            f"test notification failed on every channel ({', '.join(r.channel for r in failed)})",
            hint="check the URLs, credentials and reachability shown above",
        )
    if failed:
        raise PartialError(
            f"test notification failed on {', '.join(r.channel for r in failed)}",
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

    def text(r: DeliveryReport) -> str:
        head = (
            f"{r.events} event(s): {r.sent} delivered, {r.failed} failed, "
            f"{r.collected_for_summary} kept for the daily summary"
        )
        return "\n".join([head, _result_lines(r.deliveries)]).rstrip()

    app.render(result, text)


COMMANDS = [notify_group]
