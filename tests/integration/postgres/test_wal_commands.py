"""`wal push` / `wal fetch` semantics PostgreSQL relies on, without a server."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from tests.fixtures.pgbackup import PYTHON, PgCli

SEG = "000000010000000000000003"


def wal_segment(name: str, size: int = 1 << 20) -> bytes:
    """Return a `size` WAL segment named `name`: a long page header (what read-ahead checks) + noise."""
    per_xlogid = 0x100000000 // size
    pageaddr = (int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)) * size
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, int(name[:8], 16), pageaddr, 0, 7, size, 8192)
    return header + os.urandom(size - len(header))


def _light(cli: PgCli, *args: str, check: int) -> str:
    import subprocess

    argv = [PYTHON, "-m", "recoverctl.cli.wal_entry", *args]
    if os.geteuid() == 0:
        argv = ["runuser", "-m", "-u", "postgres", "--", *argv]
    r = subprocess.run(argv, env=cli.env, cwd=cli.home, capture_output=True, text=True)
    assert r.returncode == check, r.stderr
    return r.stdout + r.stderr


def test_push_is_idempotent_conflicts_fail_and_fetch_follows_postgres_rules(pg_cli: PgCli) -> None:
    pg_cli.write_config({"main": {"type": "postgres"}})
    pg_cli("init", check=0)
    wal = pg_cli.home / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    seg = wal / SEG
    seg.write_bytes(os.urandom(64 * 1024))
    history = wal / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    ahead = wal / "000000010000000000000004"
    ahead.write_bytes(wal_segment(ahead.name))
    (wal / "archive_status" / f"{ahead.name}.ready").write_text("")
    pg_cli._chown()

    first = pg_cli("--json", "wal", "push", str(seg), check=0).json()
    assert first["status"] == "stored" and first["pushed_ahead"] == 1
    assert pg_cli("--json", "wal", "push", str(seg), check=0).json()["status"] == "already-archived"
    # the file pushed ahead is acknowledged without opening the repository
    assert '"pushed_ahead": true' in _light(pg_cli, "--json", "push", str(ahead), check=0)
    _light(pg_cli, "push", str(history), check=0)

    seg.write_bytes(os.urandom(64 * 1024))
    err = pg_cli("--json", "wal", "push", str(seg), check=13).error_json()
    assert "different content" in err["message"] and SEG in err["message"]

    restored = pg_cli.home / "restored"
    restored.mkdir()
    pg_cli._chown()
    pg_cli("wal", "fetch", "00000002.history", str(restored / "h"), check=0)
    assert (restored / "h").read_text() == history.read_text()
    _light(pg_cli, "fetch", "000000010000000000000099", str(restored / "x"), check=10)
    assert not (restored / "x").exists()
    assert pg_cli("wal", "fetch", "../../etc/passwd", str(restored / "y"), check=2).code == 2
    _light(pg_cli, "fetch", SEG, str(restored / "RECOVERYXLOG"), check=0)
    assert (restored / "RECOVERYXLOG").stat().st_size == 64 * 1024
    # the next segment was read ahead next to the destination and is served from there
    assert (restored / ".recoverctl-prefetch" / "main" / ahead.name).exists()
    assert '"prefetched": true' in _light(pg_cli, "--json", "fetch", ahead.name, str(restored / "n"), check=0)
    assert Path(restored / "n").read_bytes() == ahead.read_bytes()
