"""What a drill needs from a backup source: pick a snapshot for a recovery point, and write it out.

The PostgreSQL implementation wraps `actions.restore_postgres`; the drill engine only sees this
protocol, so the scratch-server lifecycle, checks and scoring do not depend on the repository.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recoverctl.drill.playbook import RecoveryPoint
from recoverctl.errors import RecoverctlError, VerificationError
from recoverctl.progress import Progress

_PACK_RE = re.compile(r"\bpack ([0-9a-f]{8,})")


@dataclass
class Selection:
    """The chosen snapshot and the recovery target derived from the playbook's recovery point."""

    snapshot_id: str
    snapshot_time: float | None
    # latest / immediate / time (a random point resolves to a time)
    target_kind: str
    target_time: float | None = None
    # Bytes the restored data dir will need, when the snapshot says.
    size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fetched:
    """What fetching wrote into the scratch data dir."""

    bytes: int
    details: dict[str, Any] = field(default_factory=dict)


class WarningLog(Progress):
    """Keeps the restore's per-file warnings: they name the damaged pack, the final error does not."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def warn(self, text: str) -> None:
        with self._lock:
            self.warnings.append(text)

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


class Restorer(Protocol):
    def select(self, point: RecoveryPoint, drill_start: float) -> Selection:
        """Return the snapshot to restore for `point`; raise NotFoundError when none qualifies."""
        ...

    def fetch(self, selection: Selection, data_dir: Path, os_user: str | None) -> Fetched:
        """Write the snapshot's files and the recovery configuration into the empty `data_dir`.

        Raise RecoverctlError naming what is damaged or missing (a pack, a WAL segment).
        """
        ...


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
