"""`recoverctl summary daily|weekly|monthly [--send]`."""

from __future__ import annotations

import click

from recoverctl.actions.summary import Summary, summary
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.errors import PartialError


@click.command("summary")
@click.argument("period", type=click.Choice(["daily", "weekly", "monthly"]))
@click.option(
    "--send",
    is_flag=True,
    help="Send it (text + HTML email, Slack text) to the info route (routes.info, or email).",
)
@click.option("--dry-run", is_flag=True, help="With --send: show the channels it would go to; send nothing.")
@json_option
@pass_app
def summary_cmd(app: App, period: str, send: bool, dry_run: bool) -> None:
    """Summarize the last day, week or month: backups, RPO exposure, drills, deploys, rollbacks,
    notifications. Weekly and monthly reports add each drill's RTO/RPO trend and the targets
    missed (the monthly one covers the same day of the previous month up to now).

    \b
    Example:
      recoverctl summary daily
      recoverctl summary weekly --send
      recoverctl summary monthly --json
    """
    data = summary(app.config, app.catalog, period, send=send, dry_run=dry_run)

    def text(d: Summary) -> str:
        lines = [d.text]
        for x in d.deliveries:
            error = getattr(x, "error", None)
            lines.append(f"sent to {x.channel}: {x.status}" + (f" ({error})" if error else ""))
        return "\n".join(lines)

    app.render(data, text)
    failed = [x.channel for x in data.deliveries if x.status == "failed"]
    if failed:
        raise PartialError(
            f"the summary could not be sent to {', '.join(failed)}", hint="see the errors above"
        )


COMMANDS = [summary_cmd]
