"""Why a backup's stop segment did not reach the repository: the archiver's own account.

A physical backup is only usable once the WAL up to its stop segment is archived, so the backup
waits (`sources.<name>.wal_wait`). When that wait runs out, the bare "did not reach the
repository" says nothing about the cause; pg_stat_archiver and the archive_status queue tell
apart an archive_command that fails from one that is merely behind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from recoverctl.errors import VerificationError
from recoverctl.units import human_duration


def archiver_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Return pg_stat_archiver's view plus the number of segments queued for archiving.

    The queue (`.ready` files) needs pg_ls_archive_statusdir (superuser or pg_monitor); it is
    None when not readable. Never raises for a query the role may not run.
    """
    state: dict[str, Any] = {}
    try:
        row = conn.execute(
            "select last_archived_wal, extract(epoch from last_archived_time)::float8, "
            "last_failed_wal, extract(epoch from last_failed_time)::float8, failed_count, archived_count "
            "from pg_stat_archiver"
        ).fetchone()
    except psycopg.Error:
        return state
    if row is not None:
        state = dict(
            zip(
                (
                    "last_archived_wal",
                    "last_archived_at",
                    "last_failed_wal",
                    "last_failed_at",
                    "failed_count",
                    "archived_count",
                ),
                row,
                strict=True,
            )
        )
    try:
        queued = conn.execute(
            "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'"
        ).fetchone()
        state["queued"] = int(queued[0]) if queued else None
    except psycopg.Error:
        state["queued"] = None
    return state


def _at(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "?"


def archive_stall_error(
    conn: psycopg.Connection[Any], source: str, segment: str, waited: float
) -> VerificationError:
    """Given the backup's connection and the segment it waited for, return the error to raise:
    which segment, what the archiver last archived, and what archive_command last reported."""
    s = archiver_state(conn)
    parts = [
        f"WAL segment {segment} of source '{source}' did not reach the repository "
        f"within {human_duration(waited)}"
    ]
    if s:
        parts.append(
            f"the archiver last archived {s.get('last_archived_wal') or 'nothing'}"
            + (f" at {_at(s['last_archived_at'])}" if s.get("last_archived_at") else "")
            + (f", {s['queued']} segment(s) still queued" if s.get("queued") is not None else "")
        )
        failed_recently = bool(s.get("last_failed_wal")) and (s.get("last_failed_at") or 0) >= (
            s.get("last_archived_at") or 0
        )
        if s.get("failed_count"):
            parts.append(
                f"archive_command last failed on {s.get('last_failed_wal')} "
                f"at {_at(s.get('last_failed_at'))} "
                f"({s['failed_count']} failure(s) since the statistics reset)"
            )
        else:
            parts.append("archive_command has not failed (it is behind, not broken)")
    else:
        failed_recently = False
    if failed_recently:
        hint = (
            "archive_command is failing: its error is in the PostgreSQL server log; check it with "
            "'recoverctl postgres check' and 'recoverctl wal push' by hand"
        )
    else:
        hint = (
            f"archiving is slower than the WAL written: wait for it to catch up and raise "
            f"sources.{source}.wal_wait (now {human_duration(waited)}) for backups taken under heavy writes"
        )
    return VerificationError("; ".join(parts), hint=hint, details={"segment": segment, "archiver": s})
