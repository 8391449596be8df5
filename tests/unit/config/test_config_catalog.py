"""The `catalog:` key: a URL, or a mapping with the URL and the history retention."""

from __future__ import annotations

import pytest

from recoverctl.config import DEFAULT_HISTORY, parse_config
from recoverctl.errors import ConfigError


def test_catalog_as_url_or_mapping() -> None:
    plain = parse_config({"catalog": "/var/lib/recoverctl/c.db"}, env={})
    assert plain.catalog == "/var/lib/recoverctl/c.db"
    assert plain.catalog_retention.events == plain.catalog_retention.alerts == DEFAULT_HISTORY
    mapped = parse_config(
        {"catalog": {"url": "/c.db", "retention": {"events": "30d", "alerts": None}}},
        env={"RECOVERCTL_CATALOG": "postgresql://db/rc"},
    )
    assert mapped.catalog == "postgresql://db/rc", "the variable replaces the URL only"
    keep = mapped.catalog_retention
    assert (keep.events, keep.alerts, keep.notifications) == (30 * 86400, None, DEFAULT_HISTORY)


def test_catalog_mapping_errors_name_the_key_and_never_echo_the_file() -> None:
    bad = {"catalog": {"url": "/c.db", "retain": 1}, "repository": {"url": "/r", "password_file": "/p"}}
    with pytest.raises(ConfigError) as e:
        parse_config(bad, env={})
    assert "catalog.retain: unknown key, did you mean 'retention'?" in e.value.message
    assert "/p" not in e.value.message
    with pytest.raises(ConfigError, match=r"catalog\.retention\.events: Input should be greater than 0"):
        parse_config({"catalog": {"retention": {"events": "0s"}}}, env={})
