"""`recoverctl status`: green/amber/red per source and service; exit 13 when a target is breached."""

from __future__ import annotations

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.errors import VerificationError

_MARK = {"green": "●", "amber": "▲", "red": "✘"}
_COLOUR = {"green": "green", "amber": "yellow", "red": "red"}


@click.command("status")
@json_option
@pass_app
def status_cmd(app: App) -> None:
    """One screen for on-call: backups, RPO exposure, drills, repository, releases; green/amber/red.

    Exit 0 when nothing is red, 13 when any target is breached (usable as a monitoring check).

    \b
    Example:
      recoverctl status
      recoverctl status --json | jq '.sources[] | {source, status, reasons}'
    """
    from recoverctl.actions.status import Status
    from recoverctl.actions.status import status as status_action

    data = status_action(app.config, app.catalog)

    def paint(s: str) -> str:
        return click.style(f"{_MARK[s]} {s:5}", fg=_COLOUR[s])

    def text(d: Status) -> str:
        out = [
            f"overall {paint(d.status)}",
            f"repository {paint(d.repository.status)} {d.repository.reason}",
        ]
        for s in d.sources:
            out.append(f"source {s.source} ({s.type}, {s.tier}) {paint(s.status)}")
            for key, item in s.items.items():
                out.append(f"  {key:18} {paint(item.status)} {item.reason}")
        for c in d.copies:
            out.append(f"copy {c.name} {paint(c.status)} {c.reason}")
        for svc in d.services:
            out.append(f"service {svc.service} {paint(svc.status)} {'; '.join(svc.reasons)}")
        sched = d.scheduler
        out.append(f"scheduler {paint(sched.status)} {sched.reason}")
        return "\n".join(out)

    app.render(data, text)
    if data.breached:
        reds = [f"{s.source}: {'; '.join(s.reasons)}" for s in data.sources if s.status == "red"]
        reds += [f"{s.service}: {'; '.join(s.reasons)}" for s in data.services if s.status == "red"]
        reds += [f"copy {c.name}: {c.reason}" for c in data.copies if c.status == "red"]
        if data.repository.status == "red":
            reds.append(f"repository: {data.repository.reason}")
        raise VerificationError(
            "targets breached: " + " | ".join(reds),
            hint="act on the red items above, then rerun 'recoverctl status'",
        )


COMMANDS = [status_cmd]
