"""One progress interface for long work, and the ways to show it.

Producers (backup, restore, verify, copy, prune) call `update(counters)` as often as they like;
every implementation throttles. How it is shown is chosen once, by `progress_for`:

- ``--json`` with status lines: ``{"message_type": "status", ...}`` lines on stdout;
- a terminal: a rich bar on stderr (percent, bytes done/total, throughput, ETA); with NO_COLOR
  (or TERM=dumb) the same figures redrawn with a carriage return and no escape codes;
- no terminal (cron, CI, a pipe): plain lines on stderr, one per step (every tenth of the work,
  or a minute without a total), timestamped under ``-v``; no redraw, no escape codes;
- ``-q`` or ``--json`` without status lines: nothing.

The counters name what is measured: the first pair of `MEASURES` present gives done and total.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from recoverctl.units import human_duration, human_rate, human_size

# (done, total, unit) counter pairs, first match wins. A producer that knows its total passes it
# under the pair's total key; without one the figures show what is done and the rate only.
MEASURES: tuple[tuple[str, str, str], ...] = (
    ("bytes_done", "bytes_total", "bytes"),
    ("bytes_restored", "bytes_total", "bytes"),
    ("bytes_read", "bytes_total", "bytes"),
    ("packs_read", "packs_to_read", "packs"),
    ("packs_repacked", "packs_to_repack", "packs"),
)


@dataclass(frozen=True)
class Figures:
    """Where the work stands: `done` of `total` `unit` after `elapsed` seconds, `base` of them
    already done when the clock started (an incremental's unchanged files: no throughput)."""

    done: float
    total: float | None
    unit: str
    elapsed: float
    base: float = 0.0

    @classmethod
    def of(cls, counters: dict[str, Any], elapsed: float, base: float = 0.0) -> Figures | None:
        """Given a producer's counters, return its figures; None when no known measure is in them."""
        for done_key, total_key, unit in MEASURES:
            done = counters.get(done_key)
            if isinstance(done, int | float):
                total = counters.get(total_key)
                known = isinstance(total, int | float) and total > 0
                return cls(done, total if known else None, unit, elapsed, min(base, done))
        return None

    @property
    def fraction(self) -> float | None:
        return None if self.total is None else min(1.0, self.done / self.total)

    @property
    def rate(self) -> float | None:
        return (self.done - self.base) / self.elapsed if self.elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(0.0, self.total - self.done) / rate

    def amount(self, n: float | None) -> str:
        """Given a count of this measure's unit, return it for people ('12.0 MiB', '7 packs')."""
        if n is None:
            return "?"
        return human_size(n) if self.unit == "bytes" else f"{n:.0f} {self.unit}"

    def speed(self) -> str:
        rate = self.rate
        if self.unit == "bytes":
            return human_rate(rate)
        return "-" if rate is None else f"{rate:.1f} {self.unit}/s"

    def text(self, finished: bool = False) -> str:
        """Return the figures on one line: '45% 90.0 MiB / 200.0 MiB, 150.0 MiB/s, ETA 1.0s'."""
        fraction = self.fraction
        percent = f"{fraction * 100:.0f}% " if fraction is not None else ""
        of = f" / {self.amount(self.total)}" if self.total is not None else ""
        when = f"in {human_duration(self.elapsed)}" if finished else f"ETA {human_duration(self.eta)}"
        return f"{percent}{self.amount(self.done)}{of}, {self.speed()}, {when}"


def counts_text(counters: dict[str, Any]) -> str:
    """Given counters without a measure, return them for people: names of steps as they are,
    counts named ('offsite, snapshot 3f2a9c1b (files)', 'files done 12')."""
    return ", ".join(v if isinstance(v, str) else f"{k.replace('_', ' ')} {v}" for k, v in counters.items())


class Progress:
    """Reports nothing: the default for producers, and the choice for -q."""

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


class _Throttled(Progress):
    """Keeps the newest counters and draws at most every `interval` seconds, plus always a first
    frame (so even a short run shows one) and a final one on close."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started = time.monotonic()
        self.counters: dict[str, Any] = {}
        self._last_draw: float | None = None
        self._last_update = self.started
        self._base = 0.0
        self._gone = False
        self._lock = threading.Lock()

    def update(self, counters: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if self._behind(counters):
                return
            self.counters = counters
            self._last_update = now
            if self._last_draw is None:
                self.started = now  # the work's own clock: opening the repository is not throughput
                first = Figures.of(counters, 0.0)
                self._base = first.done if first is not None else 0.0
            elif now - self._last_draw < self.interval:
                return
            self._last_draw = now
            elapsed = now - self.started
            self.safely(lambda: self.draw(elapsed, finished=False))

    def safely(self, show: Callable[[], None]) -> None:
        """Run `show` unless the display is gone: a closed stderr (`... 2>&1 | head -1`) must not
        fail the backup that reports to it, so the display stops instead."""
        if self._gone:
            return
        try:
            show()
        except (OSError, ValueError):  # EPIPE, EIO, or a file already closed
            self._gone = True

    def _behind(self, counters: dict[str, Any]) -> bool:
        """Return True when `counters` are older than those shown: producer threads take their
        counters under their own lock but report them after it, so they can arrive out of order.
        Counters of another measure or total are a new step (a second restore), never older."""
        new, old = Figures.of(counters, 0.0), Figures.of(self.counters, 0.0)
        if new is None or old is None:
            return False
        return (new.unit, new.total) == (old.unit, old.total) and new.done < old.done

    def figures(self, elapsed: float) -> Figures | None:
        """Return the figures of the newest counters, `elapsed` seconds into the work."""
        return Figures.of(self.counters, elapsed, self._base)

    def close(self) -> None:
        with self._lock:
            if self._last_draw is not None:  # nothing was shown when the work never started
                # Timed to the last counters: what the command does after the work is not the work.
                elapsed = self._last_update - self.started
                self.safely(lambda: self.draw(elapsed, finished=True))
            self.safely(self.finish)

    def draw(self, elapsed: float, finished: bool) -> None:
        """Show `self.counters` (called with the lock held)."""

    def finish(self) -> None:
        """Release the display after the final frame (called with the lock held)."""


class RichProgress(_Throttled):
    """A rich bar on a terminal's stderr: percent, done/total, throughput, ETA."""

    def __init__(self, label: str, console: Any = None) -> None:
        super().__init__(interval=0.1)
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as Bar

        self.console = console or Console(stderr=True)
        # The figures are one text column drawn by Figures.text, so the bar and the plain lines
        # say the same thing with the same units; rich redraws them 4 times a second.
        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[figures]}"),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )
        self.task = self.bar.add_task(label, total=None, figures="")
        self._started_bar = False

    def draw(self, elapsed: float, finished: bool) -> None:
        if not self._started_bar:  # started with the work: a refused command leaves no bar behind
            self.bar.start()
            self._started_bar = True
        figures = self.figures(elapsed)
        if figures is None:
            self.bar.update(self.task, figures=counts_text(self.counters))
        else:
            text = figures.text(finished)
            self.bar.update(self.task, completed=figures.done, total=figures.total, figures=text)
        self.bar.refresh()

    def warn(self, text: str) -> None:
        with self._lock:
            self.safely(lambda: self.console.print(f"[yellow]warning:[/] {text}", highlight=False))

    def finish(self) -> None:
        if self._started_bar:
            self.bar.stop()


class LineProgress(_Throttled):
    """Plain text on a stream without escape codes.

    `redraw`: one line rewritten in place with a carriage return (a terminal that wants no
    colour); else one line per step (a log): when the work crosses a tenth of its total, or
    `step_interval` seconds passed without a line, or a named step begins; and a final line.
    `timestamps` prefixes each logged line with the UTC time (for cron logs).
    """

    def __init__(
        self,
        label: str,
        out: TextIO,
        *,
        redraw: bool,
        timestamps: bool = False,
        step_interval: float = 60.0,
    ) -> None:
        super().__init__(interval=0.25)
        self.label = label
        self.out = out
        self.redraw = redraw
        self.timestamps = timestamps
        self.step_interval = step_interval
        self._width = 0
        self._last_step: tuple[int, float] | None = None  # (tenths done, elapsed) of the last line
        self._last_text = ""

    def _line(self, elapsed: float, finished: bool) -> str:
        figures = self.figures(elapsed)
        if figures is not None:
            return f"{self.label}: {figures.text(finished)}"
        return f"{self.label}: {counts_text(self.counters)}" + (
            f", in {human_duration(elapsed)}" if finished else ""
        )

    def draw(self, elapsed: float, finished: bool) -> None:
        if self.redraw:
            text = self._line(elapsed, finished)
            self.out.write("\r" + text.ljust(self._width) + ("\n" if finished else ""))
            self._width = 0 if finished else len(text)
            self.out.flush()
            return
        figures = self.figures(elapsed)
        if figures is None:  # named steps (copy: 'snapshot 3f2a9c1b (files)'): a line per step
            line = self._line(elapsed, finished)
            if finished or line != self._last_text:
                self._last_text = line
                self._print(line)
            return
        tenths = int(figures.fraction * 10) if figures.fraction is not None else -1
        if not finished and tenths >= 10:
            return  # all done: the final line says so, with the time it took
        if not finished and self._last_step is not None:
            last_tenths, last_at = self._last_step
            if tenths <= last_tenths and elapsed - last_at < self.step_interval:
                return
        self._last_step = (tenths, elapsed)
        self._print(self._line(elapsed, finished))

    def _print(self, text: str) -> None:
        if self.timestamps:
            text = time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + text
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        with self._lock:
            self.safely(lambda: self._warn(text))

    def _warn(self, text: str) -> None:
        if self.redraw and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self._width = 0
        self._print(f"warning: {text}")


def wants_plain_text(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Return True when escape codes are unwelcome: NO_COLOR set and not empty, or TERM=dumb."""
    env = os.environ if environ is None else environ
    return bool(env.get("NO_COLOR")) or env.get("TERM") == "dumb"


def progress_for(
    *,
    label: str,
    json_lines: bool = False,
    as_json: bool = False,
    quiet: bool = False,
    timestamps: bool = False,
    stream: TextIO | None = None,
) -> Progress:
    """Given what the work is called and the command's output flags, return its progress display.

    `json_lines` (with `as_json`): status lines on stdout. `as_json` otherwise, or `quiet`:
    nothing. Else on `stream` (stderr): a bar on a terminal (plain redraw under NO_COLOR), plain
    lines without one, timestamped when `timestamps` (-v).
    """
    if as_json:
        return JsonLinesProgress() if json_lines else Progress()
    if quiet:
        return Progress()
    out = stream or sys.stderr
    tty = out.isatty()
    if tty and not wants_plain_text():
        return RichProgress(label)
    return LineProgress(label, out, redraw=tty, timestamps=timestamps and not tty)
