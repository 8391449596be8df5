"""From the receiver's spool into the repository: whole segments exactly as `wal push` stores
them (same key, same idempotent content check, so archive_command and the receiver can both
write a segment), and the segment being written as a partial copy each flush interval."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recoverctl.errors import ObjectNotFound
from recoverctl.sources.postgres.receiver_partial import encode_partial, partial_key, received_bytes
from recoverctl.sources.postgres.walnames import HISTORY_RE, PARTIAL_RE, SEGMENT_RE, segment_number
from recoverctl.sources.postgres.walpush import push_file

if TYPE_CHECKING:
    from recoverctl.repo import Repository


@dataclass
class UploadTick:
    """What one pass over the spool stored."""

    stored: list[str] = field(default_factory=list)  # whole segments and history files
    partial: str | None = None  # the segment whose partial copy the repository now holds
    partial_uploaded: bool = False  # False: unchanged since the last pass
    uploaded_lsn: int | None = None  # the repository holds all WAL before this position


class SpoolUploader:
    """Uploads a pg_receivewal spool directory for source `source`; call `tick()` repeatedly.

    The newest whole segment stays in the spool after upload (older ones are removed): from it
    pg_receivewal knows where to resume after a restart, so a receiver killed between two segments
    resumes where it stopped instead of at the server's current position.
    """

    def __init__(self, repo: Repository, source: str, spool: Path):
        self.repo, self.source, self.spool = repo, source, spool
        self.stored: set[str] = set()
        self.last_partial: tuple[str, bytes] | None = None

    def _store(self, name: str) -> bool:
        """Push one whole file (idempotent); return False when it vanished meanwhile."""
        try:
            data = (self.spool / name).read_bytes()
        except FileNotFoundError:
            return False
        push_file(self.repo, self.source, self.spool / name, data)
        if SEGMENT_RE.match(name):
            with contextlib.suppress(ObjectNotFound):
                self.repo.delete_object(partial_key(self.source, name))
        self.stored.add(name)
        return True

    def tick(self) -> UploadTick:
        """Store new whole segments and history files, then the changed partial segment; return
        what was done. Raise what the repository raises (the caller retries on its next tick);
        VerificationError when another cluster's WAL is in the repository under the same name."""
        out = UploadTick()
        entries = sorted(os.listdir(self.spool))
        whole = [e for e in entries if SEGMENT_RE.match(e)]
        for name in [e for e in entries if HISTORY_RE.match(e)] + whole:
            if name not in self.stored and self._store(name):
                out.stored.append(name)
        for name in whole[:-1]:  # stored above: only the newest is needed to resume
            (self.spool / name).unlink(missing_ok=True)
        partials = [e[:24] for e in entries if PARTIAL_RE.match(e) and (not whole or e[:24] > whole[-1])]
        if partials:
            self._upload_partial(partials[-1], out)
        elif whole:
            size = (self.spool / whole[-1]).stat().st_size
            out.uploaded_lsn = (segment_number(whole[-1], size) + 1) * size
        return out

    def _upload_partial(self, segment: str, out: UploadTick) -> None:
        try:
            padded = (self.spool / f"{segment}.partial").read_bytes()
        except FileNotFoundError:  # completed meanwhile: stored whole on the next tick
            return
        encoded = encode_partial(padded)
        if self.last_partial != (segment, encoded):
            self.repo.put_object(partial_key(self.source, segment), encoded)
            self.last_partial = (segment, encoded)
            out.partial_uploaded = True
        out.partial = segment
        out.uploaded_lsn = segment_number(segment, len(padded)) * len(padded) + received_bytes(encoded)
