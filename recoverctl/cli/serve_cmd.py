"""`recoverctl serve`, `recoverctl worker`, `recoverctl alerts`."""

from __future__ import annotations

import signal
import time

import click

from recoverctl.actions.alert_intake import DECISIONS, StoredDecision, list_decisions
from recoverctl.cli.context import App, pass_app
from recoverctl.config import parse_duration
from recoverctl.service.worker import Worker


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # `recoverctl alerts --json` as well as `recoverctl --json alerts`.
    if value:
        ctx.find_object(App).json = True  # type: ignore[union-attr]


json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_json_flag, help="Machine-readable output."
)


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default: serve.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: serve.port, 8035).")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Job threads in this process (default: serve.workers; 0 = leave jobs to 'recoverctl worker').",
)
@click.option("--dry-run", is_flag=True, help="Record every decision but act on none (all policies dry-run).")
@click.option("--access-log", is_flag=True, help="Log every HTTP request.")
@pass_app
def serve(
    app: App, host: str | None, port: int | None, workers: int | None, dry_run: bool, access_log: bool
) -> None:
    """Receive Alertmanager/Grafana/generic webhooks and turn alerts into safe actions.

    Endpoints: POST /hooks/alertmanager, /hooks/grafana, /hooks/generic; GET /health, /metrics,
    /api/alerts, /api/jobs/ID, /openapi.json. Refuses a non-loopback --host unless serve.auth is
    configured. Accepted work is queued in the catalog and run by worker threads (here or in
    'recoverctl worker'), so a job accepted before a crash runs after restart.

    \b
    Example:
      echo "$(openssl rand -hex 32)" > /etc/recoverctl/webhook-token
      recoverctl serve --host 0.0.0.0 --port 8035
    """
    from recoverctl.service.server import build_state, run_server

    cfg = app.config
    host = host or cfg.serve.host
    state = build_state(
        cfg,
        app.catalog,
        workers=cfg.serve.workers if workers is None else workers,
        dry_run=dry_run,
        host=host,
    )
    run_server(state, host, port or cfg.serve.port, access_log=access_log)


@click.command("worker")
@click.option("--concurrency", type=int, default=None, help="Job threads (default: serve.workers).")
@click.option("--once", is_flag=True, help="Run the queued jobs, then exit.")
@json_option
@pass_app
def worker(app: App, concurrency: int | None, once: bool) -> None:
    """Run jobs from the persistent queue (what webhooks accepted) until stopped.

    Several workers (and serve processes) may run against one catalog: each job is claimed by
    exactly one of them with a lease; a job whose worker died is requeued or abandoned.

    \b
    Example:
      recoverctl worker --concurrency 2
      recoverctl worker --once --json
    """
    cfg = app.config
    w = Worker(
        cfg,
        app.catalog,
        concurrency=concurrency or cfg.serve.workers,
        lease=cfg.serve.lease,
        poll_interval=cfg.serve.poll_interval,
    )
    if once:
        done = w.run_until_idle()
        summary = [
            {k: j.get(k) for k in ("id", "kind", "state", "error", "attempts")}
            | {"target": j["payload"].get("target")}
            for j in done
        ]
        app.render(
            summary,
            lambda d: (
                "\n".join(f"job {j['id']} {j['kind']} {j['target']}: {j['state']}" for j in d)
                or "no queued jobs"
            ),
        )
        return
    # The handler only records the signal: calling Event.set() from a handler can deadlock on the
    # Event's own lock when the signal lands while the main thread holds it inside wait().
    signalled: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    w.start()
    while not signalled:
        time.sleep(0.2)
    w.stop()
    app.render({"jobs_run": w.jobs_run}, f"worker stopped after {w.jobs_run} job(s)")


@click.command("alerts")
@click.option("--limit", type=int, default=50, show_default=True, help="Newest N decisions.")
@click.option(
    "--since", default=None, metavar="DURATION", help="Only decisions in the last DURATION (e.g. 2h)."
)
@click.option("--decision", type=click.Choice(DECISIONS), default=None, help="Only this decision.")
@click.option("--service", default=None, help="Only this service.")
@json_option
@pass_app
def alerts(app: App, limit: int, since: str | None, decision: str | None, service: str | None) -> None:
    """Show what recoverctl decided for each alert it received, and why.

    Decisions: acted (a job was queued), deduplicated, suppressed (cooldown, cap, conditions,
    dry-run...), ignored (no policy, resolved, unknown service), rejected (auth, malformed).

    \b
    Example:
      recoverctl alerts --since 24h --decision acted --json
    """
    try:
        window = parse_duration(since) if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    rows = list_decisions(app.catalog, limit=limit, since=window, decision=decision, service=service)

    def text(d: list[StoredDecision]) -> str:
        if not d:
            return "no alert decisions recorded"
        lines = []
        for r in d:
            job = f" job {r.job_id}" if r.job_id else ""
            lines.append(
                f"{r.received_at}  {r.source:<12} {r.alertname or '-':<20} "
                f"{r.service or '-':<12} {r.decision:<12}{job}  {r.reason}"
            )
        return "\n".join(lines)

    app.render(rows, text)


COMMANDS = [serve, worker, alerts]
