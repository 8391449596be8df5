"""WAL file names and LSNs: the arithmetic PostgreSQL uses to name segments and history files."""

from __future__ import annotations

import re

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024

SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
PARTIAL_RE = re.compile(r"^[0-9A-F]{24}\.partial$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
BACKUP_RE = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """Given 'X/Y' as PostgreSQL prints an LSN, return it as an integer; raise ValueError."""
    m = _LSN_RE.match(text.strip())
    if not m:
        raise ValueError(f"not an LSN: {text!r} (expected e.g. 0/16B3748)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """Given an integer LSN, return PostgreSQL's 'X/Y' text form."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """Return the name of the WAL segment holding byte `lsn` on `timeline`."""
    segno = lsn // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def segment_number(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Given a segment name, return its absolute segment number (timeline ignored)."""
    per_xlogid = 0x100000000 // segment_size
    return int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)


def segment_from_number(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def segments_between(first: str, last: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """Return every segment name from `first` to `last` inclusive on first's timeline."""
    tl = int(first[:8], 16)
    return [
        segment_from_number(tl, n, segment_size)
        for n in range(segment_number(first, segment_size), segment_number(last, segment_size) + 1)
    ]


def timeline_of(name: str) -> int:
    """Return the timeline a WAL segment, partial, backup or history file name belongs to."""
    return int(name[:8], 16)


def is_wal_file_name(name: str) -> bool:
    """True for the names PostgreSQL archives: segments, .partial, .history and .backup files."""
    return bool(
        SEGMENT_RE.match(name) or PARTIAL_RE.match(name) or HISTORY_RE.match(name) or BACKUP_RE.match(name)
    )


def wal_key(source: str, name: str) -> str:
    """Return the repository object key of a WAL file: wal/<source>/<timeline>/<name>."""
    return f"wal/{source}/{timeline_of(name):08X}/{name}"


def wal_prefix(source: str, timeline: int | None = None) -> str:
    return f"wal/{source}/" if timeline is None else f"wal/{source}/{timeline:08X}/"
