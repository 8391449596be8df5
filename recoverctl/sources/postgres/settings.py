"""The archiving settings a server needs for backups: what they are, what to change, and whether
archive_command, run by the server, could see what it needs."""

from __future__ import annotations

import os
from typing import Any

import psycopg

from recoverctl.config import Config, redact_url
from recoverctl.errors import ConfigError, RecoverctlError
from recoverctl.sources.postgres.archiving import (
    archive_command,
    server_environment,
    wal_environment_problems,
)


def _setting(conn: psycopg.Connection, name: str) -> tuple[str, str]:
    row = conn.execute("select setting, context from pg_settings where name = %s", (name,)).fetchone()
    if row is None:
        raise RecoverctlError(f"server has no setting '{name}'")
    return str(row[0]), str(row[1])


def archiving_plan(cfg: Config, name: str, conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Return, per archiving setting, its current and wanted values and whether it must change."""
    wanted = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(cfg, name),
    }
    plan = []
    for key, value in wanted.items():
        current, context = _setting(conn, key)
        if key == "wal_level":
            ok = current in ("replica", "logical")
        elif key == "archive_mode":
            ok = current in ("on", "always")
        else:
            ok = current == value
        plan.append(
            {
                "name": key,
                # an older recoverctl (or an operator) may have put a password there
                "current": redact_url(current),
                "wanted": current if ok else value,
                "change": not ok,
                "restart": (not ok) and context == "postmaster",
            }
        )
    return plan


def archiving_refusal(name: str, plan: list[dict[str, Any]]) -> ConfigError | None:
    """Return the error a backup raises when WAL archiving is not set up, or None when it is.

    Only wal_level and archive_mode are hard requirements plus an archive_command that pushes
    with `wal push`: an operator may wrap our command (e.g. with a timeout) and still be right.
    """
    missing = []
    for item in plan:
        if item["name"] == "archive_command":
            current = item["current"]
            if not ("push" in current and ("recoverctl" in current or "wal" in current)):
                missing.append(item)
        elif item["change"]:
            missing.append(item)
    if not missing:
        return None
    lines = [f"{i['name']} = '{i['wanted']}'" for i in missing]
    return ConfigError(
        f"WAL archiving is not configured on source '{name}': a backup without archived WAL cannot be "
        "restored",
        hint="add to postgresql.conf (or run 'recoverctl postgres setup --apply'):\n  "
        + "\n  ".join(lines)
        + ("\nthen restart PostgreSQL" if any(i["restart"] for i in missing) else "\nthen reload PostgreSQL"),
        details={"settings": {i["name"]: i["wanted"] for i in missing}},
    )


def refuse_unreachable_settings(cfg: Config, name: str, conn: psycopg.Connection) -> None:
    """Raise ConfigError listing what archive_command would lack on the server of `conn`."""
    try:
        row = conn.execute("select pg_backend_pid(), current_setting('data_directory')").fetchone()
    except psycopg.Error:  # data_directory is for superusers and pg_read_all_settings only
        row = None
    server_env = server_user = None
    if row is not None:
        server_env = server_environment(int(row[0]), str(row[1]))
        if server_env is not None:  # the backend is on this host: its owner is the server's user
            st = os.stat(f"/proc/{int(row[0])}")
            server_user = (st.st_uid, st.st_gid)
    problems = wal_environment_problems(cfg, server_env, server_user=server_user)
    if problems:
        raise ConfigError(
            f"archive_command for source '{name}' would fail: " + "; ".join(problems),
            hint="PostgreSQL settings carry only paths (archive_command is readable by every role and "
            "logged): keep secrets in files the server's OS user can read, then run setup again",
            details={"problems": problems},
        )
