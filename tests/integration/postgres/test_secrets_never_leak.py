"""Secrets stay secret: through `postgres setup`, a full backup, a WAL burst, a restore and a
drill, no configured secret shows up in a PostgreSQL setting (SHOW ALL), a command line of any
process (/proc/*/cmdline, sampled while each operation runs), a server or recoverctl log, a
catalog row or a --json output.

The secrets are distinct and recognisable: the repository passphrase (in a 0600 file), the
catalog's PostgreSQL password (the catalog is a PostgreSQL database with scram auth for its
role, its URL in the config file and, as operators often also do, exported as
RECOVERCTL_CATALOG) and the source's password (scram auth, in a password_file).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CliResult
from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import BIN_DIR, PgCluster, _as_pg_user, chown_to_pg
from tests.integration.postgres.test_pg_backup_restore import psql as psql_port

REPO_PASSPHRASE = "repo-Passphrase-Q7w1x9"
CATALOG_PASSWORD = "catalog-Pw-Z3k8v2"
SOURCE_PASSWORD = "source-Pw-M5n2c4"
SECRETS = (REPO_PASSPHRASE, CATALOG_PASSWORD, SOURCE_PASSWORD)


class CmdlineSampler:
    """Reads /proc/*/cmdline of every process over and over on a thread while an operation runs."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        raw = f.read()
                    if raw:
                        self._sample(pid, raw.replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    continue
            self._stop.wait(0.005)

    def _sample(self, pid: str, cmdline: str) -> None:
        self.seen.add(cmdline)

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class World:
    def __init__(self, cli: PgCli, pg: PgCluster, catalog_db: PgCluster, scratch: Path):
        self.cli, self.pg, self.catalog_db, self.scratch = cli, pg, catalog_db, scratch
        self.outputs: list[str] = []  # stdout and stderr of every command run
        self.sampler = CmdlineSampler()

    def run(self, *args: str, check: int) -> CliResult:
        r = self.cli(*args, check=check)
        self.outputs += [r.stdout, r.stderr]
        return r


def _require_scram(cluster: PgCluster, role: str, *, replication: bool = False) -> None:
    """Make TCP logins of `role` need its password (others keep the fixture's trust)."""
    hba = cluster.data_dir / "pg_hba.conf"
    lines = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    if replication:
        lines += f"host replication {role} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(lines + hba.read_text())


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    chown_to_pg(path)
    return path


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-secrets-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    _secret_file(cli.password_file, REPO_PASSPHRASE)
    scratch = home / "scratch"
    scratch.mkdir()
    catalog_db, pg = PgCluster(name="catalog"), PgCluster()
    try:
        catalog_db.initdb()
        _require_scram(catalog_db, "rc_catalog")
        catalog_db.start()
        catalog_db.psql(f"create role rc_catalog login password '{CATALOG_PASSWORD}'")
        catalog_db.psql("create database catalog owner rc_catalog")
        # archive_mode on with no archive_command yet: `postgres setup --apply` sets it (a reload).
        pg.initdb("archive_mode = on\n")
        _require_scram(pg, "rc_backup", replication=True)
        pg.start()
        pg.psql(f"create role rc_backup superuser replication login password '{SOURCE_PASSWORD}'")
        pg.psql("create table marks(id serial primary key, note text, at timestamptz default now())")
        pg.psql("insert into marks(note) select 'before' from generate_series(1, 100)")
        yield World(cli, pg, catalog_db, scratch)
    finally:
        pg.destroy()
        catalog_db.destroy()
        shutil.rmtree(home, ignore_errors=True)


def _catalog_url(w: World) -> str:
    return f"postgresql://rc_catalog:{CATALOG_PASSWORD}@127.0.0.1:{w.catalog_db.port}/catalog"


def _source(w: World, **extra: Any) -> dict[str, Any]:
    return w.pg.source_config(user="rc_backup", count_tables=["public.marks"], **extra)


def test_setup_refuses_what_the_archiver_could_not_see(world: World) -> None:
    w = world
    source_pw = _secret_file(w.cli.home / "source-password", SOURCE_PASSWORD)
    # The source password as ${VAR}: this shell has it, the server's archiver would not.
    w.cli.write_config({"main": _source(w, password="${SOURCE_PW}")})
    env = {"SOURCE_PW": SOURCE_PASSWORD}
    err = w.cli("--json", "postgres", "setup", env=env, check=2).error_json()
    assert "sources.main.password" in err["message"] and "SOURCE_PW" in err["message"]
    assert "password_file" in err["message"] and "EnvironmentFile" in err["message"]
    # The catalog URL with its password only in RECOVERCTL_CATALOG: it must not go into a setting.
    w.cli.write_config({"main": _source(w, password_file=str(source_pw))})
    env = {"RECOVERCTL_CATALOG": _catalog_url(w)}
    err = w.cli("--json", "postgres", "setup", env=env, check=2).error_json()
    assert "RECOVERCTL_CATALOG" in err["message"] and "holds a password" in err["message"]
    # The passphrase only in RECOVERCTL_PASSWORD.
    env = {"RECOVERCTL_PASSWORD": REPO_PASSPHRASE, "RECOVERCTL_PASSWORD_FILE": ""}
    err = w.cli("--json", "postgres", "setup", env=env, check=2).error_json()
    assert "RECOVERCTL_PASSWORD in this shell" in err["message"]
    # A passphrase file the server's OS user cannot read (root's, 0600).
    private = w.cli.home / "root-only-passphrase"
    private.write_text(REPO_PASSPHRASE + "\n")
    private.chmod(0o600)
    os.chown(private, 0, 0)
    err = w.cli(
        "--json", "postgres", "setup", env={"RECOVERCTL_PASSWORD_FILE": str(private)}, check=2
    ).error_json()
    assert "cannot read the repository passphrase file" in err["message"] and str(private) in err["message"]
    for text in (str(err), w.pg.psql("show archive_command")):
        assert not any(s in text for s in SECRETS), text
    assert w.pg.psql("show archive_command") in ("", "(disabled)")


def test_setup_warns_when_the_config_file_shows_inline_secrets(world: World) -> None:
    w = world
    # The source password inline in the config file, which the server's group may read.
    w.cli.write_config({"main": _source(w, password=SOURCE_PASSWORD)})
    w.cli.config_path.chmod(0o640)
    r = w.cli("postgres", "setup", check=0)  # a warning, not a refusal
    path = w.cli.config_path.resolve()
    assert f"warning: config file '{path}' holds secrets inline (sources.main.password)" in r.stdout
    assert f"chmod 600 {path}" in r.stdout and SOURCE_PASSWORD not in r.stdout + r.stderr
    w.cli.config_path.chmod(0o600)
    assert w.cli("--json", "postgres", "setup", check=0).json()["warnings"] == []


def test_no_secret_in_settings_command_lines_logs_catalog_or_output(world: World) -> None:
    w = world
    source_pw = _secret_file(w.cli.home / "source-password", SOURCE_PASSWORD)
    w.cli.write_config({"main": _source(w, password_file=str(source_pw))}, catalog=_catalog_url(w))
    # Exported as well, as operators often do: the WAL commands must still carry only paths.
    w.cli.env["RECOVERCTL_CATALOG"] = _catalog_url(w)
    verbose = ("--json", "--log-json", "-vv")
    with w.sampler:
        w.run(*verbose, "init", check=0)
        applied = w.run(*verbose, "postgres", "setup", "--apply", check=0).json()
        assert applied["applied"] and not applied["restart_needed"]

        full = w.run(*verbose, "backup", "postgres", "--type", "full", check=0).json()
        assert full["row_counts"] == {"public.marks": 100}
        # pg_dump gets the source password through libpq's environment, never its argv
        w.run(*verbose, "backup", "postgres", "--logical", check=0)

        # A WAL burst: one segment after another, all archived by the server's archive_command.
        for i in range(12):
            w.pg.psql(f"insert into marks(note) select 'burst {i}' from generate_series(1, 50)")
            w.pg.psql("select pg_switch_wal()")
        seg = w.pg.psql("select pg_walfile_name(pg_current_wal_lsn())")
        w.pg.psql("select pg_switch_wal()")
        wait_until(
            lambda: w.pg.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= seg,
            timeout=120,
            what=f"segment {seg} archived",
        )
        assert w.pg.psql("select failed_count from pg_stat_archiver") == "0"
        w.run(*verbose, "postgres", "check", "--timeout", "60", check=0)

        target = w.cli.home / "restored"
        port = free_port()
        restored = w.run(*verbose, "restore", "postgres", "--target-dir", str(target), "--to-latest",
                         "--start", "--port", str(port), check=0).json()  # fmt: skip
        try:
            assert restored["recovered_lsn"]
            restored_conf = (target / "postgresql.auto.conf").read_text()
            assert "restore_command" in restored_conf
        finally:
            stop = [str(BIN_DIR / "pg_ctl"), "-D", str(target), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_pg_user(stop), capture_output=True)

        playbook = w.cli.home / "drill.yaml"
        playbook.write_text(yaml.safe_dump({"drill": {
            "name": "secrets", "source": "main", "recovery_point": "latest",
            "checks": [{"sql": "select count(*) from marks", "expect": ">= 700"}],
            "targets": {"rto": "2h", "rpo": "1h"}, "where": {"temp_dir": str(w.scratch)},
        }}))  # fmt: skip
        chown_to_pg(playbook)
        drill = w.run(*verbose, "drill", "run", str(playbook), check=0).json()
        assert drill["verdict"] == "pass", drill["reason"]

    # The sampler saw the processes that matter: the server's archive_command calls, the
    # restore_command calls of the restored server and the drill's scratch server.
    seen = w.sampler.seen
    assert any("push --source main" in c for c in seen), "no archive_command call was sampled"
    assert any("fetch --source main" in c for c in seen), "no restore_command call was sampled"

    places: dict[str, str] = {
        "SHOW ALL": w.pg.psql("select string_agg(name || '=' || setting, E'\\n') from pg_settings"),
        "source server log": (w.pg.base / "server.log").read_text(errors="replace"),
        "restored postgresql.auto.conf": restored_conf,
        "recoverctl output and logs": "\n".join(w.outputs),
        "catalog rows": _catalog_rows(w.catalog_db),
    }
    for cmd in sorted(seen):
        places[f"command line: {cmd[:200]}"] = cmd
    leaks = [(where, s) for where, text in places.items() for s in SECRETS if s in text]
    assert leaks == [], leaks
    # the settings themselves name the files holding secrets, never a value
    archive = w.pg.psql("show archive_command")
    assert f"--config {w.cli.config_path}" in archive and "RECOVERCTL_CATALOG=" not in archive


def _catalog_rows(cluster: PgCluster) -> str:
    tables = cluster.psql(
        "select string_agg(quote_ident(table_name), ' ') from information_schema.tables "
        "where table_schema = 'public'",
        dbname="catalog",
    ).split()
    assert "audit_log" in tables and "runs" in tables
    return "\n".join(cluster.psql(f"select t::text from {name} t", dbname="catalog") for name in tables)


class EnvironSampler(CmdlineSampler):
    """Reads /proc/<pid>/environ of every PostgreSQL program (pg_ctl, postgres) whose command
    line holds `marker`, over and over on a thread."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.environs: dict[str, str] = {}  # command line -> environment, NUL-separated

    def _sample(self, pid: str, cmdline: str) -> None:
        if self.marker in cmdline and cmdline.startswith(str(BIN_DIR)):
            with open(f"/proc/{pid}/environ", "rb") as f:
                self.environs[cmdline] = f.read().decode(errors="replace")


# What recoverctl runs with below: none of it may reach a restored server's environment, where
# any superuser of the copy reads it (COPY ... FROM PROGRAM 'env').
_OUR_ENVIRONMENT = {
    "RECOVERCTL_PASSWORD": REPO_PASSPHRASE,
    "RECOVERCTL_PASSWORD_FILE": "",
    "AWS_SECRET_ACCESS_KEY": "aws-Secret-K9p4r7",
    "PGPASSWORD": SOURCE_PASSWORD,
}


def _leaked(environs: dict[str, str], catalog_url: str) -> list[tuple[str, str]]:
    names = ("RECOVERCTL_PASSWORD=", "RECOVERCTL_CATALOG=", "AWS_SECRET_ACCESS_KEY=", "PGPASSWORD=")
    values = (*_OUR_ENVIRONMENT.values(), CATALOG_PASSWORD, catalog_url)
    return [
        (cmd[:120], item.split("=", 1)[0])
        for cmd, env in environs.items()
        for item in env.split("\0")
        if item.startswith(names) or any(v and v in item for v in values)
    ]


def test_restored_servers_start_without_our_environment(world: World) -> None:
    """A drill's scratch server and `restore postgres --start`'s server get PATH, locale and the
    server user's HOME, never recoverctl's variables; the passphrase from RECOVERCTL_PASSWORD
    reaches restore_command as a file, gone before any check runs."""
    w = world
    env = {**_OUR_ENVIRONMENT, "RECOVERCTL_CATALOG": _catalog_url(w)}
    playbook = w.cli.home / "drill-env.yaml"
    playbook.write_text(yaml.safe_dump({"drill": {
        "name": "environment", "source": "main", "recovery_point": "latest", "amcheck": False,
        "checks": [
            {"name": "restore_command reads a passphrase file",
             "sql": "select current_setting('restore_command') "
                    "like '%RECOVERCTL_PASSWORD_FILE=%.recoverctl-secrets/passphrase %'",
             "expect": True},
            {"name": "the passphrase file is gone once recovery ended",
             "sql": "select pg_stat_file(current_setting('data_directory') || '.recoverctl-secrets', true) "
                    "is null",
             "expect": True},
            {"sql": "select count(*) from marks", "expect": ">= 700"},
        ],
        "targets": {"rto": "2h", "rpo": "1h"}, "where": {"temp_dir": str(w.scratch)},
    }}))  # fmt: skip
    chown_to_pg(playbook)
    with EnvironSampler(str(w.scratch)) as drill_sampler:
        drill = w.cli("--json", "drill", "run", str(playbook), env=env, check=0).json()
    assert drill["verdict"] == "pass", (drill["reason"], drill["checks"])

    target, port = w.cli.home / "restored-env", free_port()
    with EnvironSampler(str(target)) as restore_sampler:
        w.cli("--json", "restore", "postgres", "--target-dir", str(target), "--to-latest",
              "--start", "--port", str(port), env=env, check=0)  # fmt: skip
        try:
            assert not (target.parent / f"{target.name}.recoverctl-secrets").exists()
        finally:
            stop = [str(BIN_DIR / "pg_ctl"), "-D", str(target), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_pg_user(stop), capture_output=True)

    for sampler in (drill_sampler, restore_sampler):
        postmasters = [e for c, e in sampler.environs.items() if c.startswith(str(BIN_DIR / "postgres"))]
        assert postmasters, f"no server process of '{sampler.marker}' was sampled"
        assert all("\0HOME=" in "\0" + e and "\0PATH=" in "\0" + e for e in postmasters)
        assert _leaked(sampler.environs, _catalog_url(w)) == []


def test_paused_restore_fetches_wal_with_the_passphrase_file_alone(world: World) -> None:
    """After `restore postgres --start` has exited, a paused copy's restore_command still fetches
    WAL: run by hand as the server's user with nothing but PATH, it starts its own fetcher,
    which reads the passphrase from the 0600 file restore_command names (RECOVERCTL_PASSWORD
    was only in recoverctl's environment)."""
    w = world
    env = {**_OUR_ENVIRONMENT, "RECOVERCTL_CATALOG": _catalog_url(w)}
    target, port = w.cli.home / "restored-paused", free_port()
    args = (
        "--target-dir",
        str(target),
        "--to-immediate",
        "--target-action",
        "pause",
        "--start",
        "--port",
        str(port),
    )
    out = w.cli("--json", "restore", "postgres", *args, env=env, check=0).json()
    try:
        passphrase = Path(out["passphrase_file"])
        assert passphrase.parent == target.parent / f"{target.name}.recoverctl-secrets"
        st = passphrase.stat()
        assert oct(st.st_mode & 0o777) == "0o600" and stat.S_IMODE(passphrase.parent.stat().st_mode) == 0o700
        assert st.st_uid == pwd.getpwnam("postgres").pw_uid
        replayed = w.pg.psql(f"select pg_walfile_name('{out['recovered_lsn']}')")
        command = psql_port(port, "show restore_command")[0]
        assert f"RECOVERCTL_PASSWORD_FILE={passphrase}" in command
        dest = target / "pg_wal" / "RECOVERCTL-TEST"
        line = command.replace("%f", replayed).replace("%p", str(dest))
        minimal = ["env", "-i", f"PATH={os.environ['PATH']}", "sh", "-c", line]
        r = subprocess.run(_as_pg_user(minimal), capture_output=True, text=True, cwd=target, timeout=120)
        assert r.returncode == 0, r.stderr
        assert dest.stat().st_size == 16 * 1024 * 1024
    finally:
        stop = [str(BIN_DIR / "pg_ctl"), "-D", str(target), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_pg_user(stop), capture_output=True)
        shutil.rmtree(target.parent / f"{target.name}.recoverctl-secrets", ignore_errors=True)
