"""What a drill needs from a backup source: pick a snapshot for a recovery point, and write it out.

The PostgreSQL implementation wraps `actions.restore_postgres`; the drill engine only sees this
protocol, so the scratch-server lifecycle, checks and scoring do not depend on the repository.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recoverctl.drill.playbook import RecoveryPoint


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
