"""Progress as people see it: a 200 MiB backup and its restore on a real pseudo-terminal show a
bar with a percentage and a throughput while they run; NO_COLOR keeps every escape code out;
without a terminal (a pipe, cron) the lines are plain, one per step, never redrawn."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cli
from tests.fixtures.terminal import run_on_pty

pytestmark = pytest.mark.e2e

FILES = 20
FILE_SIZE = 10 * 1024 * 1024  # 200 MiB in all: random, so neither compression nor dedup shrink it
FRAME = re.compile(r"\d+% [\d.]+ [KMG]iB / [\d.]+ [KMG]iB, [\d.]+ [KMG]iB/s")


@pytest.fixture
def stack(cli: Cli, tmp_path: Path) -> tuple[Cli, Path]:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(FILES):
        (data / f"blob{i:02d}").write_bytes(os.urandom(FILE_SIZE))
    cli.write_config(
        {
            "repository": str(tmp_path / "repo"),
            "catalog": f"sqlite:///{tmp_path / 'c.db'}",
            "sources": {"data": {"type": "files", "paths": [str(data)]}},
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    cli("init", check=0)
    return cli, data


def _on_pty(cli: Cli, *args: str, env: dict[str, str] | None = None) -> tuple[bytes, int]:
    return run_on_pty(cli, *args, env={"TERM": "xterm-256color", "COLUMNS": "120", **(env or {})})


def _frames_before(out: bytes, summary: str) -> list[str]:
    """Given a terminal's bytes, return the progress frames drawn before the `summary` line: the
    text between carriage returns and newlines, escape codes removed."""
    text = out.decode(errors="replace")
    head, found, _ = text.partition(summary)
    assert found, f"no {summary!r} in {text[-2000:]!r}"
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", head)
    return [f for f in re.split(r"[\r\n]+", plain) if FRAME.search(f)]


def test_backup_and_restore_draw_a_bar_on_a_terminal(stack: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, data = stack
    out, code = _on_pty(cli, "backup", "files", str(data))
    assert code == 0, out[-2000:]
    assert b"\x1b[" in out  # a real terminal: rich draws with escape codes
    frames = _frames_before(out, "snapshot ")
    assert frames, out[-2000:]
    assert frames[-1].startswith("backup") and "100% 200.0 MiB / 200.0 MiB" in frames[-1]

    out, code = _on_pty(cli, "restore", "latest", "--target", str(tmp_path / "restored"))
    assert code == 0, out[-2000:]
    frames = _frames_before(out, "restored snapshot ")
    assert frames and "100% 200.0 MiB / 200.0 MiB" in frames[-1], out[-2000:]
    restored = tmp_path / "restored" / data.relative_to("/") / "blob07"  # snapshots keep absolute paths
    assert restored.read_bytes() == (data / "blob07").read_bytes()


def test_no_color_on_a_terminal_redraws_without_escape_codes(stack: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, data = stack
    opt_outs: list[tuple[dict[str, str], list[str]]] = [({"NO_COLOR": "1"}, []), ({}, ["--no-color"])]
    target = tmp_path / "restored"
    for env, flags in opt_outs:
        out, code = _on_pty(cli, *flags, "backup", "files", "--force-read", str(data), env=env)
        assert code == 0, out[-2000:]
        assert b"\x1b" not in out, out[-2000:]
        assert b"\r" in out  # redrawn in place, with a carriage return only
        assert _frames_before(out, "snapshot ")

        out, code = _on_pty(cli, *flags, "restore", "latest", "--target", str(target), env=env)
        assert code == 0 and b"\x1b" not in out, out[-2000:]
        assert _frames_before(out, "restored snapshot ")
        shutil.rmtree(target)


def test_without_a_terminal_lines_are_plain_and_timestamped_under_verbose(stack: tuple[Cli, Path]) -> None:
    cli, data = stack
    r = cli("backup", "files", str(data), check=0)
    assert "\r" not in r.stderr and "\x1b" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("backup: ")]
    # The first line comes at once, before a throughput can be measured ('-'); the rest have one.
    assert lines and all(re.match(r"backup: \d+% ", line) for line in lines), r.stderr
    assert all(FRAME.search(line) for line in lines[1:]), r.stderr
    assert re.search(r"backup: 100% 200\.0 MiB / 200\.0 MiB, [\d.]+ [KMG]iB/s, in ", lines[-1])
    assert len(lines) <= 12  # one per tenth of the work and a final line, not a line per file

    r = cli("-v", "backup", "files", "--force-read", str(data), check=0)
    stamped = [line for line in r.stderr.splitlines() if " backup: " in line]
    assert stamped and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ backup: ", s) for s in stamped)

    quiet = cli("-q", "backup", "files", "--force-read", str(data), check=0)
    assert "backup: " not in quiet.stderr

    # verify --read-data measures the packs it reads, in bytes.
    r = cli("verify", "--read-data", check=0)
    final = re.compile(r"^verify: 100% [\d.]+ MiB / [\d.]+ MiB, [\d.]+ [KMG]iB/s, in ", re.M)
    assert final.search(r.stderr), r.stderr


def test_a_drill_shows_its_fetch(stack: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, _ = stack
    cli("-q", "backup", "files", "--source", "data", check=0)
    book = tmp_path / "data-drill.yaml"
    drill = {"name": "data-weekly", "source": "data", "recovery_point": "latest"}
    drill |= {"targets": {"rto": "1h", "rpo": "1h"}, "where": {"temp_dir": str(tmp_path)}}
    book.write_text(yaml.safe_dump({"drill": drill}))
    out, code = _on_pty(cli, "drill", "run", str(book))
    assert code == 0, out[-2000:]
    frames = [f for f in _frames_before(out, "data-weekly: checks") if f.startswith("fetch data")]
    assert frames and "100% 200.0 MiB / 200.0 MiB" in frames[-1], out[-3000:]


def test_a_copy_draws_a_bar_towards_what_the_copy_lacks(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(FILES):
        (data / f"blob{i:02d}").write_bytes(os.urandom(FILE_SIZE))
    secret = tmp_path / "offsite.pw"
    secret.write_text("offsite passphrase")
    repositories = {
        "local": {"url": str(tmp_path / "primary")},
        "offsite": {"url": str(tmp_path / "copy"), "password_file": str(secret)},
    }
    cli.write_config(
        {
            "repositories": repositories,
            "catalog": f"sqlite:///{tmp_path / 'c.db'}",
            "sources": {"data": {"type": "files", "paths": [str(data)]}},
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    cli("init", check=0)
    cli("init", "--repo", "offsite", check=0)
    cli("-q", "backup", "files", "--source", "data", check=0)

    r = cli("copy", check=0)
    lines = [line for line in r.stderr.splitlines() if line.startswith("copy: ")]
    # Its total is the 200 MiB of file data the copy lacks, known before the first blob is sent.
    final = re.compile(r"copy: 100% 200\.0 MiB / 200\.0 MiB, [\d.]+ [KMG]iB/s, in ")
    assert lines and final.search(lines[-1]), r.stderr
    out, code = _on_pty(cli, "copy")  # nothing is missing now: no bar, and still a clean end
    assert code == 0, out[-2000:]
