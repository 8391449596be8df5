"""`recoverctl drill run|history|report`."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option, repo_option, use_repository
from recoverctl.errors import VerificationError
from recoverctl.units import human_duration

if TYPE_CHECKING:
    from recoverctl.actions.drill import DrillResult

# Actions are imported inside the commands: psycopg & co. stay off every other command's start-up.

_COLOUR = {"green": "green", "amber": "yellow", "red": "red", "pass": "green", "fail": "red"}


@click.group("drill", cls=SuggestingGroup)
def drill_group() -> None:
    """Restore drills: restore into a scratch cluster, run checks, score RTO/RPO against targets."""


def _drill_text(d: DrillResult) -> str:
    from dataclasses import asdict

    from recoverctl.drill.report import summary_rows

    colour = _COLOUR.get(d.verdict, "yellow")
    lines = [click.style(f"drill {d.name}: {d.verdict.upper()}", fg=colour, bold=True)]
    if d.reason:
        lines.append(f"  reason: {d.reason}")
    lines += [f"  {k}: {v}" for k, v in summary_rows(asdict(d))[2:]]
    lines.append("  phases: " + ", ".join(f"{k} {human_duration(v)}" for k, v in d.phases.items()))
    for c in d.checks:
        mark = click.style("ok  ", fg="green") if c["ok"] else click.style("FAIL", fg="red")
        first = str(c["output"]).splitlines()[0] if c["output"] else ""
        lines.append(f"  [{mark}] {c['name']}: {first}")
    return "\n".join(lines)


@drill_group.command("run")
@click.argument("playbooks", nargs=-1, type=click.Path())
@click.option(
    "--keep", is_flag=True, help="Keep the scratch data dir (the server is stopped) for inspection."
)
@click.option(
    "--cold", is_flag=True, help="Read only from the repository (no local caches), as after losing the host."
)
@json_option
@repo_option
@pass_app
def run_cmd(app: App, playbooks: tuple[str, ...], keep: bool, cold: bool) -> None:
    """Restore each PLAYBOOK's snapshot into a scratch cluster, run its checks and score RTO/RPO.

    PLAYBOOK is a YAML file or a directory (default: ./playbooks and playbooks/ beside the config
    file). Exit 13 when a drill fails (a check failed or RTO/RPO missed its target), 130 when
    interrupted; the scratch cluster and temp files are removed in every case unless --keep.

    \b
    Example:
      recoverctl drill run playbooks/main-nightly.yaml
      recoverctl drill run --cold --json playbooks/ > drill.json
    """
    from recoverctl.actions.drill import drill_run
    from recoverctl.cli.passphrase import passphrase

    if not app.config.repository_chosen:
        # Weekly drills alternate repositories, so each copy is proven restorable, not just present.
        use_repository(app, app.config.drill_rotation(time.time()))

    def progress(name: str, phase: str) -> None:
        if app.show_progress:
            click.echo(f"{name}: {phase}...", err=True)

    results = drill_run(
        app.config,
        app.catalog,
        lambda: passphrase(app),
        list(playbooks),
        keep=keep,
        cold=cold,
        on_phase=progress,
        progress=app.progress,
    )
    data: Any = (
        results[0]
        if len(results) == 1 and len(playbooks) == 1 and not Path(playbooks[0]).is_dir()
        else results
    )
    app.render(data, lambda _: "\n".join(_drill_text(r) for r in results))
    failed = [r for r in results if r.verdict != "pass"]
    if failed:
        raise VerificationError(
            f"{len(failed)} of {len(results)} drill(s) failed: "
            + "; ".join(f"{r.name}: {r.reason}" for r in failed),
            hint="read the report: recoverctl drill report " + str(failed[0].id),
        )


@drill_group.command("history")
@click.option("--name", help="Only drills of this playbook name.")
@click.option("--source", help="Only drills of this source.")
@click.option("--limit", default=30, show_default=True, help="Newest N drills.")
@json_option
@pass_app
def history_cmd(app: App, name: str | None, source: str | None, limit: int) -> None:
    """Show past drills oldest first: verdict, RTO and RPO with the margin to target.

    \b
    Example:
      recoverctl drill history --source main --limit 10
    """
    from recoverctl.actions.drill import DrillHistoryEntry, drill_history

    rows = drill_history(app.catalog, name=name, source=source, limit=limit)

    def text(rs: list[DrillHistoryEntry]) -> str:
        if not rs:
            return "no drills recorded yet: run 'recoverctl drill run PLAYBOOK'"
        out = [
            f"{'#':>4}  {'started (UTC)':19}  {'name':20} {'verdict':8} "
            f"{'RTO':>8} {'margin':>8} {'RPO':>8} {'margin':>8}"
        ]
        from datetime import datetime

        for r in rs:
            started = datetime.fromtimestamp(r.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            verdict = r.verdict or ""
            out.append(
                f"{r.id:>4}  {started:19}  {r.name[:20]:20} "
                + click.style(f"{verdict:8}", fg=_COLOUR.get(verdict, "yellow"))
                + f" {human_duration(r.rto_s):>8} {human_duration(r.rto_margin_s):>8}"
                f" {human_duration(r.rpo_s):>8} {human_duration(r.rpo_margin_s):>8}"
            )
        return "\n".join(out)

    app.render(rows, text)


@drill_group.command("report")
@click.argument("drill_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@json_option
@pass_app
def report_cmd(app: App, drill_id: int, fmt: str, output: str | None) -> None:
    """Write the report of drill DRILL_ID: phases, checks with outputs, RTO/RPO trend.

    The HTML report is self-contained, with an inline SVG chart of RTO/RPO over time.

    \b
    Example:
      recoverctl drill report 42 --format html -o drill-42.html
    """
    from recoverctl.actions.drill import drill_report

    text = drill_report(app.catalog, drill_id, fmt)
    if output:
        Path(output).write_text(text)
        app.render({"id": drill_id, "format": fmt, "path": output}, f"wrote {output}")
    elif app.json and fmt != "json":
        app.render({"id": drill_id, "format": fmt, "report": text})
    else:
        click.echo(text, nl=False)


COMMANDS = [drill_group]
