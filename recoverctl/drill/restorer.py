"""What the drill engine needs from a backup source: pick a snapshot for a recovery point, and
write it out into the scratch space.

The engine only sees this protocol, so the scratch-server lifecycle, checks and scoring do not
depend on the repository. `actions.drill_restore.SourceRestorer` implements it for every source
through the Source protocol (sources/base.py), whose Selection and Fetched it passes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from recoverctl.drill.playbook import RecoveryPoint
from recoverctl.sources.base import Fetched, Selection

__all__ = ["Fetched", "Restorer", "Selection"]


class Restorer(Protocol):
    def select(self, point: RecoveryPoint, drill_start: float) -> Selection:
        """Return the snapshot to restore for `point`; raise NotFoundError when none qualifies."""
        ...

    def fetch(self, selection: Selection, data_dir: Path, os_user: str | None) -> Fetched:
        """Write the snapshot's files and the recovery configuration into the empty `data_dir`.

        Raise RecoverctlError naming what is damaged or missing (a pack, a WAL segment).
        """
        ...
