"""`recoverctl catalog migrate|info|sync|prune`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from recoverctl.actions.catalog_prune import CatalogPruned, prune_catalog
from recoverctl.actions.catalog_sync import sync_catalog
from recoverctl.catalog import Catalog
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.cli.passphrase import passphrase


@click.group("catalog", cls=SuggestingGroup)
def catalog_group() -> None:
    """recoverctl's own state database (SQLite by default, PostgreSQL for shared setups)."""


@catalog_group.command("migrate")
@json_option
@pass_app
def migrate(app: App) -> None:
    """Create or upgrade the catalog schema (also done automatically on first use).

    \b
    Example:
      RECOVERCTL_CATALOG=postgresql://recoverctl@db/recoverctl recoverctl catalog migrate
    """
    catalog = Catalog.from_config(app.config, migrate=False)
    try:
        before = catalog.current_revision()
        catalog.migrate()
        info = catalog.info()
    finally:
        catalog.close()
    app.render(
        {"url": info["url"], "from": before, "to": info["revision"]},
        f"catalog {info['url']}: {before or 'empty'} -> {info['revision']}",
    )


@catalog_group.command("info")
@json_option
@pass_app
def info(app: App) -> None:
    """Show the catalog URL, schema revision and rows per table.

    \b
    Example:
      recoverctl catalog info --json
    """

    def text(d: dict[str, Any]) -> str:
        lines = [f"url:      {d['url']}", f"revision: {d['revision']} (head {d['head']})", "tables:"]
        lines += [f"  {name:<16} {count}" for name, count in sorted(d["tables"].items())]
        return "\n".join(lines)

    app.render(app.catalog.info(), text)


@catalog_group.command("sync")
@json_option
@pass_app
def catalog_sync(app: App) -> None:
    """Rebuild the catalog's snapshot list from the repository (the source of truth).

    \b
    Example:
      recoverctl catalog sync
    """
    data = sync_catalog(app.config, app.catalog, passphrase(app))
    app.render(
        data,
        lambda r: f"catalog synced: {r.snapshots} snapshots ({r.added} added, {r.removed} removed)",
    )


def _pruned_text(r: CatalogPruned) -> str:
    verb = "would delete" if r.dry_run else "deleted"
    lines = [f"catalog prune: {verb}"]
    for group in ("events", "alerts", "notifications", "wal_outages"):
        cutoff = getattr(r.cutoffs, group)
        older = (
            "kept forever"
            if cutoff is None
            else f"older than {datetime.fromtimestamp(cutoff, UTC):%Y-%m-%d %H:%M} UTC"
        )
        lines.append(f"  {group:<14} {getattr(r.deleted, group):>8}  ({older})")
    return "\n".join(lines)


@catalog_group.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
@pass_app
def catalog_prune(app: App, dry_run: bool) -> None:
    """Delete events, alerts, notification deliveries and ended WAL outages older than
    catalog.retention (90 days by default), except those still needed: undelivered events,
    alerts of running jobs or still firing, rows an incident refers to, outages still open.
    Runs, snapshots, drills, releases, rollbacks and the audit log are never deleted.

    \b
    Example:
      recoverctl catalog prune --dry-run
      recoverctl catalog prune --json
    """
    app.render(prune_catalog(app.config, app.catalog, dry_run=dry_run), _pruned_text)


COMMANDS = [catalog_group]
