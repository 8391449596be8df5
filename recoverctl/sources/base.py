"""The Source protocol: what every kind of backup source (PostgreSQL, files, Docker volumes) offers
the use cases and the drill engine, so neither branches on the kind.

A source works on a repository the caller has opened (and locked, where it says so): opening,
locking and recording runs is the use cases' frame (actions/operation.py), not the source's.
`registry.source_for(cfg, name)` returns the Source for a configured name.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from recoverctl.errors import RecoverctlError, VerificationError
from recoverctl.progress import Progress
from recoverctl.repo import Repository

_PACK_RE = re.compile(r"\bpack ([0-9a-f]{8,})")


class PointInTime(Protocol):
    """Which state to recover (a drill playbook's `recovery_point` is one)."""

    @property
    def kind(self) -> str: ...  # latest, immediate, random, time

    @property
    def window(self) -> float: ...  # random: seconds before the drill start

    @property
    def time(self) -> datetime | None: ...  # time: the point itself

    def describe(self) -> str: ...


@dataclass
class Selection:
    """The chosen snapshot and the recovery target derived from the recovery point."""

    snapshot_id: str
    snapshot_time: float | None
    # latest / immediate / time / snapshot (a random point resolves to a time)
    target_kind: str
    target_time: float | None = None
    # Bytes the restored data will need, when the snapshot says.
    size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreRun:
    """How a drill restore is recorded, exactly as the operator's restore of the same source is:
    the run's status and details, the audit entry, and the error raised once it is recorded."""

    status: str
    bytes_read: int
    details: dict[str, Any]
    audit: tuple[str, dict[str, Any]] | None = None
    error: RecoverctlError | None = None


@dataclass
class Fetched:
    """What a drill restore wrote into the scratch space."""

    bytes: int
    details: dict[str, Any] = field(default_factory=dict)
    run: RestoreRun | None = None


# How a drill proves a restore of the source usable (the drill engine has one flow for each):
# - "scratch_server": restore with recovery configured, start a private server on it, wait for
#   recovery to end and run the playbook's checks against it (drill/engine.py);
# - "rehash": the restore is the recovery; re-hash every restored file against the snapshot
#   (drill/snapshot_drill.py).
DrillFlow = Literal["scratch_server", "rehash"]


class Source(Protocol):
    """A configured backup source, behind which its kind's mechanics live."""

    name: str  # the source's name in the config
    kind: str  # the kind its snapshots have in the repository
    drill_flow: DrillFlow  # how a drill of it checks the restore
    # The catalog run a restore of it is recorded as, and the run's source column.
    restore_run_kind: str
    run_source: str | None

    def backup(self, repo: Repository, progress: Progress, **options: Any) -> Any:
        """Write a snapshot of the source into `repo` (the caller holds its lock); return the kind's
        result (a BackupResult; a PostgreSQL backup's also says what was checked on the way).
        `options` are the kind's own (paths and excludes, the mountpoint, the backup type)."""
        ...

    def restore(
        self, repo: Repository, snapshot: str | None, into: Path, progress: Progress, **options: Any
    ) -> Any:
        """Restore `snapshot` of the source into the directory `into`; return the kind's result.
        `options` are the kind's own (delta and force; a recovery target and tablespace map)."""
        ...

    def select_recovery_point(self, repo: Repository, point: PointInTime, drill_start: float) -> Selection:
        """Return the snapshot a restore to `point` would use, as the operator's restore would
        choose it; raise NotFoundError (exit 10) naming what exists when none qualifies."""
        ...

    def drill_restore(
        self, repo: Repository, selection: Selection, data_dir: Path, os_user: str | None, progress: Progress
    ) -> Fetched:
        """Restore the selected snapshot into the empty scratch `data_dir` (a PostgreSQL source also
        writes its recovery configuration; the drill starts the server). Raise RecoverctlError
        naming what is damaged or missing (a pack, a WAL segment)."""
        ...


class WarningLog(Progress):
    """Keeps the restore's per-file warnings: they name the damaged pack, the final error does not."""

    def __init__(self, display: Progress | None = None) -> None:
        self.warnings: list[str] = []
        self.display = display or Progress()  # where people watch the restore, if anywhere
        self._lock = threading.Lock()

    def update(self, counters: dict[str, Any]) -> None:
        self.display.update(counters)

    def warn(self, text: str) -> None:
        with self._lock:
            self.warnings.append(text)
        self.display.warn(text)

    def damage_error(self, e: RecoverctlError, snapshot_id: str, source: str) -> VerificationError | None:
        """Given the restore's failure, return an error naming the damaged pack(s), or None when
        neither the failure nor a warning names one."""
        packs = sorted({m for text in [*self.warnings, e.message] for m in _PACK_RE.findall(text)})
        if not packs:
            return None
        return VerificationError(
            f"snapshot {snapshot_id[:8]} of '{source}' has damaged data in "
            f"pack{'s' if len(packs) > 1 else ''} {', '.join(packs)}: {e.message}",
            hint="run 'recoverctl verify --read-data' and take a new backup; "
            "older snapshots may not share the damaged pack",
            details={"damaged_packs": packs, "warnings": self.warnings[:20]},
        )

    @contextlib.contextmanager
    def naming_damage(self, snapshot_id: str, source: str) -> Iterator[None]:
        """Run a restore; raise its failure as `damage_error`'s VerificationError when a damaged
        pack explains it, else unchanged."""
        try:
            yield
        except RecoverctlError as e:
            damaged = self.damage_error(e, snapshot_id, source)
            if damaged is None:
                raise
            raise damaged from None


def random_time(
    window: float, drill_start: float, oldest: float | None, rng: random.Random | None = None
) -> float:
    """Return a time picked uniformly within `window` before `drill_start`, never before `oldest`
    (the oldest recoverable point), so a random drill never asks for a state no backup covers."""
    low = drill_start - window
    if oldest is not None:
        low = max(low, oldest)
    if low >= drill_start:
        return drill_start
    return (rng or random.SystemRandom()).uniform(low, drill_start)
