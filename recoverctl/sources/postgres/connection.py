"""Connecting to a configured PostgreSQL source and finding its server binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from recoverctl.config import PostgresSource, secret_value
from recoverctl.errors import ConfigError, RecoverctlError


def conninfo(src: PostgresSource, dbname: str | None = None) -> str:
    """Return a libpq connection string for the source (no password: see `connect_env`)."""
    return make_conninfo(
        host=src.host,
        port=str(src.port),
        user=src.user,
        dbname=dbname or src.dbname,
        application_name="recoverctl",
        connect_timeout="10",
    )


def connect_env(src: PostgresSource) -> dict[str, str]:
    """Return the libpq environment for the source: PGPASSWORD from `password`/`password_file`.

    Without either, libpq falls back to PGPASSWORD in our environment and then ~/.pgpass.
    """
    password = secret_value(src.password, src.password_file, "the PostgreSQL password")
    return {"PGPASSWORD": password} if password is not None else {}


def connect(
    src: PostgresSource, name: str, *, dbname: str | None = None, **kwargs: Any
) -> psycopg.Connection:
    """Open an autocommit connection to the source; raise RecoverctlError naming host and port."""
    password = connect_env(src).get("PGPASSWORD")
    try:
        extra = {"password": password} if password else {}
        return psycopg.connect(make_conninfo(conninfo(src, dbname), **extra), autocommit=True, **kwargs)
    except psycopg.OperationalError as e:
        raise RecoverctlError(
            f"unable to connect to PostgreSQL source '{name}' at {src.host}:{src.port}: "
            f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}",
            hint="check host/port/user in the source config and the password (env, password_file, ~/.pgpass)",
        ) from None


def server_major(conn: psycopg.Connection) -> int:
    """Return the server's major version (e.g. 15)."""
    return int(conn.info.server_version) // 10000


def find_bin_dir(src: PostgresSource, major: int | None) -> Path:
    """Return the directory holding pg_ctl/pg_dump for the server's major version.

    Configured `bin_dir` wins; then Debian's /usr/lib/postgresql/<major>/bin; then `pg_config
    --bindir` and PATH. Raise ConfigError when none has pg_ctl.
    """
    candidates: list[Path] = []
    if src.bin_dir:
        candidates.append(Path(src.bin_dir))
    if major is not None:
        candidates += [Path(f"/usr/lib/postgresql/{major}/bin"), Path(f"/usr/pgsql-{major}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "pg_ctl").is_file() and os.access(c / "pg_ctl", os.X_OK):
            return c
    raise ConfigError(
        f"cannot find PostgreSQL {major or ''} binaries (pg_ctl)".replace("  ", " "),
        hint="set 'bin_dir' in the postgres source config (e.g. /usr/lib/postgresql/15/bin)",
    )
