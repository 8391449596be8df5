"""`sources.<name>.backup_from` and `standby:`: typos and a missing standby are named at load."""

from __future__ import annotations

import pytest

from recoverctl.config import PostgresSource, parse_config, redacted_dump
from recoverctl.errors import ConfigError
from recoverctl.sources.postgres.standby import standby_source


def _source(**extra: object) -> dict[str, object]:
    return {"sources": {"main": {"type": "postgres", "host": "db1", "password": "pw", **extra}}}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"backup_from": "standby"}, "backup_from: standby needs a 'standby:' section"),
        ({"backup_from": "replica"}, "sources.main.backup_from"),
        (
            {"standby": {"host": "db2", "data_dri": "/x"}},
            "sources.main.standby.data_dri: unknown key, did you mean 'data_dir'?",
        ),
        ({"standby": {"port": 5433}}, "sources.main.standby.host: required key is missing"),
        ({"standby": {"host": "db2", "replay_wait": "soon"}}, "not a duration"),
    ],
)
def test_standby_config_errors_are_named(extra: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_source(**extra), env={})
    assert expected in e.value.message


def test_standby_connection_falls_back_to_the_sources_own_keys() -> None:
    cfg = parse_config(
        _source(
            backup_from="standby", user="backup", standby={"host": "db2", "port": 5433, "replay_wait": "2m"}
        ),
        env={},
    )
    _, src = cfg.source("main", "postgres")
    assert isinstance(src, PostgresSource) and src.standby is not None
    assert src.backup_from == "standby" and src.standby.replay_wait == 120.0
    sb = standby_source(src)
    assert (sb.host, sb.port, sb.user, sb.dbname, sb.data_dir) == ("db2", 5433, "backup", "postgres", None)
    assert sb.password is not None and sb.password.get_secret_value() == "pw"
    assert sb.standby is None and sb.backup_from == "primary"


def test_a_standby_password_replaces_the_sources_and_is_redacted() -> None:
    cfg = parse_config(_source(standby={"host": "db2", "password_file": "/run/sb"}), env={})
    _, src = cfg.source("main", "postgres")
    assert isinstance(src, PostgresSource)
    sb = standby_source(src)
    assert sb.password is None and sb.password_file == "/run/sb"
    cfg = parse_config(_source(standby={"host": "db2", "password": "sbpw"}), env={})
    assert "sbpw" not in str(redacted_dump(cfg))
