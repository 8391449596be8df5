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


def _with_secrets(s3_secret: str, catalog: str, source: dict[str, str]) -> dict[str, object]:
    return {
        "repository": {"url": "s3://b/p", "s3": {"access_key_id": "AKIA1", "secret_access_key": s3_secret}},
        "catalog": catalog,
        "sources": {"main": {"type": "postgres", **source}},
    }


def test_config_check_warns_when_inline_secrets_are_readable_by_others(cli: Cli) -> None:
    inline = _with_secrets("s3-Secret-9", "postgresql://rc:catalog-Pw-1@127.0.0.1:5432/catalog",
                           {"password": "source-Pw-2"})  # fmt: skip
    path = cli.write_config(inline)
    path.chmod(0o644)
    r = cli("config", "check", check=0)  # a warning, not a failure
    assert f"chmod 600 {path.resolve()}" in r.stdout and "mode 0644" in r.stdout
    warning = cli("--json", "config", "check", check=0).json()["warnings"][0]
    assert "(catalog, repository.s3.secret_access_key, sources.main.password)" in warning
    assert "its group and every local user" in warning
    assert not any(s in r.stdout + warning for s in ("s3-Secret-9", "catalog-Pw-1", "source-Pw-2"))
    path.chmod(0o640)
    assert (
        "its group can read it (mode 0640)" in cli("--json", "config", "check", check=0).json()["warnings"][0]
    )
    path.chmod(0o600)
    assert cli("--json", "config", "check", check=0).json()["warnings"] == []
    # Secrets kept out of the file (${VAR}, *_file): nothing to warn about at any mode.
    cli.env.update(S3_SECRET="x" * 8, CATALOG_URL="postgresql://rc:pw@h/c")
    outside = _with_secrets(
        "${S3_SECRET}", "${CATALOG_URL}", {"password_file": "/etc/recoverctl/pg-password"}
    )
    cli.write_config(outside).chmod(0o644)
    assert cli("--json", "config", "check", check=0).json()["warnings"] == []
