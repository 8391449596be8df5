"""`recoverctl releases SERVICE` and `recoverctl release record SERVICE VERSION`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option

if TYPE_CHECKING:
    from recoverctl.catalog.releases import Release


@click.command("releases")
@click.argument("service")
@json_option
@pass_app
def releases_command(app: App, service: str) -> None:
    """List the releases of SERVICE, newest first, with status, image and schema revision.

    \b
    Example:
      recoverctl releases web --json
    """
    from recoverctl.actions.releases import list_releases

    rows = list_releases(app.config, app.catalog, service)

    def text(rs: list[Release]) -> str:
        if not rs:
            return f"no releases of {service}"
        lines = [f"{'ID':>4}  {'VERSION':<16} {'STATUS':<12} {'CREATED':<26} {'SCHEMA':<12} ARTIFACT"]
        for r in rs:
            lines.append(
                f"{r.id:>4}  {r.version:<16} {r.status:<12} {r.created:<26} "
                f"{r.schema_revision or '-':<12} {r.image or r.release_dir or '-'}"
            )
        return "\n".join(lines)

    app.render(rows, text)


@click.group("release", cls=SuggestingGroup)
def release_group() -> None:
    """Record releases made by other tools."""


@release_group.command("record")
@click.argument("service")
@click.argument("version")
@click.option("--image", metavar="REF", help="Image reference (docker services; default IMAGE:VERSION).")
@click.option("--schema-revision", metavar="REV", help="alembic head revision of this version.")
@click.option("--script-location", metavar="DIR", help="Where this version's alembic scripts are.")
@click.option("--restore-point", metavar="NAME", help="Restore point taken before migrating.")
@click.option("--dry-run", is_flag=True, help="Show the release that would be recorded.")
@json_option
@pass_app
def record_command(
    app: App,
    service: str,
    version: str,
    image: str | None,
    schema_revision: str | None,
    script_location: str | None,
    restore_point: str | None,
    dry_run: bool,
) -> None:
    """Record VERSION of SERVICE as live (deployed by CI or another tool) so it can be rolled back.

    \b
    Example:
      recoverctl release record web v42 --image registry.local/web:v42 --schema-revision 3f2a
    """
    from recoverctl.actions.releases import record_release

    row = record_release(
        app.config,
        app.catalog,
        service,
        version,
        image=image,
        schema_revision=schema_revision,
        script_location=script_location,
        restore_point=restore_point,
        dry_run=dry_run,
    )
    app.render(row, lambda r: f"{'would record' if dry_run else 'recorded'} {service} {version} as live")


COMMANDS = [releases_command, release_group]
