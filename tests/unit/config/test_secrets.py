"""Secrets stay secret: PostgreSQL settings carry only paths, the archiver sees what setup sees,
and what recoverctl writes locally (catalog, spools, logs, audit rows) keeps secrets to itself."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from recoverctl.config import load_config, redact, redact_url
from recoverctl.sources.postgres.archiving import (
    archive_command,
    restore_command,
    server_environment,
    wal_environment_problems,
)

CATALOG_PW = "cat-Pw-9f3e1"
CATALOG = f"postgresql://recoverctl:{CATALOG_PW}@127.0.0.1:5432/catalog"


def _config(tmp_path: Path, **extra: object) -> Path:
    pw = tmp_path / "pass"
    pw.write_text("passphrase\n")
    pw.chmod(0o600)
    data: dict[str, object] = {
        "repository": {"url": str(tmp_path / "repo"), "password_file": str(pw)},
        "sources": {"main": {"type": "postgres"}},
        **extra,
    }
    path = tmp_path / "recoverctl.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_wal_commands_never_carry_a_catalog_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path)
    monkeypatch.setenv("RECOVERCTL_CATALOG", CATALOG)
    monkeypatch.setenv("RECOVERCTL_PASSWORD", "env-passphrase-77")
    cfg = load_config(str(path))
    for line in (archive_command(cfg, "main"), restore_command(cfg, "main")):
        assert CATALOG_PW not in line and "env-passphrase-77" not in line
        assert f"--config {path.resolve()}" in line
    # a password-free catalog URL is a path: it may be passed on
    monkeypatch.setenv("RECOVERCTL_CATALOG", f"sqlite:///{tmp_path}/c.db")
    assert f"RECOVERCTL_CATALOG=sqlite:///{tmp_path}/c.db" in archive_command(load_config(str(path)), "main")


def test_setup_check_accepts_a_config_whose_secrets_are_in_files(tmp_path: Path) -> None:
    path = _config(tmp_path, catalog=CATALOG)
    cfg = load_config(str(path), env={})
    assert wal_environment_problems(cfg, {}, env={}) == []


@pytest.mark.parametrize(
    ("extra", "env", "server_env", "expected"),
    [
        # a source password as ${VAR}: config loading in the archiver would fail
        (
            {"sources": {"main": {"type": "postgres", "password": "${PGPW}"}}},
            {"PGPW": "x"},
            {},
            "sources.main.password: environment variable 'PGPW' is not set",
        ),
        # ... unless the server has the variable (systemd EnvironmentFile=)
        (
            {"sources": {"main": {"type": "postgres", "password": "${PGPW}"}}},
            {"PGPW": "x"},
            {"PGPW": "x"},
            None,
        ),
        # an unreadable server environment is taken as empty, and says so
        (
            {"catalog": "${CAT}"},
            {"CAT": "sqlite:///x"},
            None,
            "unreadable from here",
        ),
        # the catalog URL with its password only in this shell's RECOVERCTL_CATALOG
        ({}, {"RECOVERCTL_CATALOG": CATALOG}, {}, "it holds a password"),
        # S3 keys from this shell's environment
        (
            {"repository": {"url": "s3://bucket/p", "password_file": "PWFILE"}},
            {"AWS_SECRET_ACCESS_KEY": "k", "AWS_ACCESS_KEY_ID": "i"},
            {},
            "S3 credentials come from AWS_ACCESS_KEY_ID",
        ),
    ],
)
def test_setup_check_names_what_the_archiver_would_lack(
    tmp_path: Path,
    extra: dict[str, object],
    env: dict[str, str],
    server_env: dict[str, str] | None,
    expected: str | None,
) -> None:
    path = _config(tmp_path, **extra)
    path.write_text(path.read_text().replace("PWFILE", str(tmp_path / "pass")))
    cfg = load_config(str(path), env=env)
    problems = wal_environment_problems(cfg, server_env, env=env)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0], problems


def test_setup_check_refuses_a_passphrase_only_in_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "recoverctl.yaml"
    data = {"repository": str(tmp_path / "repo"), "sources": {"m": {"type": "postgres"}}}
    path.write_text(yaml.safe_dump(data))
    env = {"RECOVERCTL_PASSWORD": "pp"}
    (problem,) = wal_environment_problems(load_config(str(path), env=env), {}, env=env)
    assert "RECOVERCTL_PASSWORD in this shell" in problem and "password_file" in problem
    env = {"RECOVERCTL_PASSWORD_FILE": str(tmp_path / "pass")}
    (tmp_path / "pass").write_text("pp\n")
    assert wal_environment_problems(load_config(str(path), env=env), {}, env=env) == []


def test_server_environment_is_read_only_from_that_servers_backend(tmp_path: Path) -> None:
    # our own process stands in for a backend: its cwd is the "data directory"
    env = server_environment(os.getpid(), os.getcwd())
    assert env is not None and env.get("PATH") == os.environ.get("PATH")
    assert server_environment(os.getpid(), str(tmp_path)) is None
    assert server_environment(2**22 + 12345, str(tmp_path)) is None


def test_one_redaction_for_urls_conninfo_and_known_values() -> None:
    assert redact_url(CATALOG) == "postgresql://recoverctl:***@127.0.0.1:5432/catalog"
    assert redact_url("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert (
        redact_url("postgresql://h/db?password=zz&sslmode=require")
        == "postgresql://h/db?password=***&sslmode=require"
    )
    assert redact_url("RECOVERCTL_PASSWORD_FILE=/p") == "RECOVERCTL_PASSWORD_FILE=/p"
    assert redact({"a": [f"x {CATALOG}", "tok-123456"]}, ["tok-123456"]) == {
        "a": ["x postgresql://recoverctl:***@127.0.0.1:5432/catalog", "***"]
    }


def test_logs_redact_secrets_learnt_after_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    from recoverctl import logs

    monkeypatch.setattr(logs, "_SECRETS", set())
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.setup_logging(1, True)
    logs.add_secrets(["slack-hook-secret"])
    log = logging.getLogger("recoverctl.test")
    log.info("posting to %s via %s", "https://hooks/slack-hook-secret", CATALOG)
    log.info("fields", extra={"fields": {"url": CATALOG}})
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    text = json.dumps(lines)
    assert "slack-hook-secret" not in text and CATALOG_PW not in text
    assert (
        lines[0]["message"]
        == "posting to https://hooks/*** via postgresql://recoverctl:***@127.0.0.1:5432/catalog"
    )


def test_sqlite_catalog_and_its_directory_are_private(tmp_path: Path) -> None:
    from recoverctl.catalog import Catalog

    db = tmp_path / "state" / "recoverctl" / "catalog.db"
    catalog = Catalog(f"sqlite:///{db}")
    catalog.audit("test", None, "ok", {"url": CATALOG})
    catalog.finish_run(catalog.start_run("test"), "failed", error=f"cannot reach {CATALOG}")
    catalog.emit_event("test", "info", None, f"summary {CATALOG}", {"url": CATALOG})
    with catalog.begin() as conn:
        import sqlalchemy as sa

        from recoverctl.catalog import tables as t

        rows = [
            conn.execute(sa.select(t.audit_log.c.details)).scalar_one(),
            conn.execute(sa.select(t.runs.c.error)).scalar_one(),
            [tuple(r) for r in conn.execute(sa.select(t.events.c.summary, t.events.c.details))],
        ]
    catalog.close()
    assert CATALOG_PW not in json.dumps(rows)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for d in (db.parent, db.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for companion in db.parent.glob("catalog.db-*"):
        assert stat.S_IMODE(companion.stat().st_mode) & 0o077 == 0, companion


def test_spool_and_marker_directories_are_private(tmp_path: Path) -> None:
    from recoverctl.sources.postgres import fetchspool, walspool

    wal = tmp_path / "pg_wal"
    wal.mkdir()
    fd = walspool.claim_pusher(walspool.pushed_marker(wal / "x", "main").parent, ["x"])
    assert fd is not None
    os.close(fd)
    spool = fetchspool.spool_dir(wal / "RECOVERYXLOG", "main")
    fetchspool.private_dirs(spool)
    for d in (wal / walspool.PUSHED_DIR, wal / walspool.PUSHED_DIR / "main", Path(spool), Path(spool).parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_cron_lines_and_systemd_units_refuse_a_catalog_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from recoverctl.config import parse_config
    from recoverctl.errors import ConfigError
    from recoverctl.scheduler.install import crontab_lines, systemd_units

    cfg = parse_config({"schedules": [{"name": "n", "cron": "0 1 * * *", "job": "backup postgres"}]}, env={})
    monkeypatch.setenv("RECOVERCTL_CATALOG", CATALOG)
    for render in (crontab_lines, systemd_units):
        with pytest.raises(ConfigError, match="RECOVERCTL_CATALOG holds a password"):
            render(cfg)
    monkeypatch.setenv("RECOVERCTL_CATALOG", "sqlite:////var/lib/recoverctl/catalog.db")
    assert "RECOVERCTL_CATALOG=sqlite:////var/lib/recoverctl/catalog.db" in crontab_lines(cfg)


def test_readable_as_asks_the_kernel_as_that_user() -> None:
    import pwd
    import shutil
    import tempfile

    from recoverctl.sources.postgres.archiving import readable_as

    # pytest's tmp_path sits under a 0700 directory: the other user could read nothing there
    tmp_path = Path(tempfile.mkdtemp(prefix="recoverctl-readable-"))
    tmp_path.chmod(0o755)
    try:
        _check_readable_as(tmp_path, readable_as, pwd.getpwnam("postgres" if os.geteuid() == 0 else "root"))
    finally:
        shutil.rmtree(tmp_path)


def _check_readable_as(tmp_path: Path, readable_as: Any, other: Any) -> None:
    private, shared = tmp_path / "private", tmp_path / "shared"
    for f, mode in ((private, 0o600), (shared, 0o644)):
        f.write_text("x")
        f.chmod(mode)
    assert readable_as(os.geteuid(), os.getegid(), str(private)) is True
    expected = (False, True) if os.geteuid() == 0 else (None, None)
    assert (
        readable_as(other.pw_uid, other.pw_gid, str(private)),
        readable_as(other.pw_uid, other.pw_gid, str(shared)),
    ) == expected


def test_setup_plan_never_shows_a_password_already_in_a_setting(tmp_path: Path) -> None:
    from recoverctl.sources.postgres.settings import archiving_plan

    old = f"env RECOVERCTL_CATALOG={CATALOG} recoverctl-wal push --source main %p"
    current = {"wal_level": "replica", "archive_mode": "on", "archive_command": old, "archive_timeout": "0"}

    class Conn:
        def execute(self, _sql: str, params: tuple[str]) -> Any:
            row = (current[params[0]], "sighup")
            return type("Cursor", (), {"fetchone": lambda self: row})()

    cfg = load_config(str(_config(tmp_path)), env={})
    plan = {i["name"]: i for i in archiving_plan(cfg, "main", Conn())}  # type: ignore[arg-type]
    assert plan["archive_command"]["change"] and CATALOG_PW not in json.dumps(plan)
    assert "recoverctl:***@" in plan["archive_command"]["current"]
