"""The low-level backup API (pg_backup_start / pg_backup_stop) on one held connection.

A non-exclusive backup belongs to the session that started it: if this process dies or the
connection drops, the server aborts the backup itself. On any error we close the connection,
which aborts it the same way, so a failed backup never leaves the server in backup mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import TracebackType

import psycopg

from recoverctl.sources.postgres.walnames import DEFAULT_SEGMENT_SIZE, parse_lsn, segment_name

_LABEL_WAL_RE = re.compile(r"^START WAL LOCATION: (\S+) \(file ([0-9A-F]{24})\)$", re.M)
_LABEL_TL_RE = re.compile(r"^START TIMELINE: (\d+)$", re.M)


@dataclass
class BackupStart:
    lsn: str
    timeline: int
    segment: str
    time: float
    system_identifier: str
    server_version: int
    segment_size: int
    data_checksums: bool
    data_directory: str
    tablespaces: dict[str, str] = field(default_factory=dict)  # oid -> location


@dataclass
class BackupStop:
    lsn: str
    segment: str
    backup_label: str
    tablespace_map: str
    time: float


class BackupSession:
    """Context manager: `with BackupSession(conn) as s: s.start(label) ... s.stop()`.

    Leaving the block without `stop()` (an exception, a signal) closes the connection, which
    makes the server abort the backup.
    """

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.started: BackupStart | None = None
        self.stopped: BackupStop | None = None

    def __enter__(self) -> BackupSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.started is not None and self.stopped is None:
            self.abort()

    def abort(self) -> None:
        """Abort a running backup by ending the session that owns it."""
        self.conn.close()

    def start(self, label: str, *, fast: bool = True) -> BackupStart:
        """Start a non-exclusive backup; return the start LSN, timeline and cluster facts."""
        cur = self.conn.cursor()
        version = int(self.conn.info.server_version)
        row = cur.execute(
            "select system_identifier::text, current_setting('data_checksums') = 'on', "
            "(select bytes_per_wal_segment from pg_control_init()), current_setting('data_directory') "
            "from pg_control_system()"
        ).fetchone()
        assert row is not None
        sysid, checksums, seg_size, data_dir = row
        tablespaces = {
            str(oid): loc
            for oid, loc in cur.execute(
                "select oid, pg_tablespace_location(oid) from pg_tablespace "
                "where spcname not in ('pg_default', 'pg_global')"
            ).fetchall()
        }
        if version >= 150000:
            start_lsn = cur.execute("select pg_backup_start(%s, %s)::text", (label, fast)).fetchone()
        else:
            start_lsn = cur.execute("select pg_start_backup(%s, %s, false)::text", (label, fast)).fetchone()
        assert start_lsn is not None
        now = cur.execute("select extract(epoch from now())::float8").fetchone()
        assert now is not None
        timeline_row = cur.execute("select timeline_id from pg_control_checkpoint()").fetchone()
        timeline = int(timeline_row[0]) if timeline_row else 1
        lsn = str(start_lsn[0])
        self.started = BackupStart(
            lsn=lsn,
            timeline=timeline,
            segment=segment_name(timeline, parse_lsn(lsn), int(seg_size or DEFAULT_SEGMENT_SIZE)),
            time=float(now[0]),
            system_identifier=str(sysid),
            server_version=version,
            segment_size=int(seg_size or DEFAULT_SEGMENT_SIZE),
            data_checksums=bool(checksums),
            data_directory=str(data_dir),
            tablespaces=tablespaces,
        )
        return self.started

    def stop(self) -> BackupStop:
        """Stop the backup (the server switches WAL); return backup_label, tablespace_map and stop LSN.

        We do not ask the server to wait for archiving: the caller checks the repository itself
        with a timeout, so a broken archive_command fails the backup instead of hanging it.
        """
        assert self.started is not None
        cur = self.conn.cursor()
        if int(self.conn.info.server_version) >= 150000:
            row = cur.execute("select lsn::text, labelfile, spcmapfile from pg_backup_stop(false)").fetchone()
        else:
            row = cur.execute(
                "select lsn::text, labelfile, spcmapfile from pg_stop_backup(false, false)"
            ).fetchone()
        assert row is not None
        now = cur.execute("select extract(epoch from now())::float8").fetchone()
        assert now is not None
        lsn, label, spcmap = str(row[0]), str(row[1]), str(row[2] or "")
        m = _LABEL_TL_RE.search(label)
        timeline = int(m.group(1)) if m else self.started.timeline
        self.started.timeline = timeline
        wal = _LABEL_WAL_RE.search(label)
        if wal:
            self.started.segment = wal.group(2)
        # The stop segment is the one holding the last byte before the stop point.
        stop_segment = segment_name(timeline, max(parse_lsn(lsn) - 1, 0), self.started.segment_size)
        self.stopped = BackupStop(
            lsn=lsn, segment=stop_segment, backup_label=label, tablespace_map=spcmap, time=float(now[0])
        )
        return self.stopped
