"""The progress displays, driven directly: what each one writes for the same counters."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from recoverctl.progress import (
    Figures,
    JsonLinesProgress,
    LineProgress,
    Progress,
    RichProgress,
    progress_for,
    wants_plain_text,
)

MiB = 1024 * 1024


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_figures_name_percent_amounts_rate_and_eta_with_one_formatter() -> None:
    f = Figures.of({"files_done": 3, "bytes_done": 50 * MiB, "bytes_total": 200 * MiB}, elapsed=2.0)
    assert f is not None
    assert f.text() == "25% 50.0 MiB / 200.0 MiB, 25.0 MiB/s, ETA 6.0s"
    assert f.text(finished=True) == "25% 50.0 MiB / 200.0 MiB, 25.0 MiB/s, in 2.0s"
    # Without a total: what is done and how fast, no percent, no ETA.
    f = Figures.of({"bytes_read": 3 * MiB}, elapsed=1.0)
    assert f is not None and f.text() == "3.0 MiB, 3.0 MiB/s, ETA -"
    # Counts that are not bytes keep their unit.
    f = Figures.of({"packs_read": 3, "packs_to_read": 12}, elapsed=2.0)
    assert f is not None and f.text() == "25% 3 packs / 12 packs, 1.5 packs/s, ETA 6.0s"
    # Bytes already done when the clock started (unchanged files) are no throughput.
    f = Figures.of({"bytes_done": 150 * MiB, "bytes_total": 200 * MiB}, elapsed=2.0, base=100 * MiB)
    assert f is not None and f.speed() == "25.0 MiB/s" and f.eta == 2.0
    assert Figures.of({"files_done": 1}, elapsed=1.0) is None


def test_lines_without_a_terminal_are_plain_one_per_tenth_and_a_final_one() -> None:
    out = io.StringIO()
    p = LineProgress("backup", out, redraw=False)
    p.interval = 0.0  # every update reaches the step logic; the steps decide
    for done in range(0, 101):
        p.update({"bytes_done": done * MiB, "bytes_total": 100 * MiB})
    p.warn("f: vanished")
    p.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # 100% is not logged twice: the final line says it, with the time it took.
    assert [line.split()[1] for line in lines[:10]] == [f"{n}%" for n in range(0, 100, 10)]
    assert lines[10] == "warning: f: vanished"
    assert re.fullmatch(r"backup: 100% 100\.0 MiB / 100\.0 MiB, .+/s, in .+s", lines[11])
    assert len(lines) == 12


def test_lines_carry_utc_timestamps_when_asked() -> None:
    out = io.StringIO()
    p = LineProgress("verify", out, redraw=False, timestamps=True)
    p.update({"packs_read": 1, "packs_to_read": 4})
    p.close()
    for line in out.getvalue().splitlines():
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ verify: ", line), line


def test_redraw_without_colour_uses_carriage_returns_and_no_escape_codes() -> None:
    out = Tty()
    p = LineProgress("restore", out, redraw=True)
    p.update({"bytes_restored": 10 * MiB, "bytes_total": 20 * MiB})
    p.warn("x: damaged")
    p.update({"bytes_restored": 20 * MiB, "bytes_total": 20 * MiB})
    p.close()
    text = out.getvalue()
    assert text.startswith("\rrestore: 50% ") and "\x1b" not in text
    assert "\rwarning: x: damaged\n" in text  # the bar line cleared first
    assert text.endswith("\n") and "restore: 100% 20.0 MiB / 20.0 MiB" in text.splitlines()[-1]


def test_counters_arriving_out_of_order_never_move_the_figures_back() -> None:
    out = io.StringIO()
    p = LineProgress("restore", out, redraw=False)
    p.update({"bytes_restored": 20 * MiB, "bytes_total": 20 * MiB})
    p.update({"bytes_restored": 19 * MiB, "bytes_total": 20 * MiB})  # a thread that reported late
    p.close()
    assert out.getvalue().splitlines()[-1].startswith("restore: 100% 20.0 MiB")
    # Another total is another step (a second restore on the same display): it starts over.
    p = LineProgress("restore", out, redraw=False)
    p.update({"bytes_restored": 20 * MiB, "bytes_total": 20 * MiB})
    p.update({"bytes_restored": 1 * MiB, "bytes_total": 40 * MiB})
    p.close()
    assert out.getvalue().splitlines()[-1].startswith("restore: 2% 1.0 MiB / 40.0 MiB")


def test_named_steps_without_a_measure_log_a_line_each() -> None:
    out = io.StringIO()
    p = LineProgress("copy", out, redraw=False)
    p.interval = 0.0
    for text in ("snapshot 3f2a9c1b (files)", "snapshot 3f2a9c1b (files)", "12 WAL objects"):
        p.update({"copy": "offsite", "now": text})
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "copy: offsite, snapshot 3f2a9c1b (files)",
        "copy: offsite, 12 WAL objects",
    ]
    assert lines[2].startswith("copy: offsite, 12 WAL objects, in ") and len(lines) == 3


def test_a_closed_stderr_stops_the_display_not_the_work() -> None:
    out = io.StringIO()
    p = LineProgress("backup", out, redraw=False)
    out.close()  # as `recoverctl backup files x 2>&1 | head -1` leaves it
    p.update({"bytes_done": 1, "bytes_total": 2})
    p.warn("still fine")
    p.close()


def test_nothing_is_drawn_for_work_that_never_started() -> None:
    out = io.StringIO()
    LineProgress("copy", out, redraw=False).close()
    assert out.getvalue() == ""


def test_rich_bar_draws_a_first_and_a_final_frame_with_percent_and_throughput() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system="standard")
    p = RichProgress("backup", console=console)
    p.update({"bytes_done": 1 * MiB, "bytes_total": 4 * MiB})
    assert "25% 1.0 MiB / 4.0 MiB" in out.getvalue()  # the first frame, drawn at once
    p.update({"bytes_done": 4 * MiB, "bytes_total": 4 * MiB})
    p.close()
    assert re.search(r"100% 4\.0 MiB / 4\.0 MiB, [\d.]+ [KMG]iB/s, in ", out.getvalue())


def test_choice_follows_json_quiet_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(progress_for(label="b", json_lines=True, as_json=True), JsonLinesProgress)
    assert type(progress_for(label="b", as_json=True)) is Progress
    assert type(progress_for(label="b", quiet=True, stream=Tty())) is Progress
    assert isinstance(progress_for(label="b", stream=Tty()), RichProgress)
    piped = progress_for(label="b", stream=io.StringIO(), timestamps=True)
    assert isinstance(piped, LineProgress) and not piped.redraw and piped.timestamps
    monkeypatch.setenv("NO_COLOR", "1")
    plain = progress_for(label="b", stream=Tty())
    assert isinstance(plain, LineProgress) and plain.redraw
    assert wants_plain_text({"NO_COLOR": "1"}) and wants_plain_text({"TERM": "dumb"})
    assert not wants_plain_text({"NO_COLOR": "", "TERM": "xterm"})
