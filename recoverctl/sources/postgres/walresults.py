"""What `wal push`, `wal fetch` and `wal expire` report, as typed results.

Standard library only: the `recoverctl-wal` entry point prints these from its hand-off paths,
which must not pay for the config (pydantic), the repository or the catalog. Each `to_json`
gives the keys the commands have always printed; a key a path never had is left out, not null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WalPush:
    """One WAL file pushed (archive_command): stored, or found already archived.

    `handed_off`: an earlier call (or the detached pusher) already stored it, this call only
    read its marker. `pushed_ahead`: ready siblings this call stored too; `pushing_ahead`: ready
    siblings handed to a detached pusher. `key`/`stored_bytes` when this call read the
    repository; `seconds` when the action timed itself.
    """

    name: str
    source: str
    status: str  # stored / already-archived
    bytes: int
    handed_off: bool = False
    key: str | None = None
    stored_bytes: int | None = None
    pushed_ahead: int | None = None
    pushing_ahead: int | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.key is not None:
            d["key"] = self.key
        d.update(status=self.status, bytes=self.bytes)
        if self.stored_bytes is not None:
            d["stored_bytes"] = self.stored_bytes
        d["source"] = self.source
        if self.handed_off:
            d["pushed_ahead"] = True
        elif self.pushed_ahead is not None:
            d["pushed_ahead"] = self.pushed_ahead
        if self.pushing_ahead is not None:
            d["pushing_ahead"] = self.pushing_ahead
        if self.seconds is not None:
            d["seconds"] = self.seconds
        return d


@dataclass(frozen=True)
class WalFetch:
    """One WAL file written for restore_command. `prefetched`: it came from the read-ahead
    spool, not the repository; `read_ahead`: how many following segments this call spooled.
    `dest` is left out by the entry point's fetcher path, which never saw it."""

    name: str
    source: str
    bytes: int
    prefetched: bool
    dest: str | None = None
    read_ahead: int | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "source": self.source, "bytes": self.bytes}
        if self.dest is not None:
            d["dest"] = self.dest
        d["prefetched"] = self.prefetched
        if self.read_ahead is not None:
            d["read_ahead"] = self.read_ahead
        return d


@dataclass(frozen=True)
class WalExpiry:
    """The archived WAL of one source that no kept backup needs: removed (or, in a dry run,
    listed). `oldest_backup`/`oldest_needed` name the oldest kept physical backup and its start
    segment; without any, nothing is removed and `reason` says so."""

    source: str
    oldest_needed: str | None
    removed: list[str] = field(default_factory=list)
    oldest_backup: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.oldest_backup is not None:
            d["oldest_backup"] = self.oldest_backup
        d.update(oldest_needed=self.oldest_needed, removed=self.removed)
        if self.reason is not None:
            d["reason"] = self.reason
        return d
