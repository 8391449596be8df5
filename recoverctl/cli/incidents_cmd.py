"""`recoverctl incidents` [show N | ack N | resolve N | report N]."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option

if TYPE_CHECKING:
    from recoverctl.actions.incidents import IncidentDetail, IncidentReport, IncidentView

STATES = ("active", "open", "acknowledged", "reopened", "resolved")


def _row(i: IncidentView) -> str:
    about = i.service or i.source or i.subject or "-"
    level = f"L{i.escalation_level}"
    return f"{i.id:>4}  {i.state:<12} {i.severity:<8} {level:<3} {i.opened_at:<26} {about:<14} {i.title}"


@click.group("incidents", cls=SuggestingGroup, invoke_without_command=True)
@click.option(
    "--state", type=click.Choice(STATES), help="Only incidents in this state (active: not resolved)."
)
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
@pass_app
@click.pass_context
def incidents_group(ctx: click.Context, app: App, state: str | None, limit: int) -> None:
    """List incidents, newest first: what opened them, their state and escalation level.

    \b
    Example:
      recoverctl incidents --state active
      recoverctl incidents --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from recoverctl.actions.incidents import list_incidents

    rows = list_incidents(app.catalog, state=state, limit=limit)

    def text(rs: list[IncidentView]) -> str:
        if not rs:
            return "no incidents"
        head = f"{'ID':>4}  {'STATE':<12} {'SEVERITY':<8} LVL {'OPENED':<26} {'ABOUT':<14} TITLE"
        return "\n".join([head, *(_row(i) for i in rs)])

    app.render(rows, text)


@incidents_group.command("show")
@click.argument("incident_id", type=int)
@json_option
@pass_app
def show_command(app: App, incident_id: int) -> None:
    """Show incident N with its timeline: alerts, decisions, rollback steps, notifications,
    acknowledgements, escalations, resolution.

    \b
    Example:
      recoverctl incidents show 1 --json
    """
    from recoverctl.actions.incidents import show_incident

    detail = show_incident(app.catalog, incident_id)

    def text(d: IncidentDetail) -> str:
        i = d.incident
        lines = [
            f"incident #{i.id} [{i.state}] {i.severity}: {i.title}",
            f"opened {i.opened_at}; escalation level {i.escalation_level}",
        ]
        if i.acknowledged_at:
            lines.append(f"acknowledged {i.acknowledged_at} by {i.acknowledged_by}")
        if i.resolved_at:
            lines.append(f"resolved {i.resolved_at} by {i.resolved_by}: {i.resolution}")
        lines.append("")
        lines += [f"{t.at}  +{t.offset_s:>9.2f}s  {t.kind:<26} {t.summary}" for t in d.timeline]
        return "\n".join(lines)

    app.render(detail, text)


@incidents_group.command("ack")
@click.argument("incident_id", type=int)
@click.option("--by", metavar="NAME", help="Who acknowledges (default: user@host).")
@json_option
@pass_app
def ack_command(app: App, incident_id: int, by: str | None) -> None:
    """Acknowledge incident N: its escalation stops.

    \b
    Example:
      recoverctl incidents ack 1 --by alice
    """
    from recoverctl.actions.incidents import acknowledge_incident

    view = acknowledge_incident(app.catalog, incident_id, by)
    app.render(view, lambda i: f"incident #{i.id} acknowledged by {i.acknowledged_by} ({i.state})")


@incidents_group.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--note", required=True, help="What was done (goes on the timeline and the report).")
@click.option("--by", metavar="NAME", help="Who resolves (default: user@host).")
@json_option
@pass_app
def resolve_command(app: App, incident_id: int, note: str, by: str | None) -> None:
    """Resolve incident N by hand.

    \b
    Example:
      recoverctl incidents resolve 1 --note "hotfix v3 deployed"
    """
    from recoverctl.actions.incidents import resolve_incident

    view = resolve_incident(app.config, app.catalog, incident_id, note, by)
    app.render(view, lambda i: f"incident #{i.id} resolved by {i.resolved_by}")


@incidents_group.command("report")
@click.argument("incident_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
@json_option
@pass_app
def report_command(app: App, incident_id: int, fmt: str, output: Path | None) -> None:
    """Draft the post-incident report of incident N: timeline, impact, resolution steps, and
    root-cause and preventive sections to complete.

    \b
    Example:
      recoverctl incidents report 1 --format md -o incident-1.md
    """
    from recoverctl.actions.incidents import draft_report

    report = draft_report(app.catalog, incident_id, fmt, output)

    def text(r: IncidentReport) -> str:
        return f"report of incident #{r.incident_id} written to {r.path}" if r.path else r.text.rstrip("\n")

    app.render(report, text)


COMMANDS = [incidents_group]
