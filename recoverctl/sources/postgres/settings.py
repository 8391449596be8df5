"""The archiving settings a server needs for backups: what they are, what to change, and whether
archive_command, run by the server, could see what it needs."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg import sql

from recoverctl.config import Config, PostgresSource, redact_url
from recoverctl.errors import ConfigError, RecoverctlError
from recoverctl.sources.postgres.archiving import (
    archive_command,
    archive_timeout_for,
    server_environment,
    wal_environment_problems,
)
from recoverctl.sources.postgres.connection import connect
from recoverctl.sources.postgres.walnames import parse_lsn, segment_name


def _setting(conn: psycopg.Connection, name: str) -> tuple[str, str]:
    row = conn.execute("select setting, context from pg_settings where name = %s", (name,)).fetchone()
    if row is None:
        raise RecoverctlError(f"server has no setting '{name}'")
    return str(row[0]), str(row[1])


def archiving_plan(cfg: Config, name: str, conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Return, per archiving setting, its current and wanted values and whether it must change.

    archive_timeout comes from the source's RPO target (see `archive_timeout_for`); its entry
    carries `why`. A shorter timeout already set is kept: it keeps the promise too.
    """
    src = cfg.sources[name]
    timeout_s, timeout_why = archive_timeout_for(cfg.targets.for_tier(src.tier).rpo)
    wanted = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(cfg, name),
        "archive_timeout": str(timeout_s),
    }
    plan = []
    for key, value in wanted.items():
        current, context = _setting(conn, key)
        if key == "wal_level":
            ok = current in ("replica", "logical")
        elif key == "archive_mode":
            ok = current in ("on", "always")
        elif key == "archive_timeout":
            ok = 0 < int(current) <= timeout_s
        else:
            ok = current == value
        item: dict[str, Any] = {
            "name": key,
            # an older recoverctl (or an operator) may have put a password there
            "current": redact_url(current),
            "wanted": current if ok else value,
            "change": not ok,
            "restart": (not ok) and context == "postmaster",
        }
        if key == "archive_timeout":
            item["why"] = timeout_why
        plan.append(item)
    return plan


def archiving_refusal(name: str, plan: list[dict[str, Any]]) -> ConfigError | None:
    """Return the error a backup raises when WAL archiving is not set up, or None when it is.

    Only wal_level and archive_mode are hard requirements plus an archive_command that pushes
    with `wal push`: an operator may wrap our command (e.g. with a timeout) and still be right.
    """
    missing = []
    for item in plan:
        if item["name"] == "archive_timeout":
            continue  # it bounds the RPO; a backup restores without it
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


def apply_settings(conn: psycopg.Connection, settings: dict[str, str]) -> None:
    """ALTER SYSTEM SET each of `settings` and reload the server's configuration."""
    for key, value in settings.items():
        conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(key), sql.Literal(value)))
    conn.execute("select pg_reload_conf()")


def create_named_point(conn: psycopg.Connection, source: str, name: str) -> tuple[str, int, float]:
    """Create restore point `name` on the primary behind `conn` and switch WAL so its record
    reaches the archive; return (lsn, timeline, epoch time). Raise RecoverctlError on a standby."""
    in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()
    if in_recovery and in_recovery[0]:
        raise RecoverctlError(
            f"source '{source}' is a standby: restore points can only be created on the primary"
        )
    row = conn.execute(
        "select pg_create_restore_point(%s)::text, (select timeline_id from pg_control_checkpoint()), "
        "extract(epoch from now())::float8",
        (name,),
    ).fetchone()
    assert row is not None
    # The restore point record must reach the archive for PITR to find it.
    conn.execute("select pg_switch_wal()")
    return str(row[0]), int(row[1]), float(row[2])


def switch_wal(conn: psycopg.Connection) -> str:
    """Force a WAL switch; return the name of the segment it closed."""
    row = conn.execute(
        "select pg_switch_wal()::text, (select timeline_id from pg_control_checkpoint())"
    ).fetchone()
    assert row is not None
    switched, timeline = str(row[0]), int(row[1])
    # pg_switch_wal returns the end of the segment it closed (or the current boundary when
    # nothing was written since the last switch): that segment is the one to wait for.
    return segment_name(timeline, max(parse_lsn(switched) - 1, 0))


def archive_timeout_of(src: PostgresSource, name: str) -> int | None:
    """Return the server's archive_timeout in seconds (0 = off), or None when it cannot be reached."""
    try:
        with connect(src, name) as conn:
            return int(_setting(conn, "archive_timeout")[0])
    except RecoverctlError:
        return None


def archiver_status(src: PostgresSource, name: str) -> dict[str, Any] | None:
    """Return the live pg_stat_archiver row of the source (and its current LSN), or None when
    the server cannot be reached."""
    try:
        with connect(src, name) as conn:
            row = conn.execute(
                "select last_archived_wal, extract(epoch from last_archived_time)::float8, "
                "last_failed_wal, extract(epoch from last_failed_time)::float8, failed_count, "
                "pg_current_wal_lsn()::text from pg_stat_archiver"
            ).fetchone()
    except RecoverctlError:
        return None
    if row is None:
        return None
    return {
        "last_archived_wal": row[0],
        "last_archived_at": row[1],
        "last_failed_wal": row[2],
        "last_failed_at": row[3],
        "failed_count": row[4],
        "current_lsn": row[5],
    }
