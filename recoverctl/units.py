"""Sizes, durations and rates as people read them: the one formatter every command's text uses.

`--json` keeps raw numbers (bytes, seconds); only text goes through here, so one command and the
next say '210.9 MiB' and '4m05s' alike. Binary units, like restic and `du -h`.
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


def human_rate(bytes_per_second: float | None) -> str:
    """Given a throughput in bytes per second, return e.g. '152.4 MiB/s'; '-' for None."""
    return "-" if bytes_per_second is None else f"{human_size(bytes_per_second)}/s"


def human_duration(seconds: float | None) -> str:
    """Given seconds, return '1h02m', '4m05s', '12.3s', '2d03h'; '-' for None."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 60:
        return f"{sign}{s:.1f}s"
    if s < 3600:
        return f"{sign}{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{sign}{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{sign}{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"
