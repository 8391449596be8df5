from __future__ import annotations

from pathlib import Path

import pytest

from recoverctl.config import load_config, parse_config, parse_duration, redact_url, redacted_dump
from recoverctl.errors import ConfigError


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"sources": {"main": {"type": "postgres", "hots": "x"}}},
            "sources.main.hots: unknown key, did you mean 'host'?",
        ),
        ({"repositry": "/x"}, "repositry: unknown key, did you mean 'repository'?"),
        (
            {
                "services": {
                    "web": {"target": "docker", "image": "i", "container": "c", "health": {"sucesses": 3}}
                }
            },
            "services.web.health.sucesses: unknown key, did you mean 'successes'?",
        ),
        ({"schedules": [{"name": "a", "cron": "* * * * *"}]}, "schedules[0].job: required key is missing"),
    ],
)
def test_config_errors_name_key_and_suggestion(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data, env={})
    assert expected in e.value.message


def test_env_expansion_and_defaults() -> None:
    cfg = parse_config({"repository": "${REPO}", "catalog": "${CAT:-sqlite:///x.db}"}, env={"REPO": "/srv/b"})
    assert cfg.repository is not None and cfg.repository.url == "/srv/b"
    assert cfg.catalog == "sqlite:///x.db"


def test_missing_variable_names_key() -> None:
    with pytest.raises(ConfigError, match=r"repository: environment variable 'NOPE' is not set"):
        parse_config({"repository": "${NOPE}"}, env={})


def test_environment_overrides_without_file() -> None:
    cfg = parse_config(
        None, env={"RECOVERCTL_REPOSITORY": "s3://b/p", "RECOVERCTL_CATALOG": "sqlite:///c.db"}
    )
    assert cfg.repository is not None and cfg.repository.url == "s3://b/p"
    assert cfg.catalog == "sqlite:///c.db"


def test_durations() -> None:
    assert parse_duration("0.2s") == pytest.approx(0.2)
    assert parse_duration("10m") == 600
    assert parse_duration("2h") == 7200
    assert parse_duration(5) == 5
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_secrets_redacted_in_show() -> None:
    cfg = parse_config(
        {
            "repository": "sftp://backup:hunter2@127.0.0.1:2222/srv",
            "sources": {"main": {"type": "postgres", "password": "s3cret"}},
        },
        env={},
    )
    dump = str(redacted_dump(cfg))
    assert "hunter2" not in dump and "s3cret" not in dump
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recoverctl.yaml").write_text("catalog: sqlite:///cwd.db\n")
    other = tmp_path / "other.yaml"
    other.write_text("catalog: sqlite:///env.db\n")
    assert load_config(env={}).catalog == "sqlite:///cwd.db"
    assert load_config(env={"RECOVERCTL_CONFIG": str(other)}).catalog == "sqlite:///env.db"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"), env={})
