from __future__ import annotations

from tests.conftest import Cli


def test_config_check_misspelled_key_exits_2_with_suggestion(cli: Cli) -> None:
    path = cli.write_config({"sources": {"main": {"type": "postgres", "hots": "db1"}}})
    r = cli("config", "check")
    assert r.code == 2
    assert str(path) in r.stderr
    assert "sources.main.hots: unknown key, did you mean 'host'?" in r.stderr


def test_config_check_valid_and_json_error(cli: Cli) -> None:
    cli.write_config({"repository": "/tmp/x", "catalog": "sqlite:///x.db"})
    assert cli("config", "check", check=0).stdout.strip().endswith("valid")
    cli.write_config({"repository": {"url": "/x", "compresion_level": 3}})
    r = cli("--json", "config", "check")
    assert r.code == 2
    err = r.error_json()
    assert err["exit_code"] == 2 and "compression_level" in err["message"]


def test_version_and_help_examples(cli: Cli) -> None:
    assert "recoverctl" in cli("--version", check=0).stdout
    for group, sub in (("config", "check"), ("catalog", "info"), ("storage", "check")):
        out = cli(group, sub, "--help", check=0).stdout
        assert "Example:" in out, f"{group} {sub} --help has no example"
