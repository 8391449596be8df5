"""`recoverctl deploy SERVICE VERSION`."""

from __future__ import annotations

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import json_option
from recoverctl.units import human_duration


@click.command("deploy")
@click.argument("service")
@click.argument("version")
@click.option(
    "--no-verify", is_flag=True, help="Do not run the health check (the release is marked unverified)."
)
@click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")
@json_option
@pass_app
def deploy_command(app: App, service: str, version: str, no_verify: bool, dry_run: bool) -> None:
    """Deploy VERSION of SERVICE: restore point, migrations, start, verify, retire old releases.

    If the health check fails the previous version is started again, the release is marked
    failed and the exit code is 13. Docker images are tags of the service's `image`; an image
    missing from the engine is pulled.

    \b
    Example:
      recoverctl deploy web v2
      recoverctl deploy web v2 --no-verify --json
    """
    from recoverctl.actions.deploy import DeployPlanned, DeployResult, deploy

    result = deploy(app.config, app.catalog, service, version, verify=not no_verify, dry_run=dry_run)

    def text(r: DeployResult | DeployPlanned) -> str:
        if isinstance(r, DeployPlanned):
            return (
                f"would deploy {r.service} {r.version} (now: {r.previous or 'nothing'}) "
                f"on {r.target}; restore point: {'yes' if r.restore_point else 'no'}; "
                f"migrate to: {r.migrate_to or '-'}; verify: {'yes' if r.verify else 'no'}"
            )
        steps = ", ".join(f"{s['name']} {human_duration(s['seconds'])}" for s in r.steps)
        note = "" if r.verified else " (NOT verified)"
        return f"{r.service} {r.version} is live{note} in {human_duration(r.duration_s)} ({steps})"

    app.render(result, text)


COMMANDS = [deploy_command]
