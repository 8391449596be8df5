"""The `catalog:` key: the catalog's URL, or a mapping with the URL and how long history is kept.

```yaml
catalog: postgresql://recoverctl@db/recoverctl          # the URL alone: history kept 90 days
catalog:
  url: postgresql://recoverctl@db/recoverctl
  retention: {events: 90d, alerts: 180d, notifications: 30d}   # null keeps that group forever
```
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from recoverctl.config.base import Duration, Model

# The runbook's log retention.
DEFAULT_HISTORY = 90 * 86400.0


class CatalogRetention(Model):
    """How long `catalog prune` keeps each group of history rows, in seconds; None keeps them all."""

    events: Duration | None = Field(default=DEFAULT_HISTORY, gt=0)
    alerts: Duration | None = Field(default=DEFAULT_HISTORY, gt=0)
    notifications: Duration | None = Field(default=DEFAULT_HISTORY, gt=0)
    wal_outages: Duration | None = Field(default=DEFAULT_HISTORY, gt=0)  # ended ones only


class CatalogSection(Model):
    """`catalog:` written as a mapping."""

    url: str | None = None
    retention: CatalogRetention = Field(default_factory=CatalogRetention)


# Where the mapping is validated; errors name it `catalog` (loading._visible_loc).
SECTION_FIELD = "catalog_settings"


def split_catalog_key(data: Any) -> Any:
    """Given the raw config mapping, return it with a `catalog:` mapping validated as
    `catalog_settings` and its URL (when it is text) as `catalog`, the one every caller reads."""
    if not isinstance(data, dict) or not isinstance(data.get("catalog"), dict):
        return data
    section = data["catalog"]
    url = section.get("url")
    return {**data, "catalog": url if isinstance(url, str) else None, SECTION_FIELD: section}
