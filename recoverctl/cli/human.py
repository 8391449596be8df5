"""Sizes as people read them, for every command's text output (`--json` keeps raw numbers).

Durations use `recoverctl.drill.scoring.human_duration`, which status and drill reports already
use, so one command and the next say '4m05s' alike.
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(n: float | None) -> str:
    """Given a byte count, return it in binary units: '512 B', '1.5 KiB', '221.3 MiB'; '-' for None."""
    if n is None:
        return "-"
    size = float(n)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the last unit always returns")
