"""One small progress interface for long work: nothing, a rich live line on a TTY, or JSON status lines.

Producers call `update(counters)` as often as they like; implementations throttle. Text progress
goes to stderr and only on a TTY; JSON status lines go to stdout (``message_type: status``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO


class Progress:
    """Reports nothing: the default for non-interactive runs."""

    def update(self, counters: dict[str, Any]) -> None:
        """Record the current counters (e.g. files_done, bytes_read, bytes_total)."""

    def warn(self, text: str) -> None:
        """Report a problem that does not stop the work."""

    def close(self) -> None:
        """Finish the display."""


class JsonLinesProgress(Progress):
    """Prints ``{"message_type": "status", ...}`` lines at most every `interval` seconds."""

    def __init__(self, out: TextIO | None = None, interval: float = 1.0, kind: str = "status"):
        self.out = out or sys.stdout
        self.interval = interval
        self.kind = kind
        self._last = 0.0
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def update(self, counters: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                return
            self._last = now
            line = {"message_type": self.kind, "elapsed_s": round(now - self._started, 3), **counters}
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()

    def warn(self, text: str) -> None:
        with self._lock:
            self.out.write(json.dumps({"message_type": "warning", "message": text}) + "\n")
            self.out.flush()


class RichProgress(Progress):
    """A single live status line on stderr (rich)."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.label = label
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)
        self.live.start()
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def update(self, counters: dict[str, Any]) -> None:
        from rich.filesize import decimal

        parts = [self.label, f"{time.monotonic() - self._started:.0f}s"]
        for key, value in counters.items():
            if key.startswith("bytes") and isinstance(value, int):
                parts.append(f"{key.replace('_', ' ')} {decimal(value)}")
            else:
                parts.append(f"{key.replace('_', ' ')} {value}")
        with self._lock:
            self.live.update(" · ".join(parts))

    def warn(self, text: str) -> None:
        with self._lock:
            self.console.print(f"[yellow]warning:[/] {text}")

    def close(self) -> None:
        self.live.stop()


def progress_for(*, json_lines: bool, show: bool, label: str) -> Progress:
    """Return JSON status lines with --json, a live line on an interactive stderr, else nothing."""
    if json_lines:
        return JsonLinesProgress()
    if show:
        return RichProgress(label)
    return Progress()
