"""The WAL fetch-ahead PostgreSQL's restore_command goes through: a fetcher serving a spool.

It must never hand PostgreSQL a wrong or partial file, must answer "missing" only for what the
archive lacks right now, and must leave nothing behind.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recoverctl.cli.wal_fetch_entry import _parse
from recoverctl.repo import Repository
from recoverctl.sources.postgres import fetchspool
from recoverctl.sources.postgres.wal_fetcher import Fetcher
from recoverctl.sources.postgres.walnames import wal_key
from recoverctl.storage.local import LocalStorage
from tests.fixtures.net import wait_until
from tests.fixtures.pgbackup import PYTHON, PgCli
from tests.integration.postgres.test_wal_commands import wal_segment

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
SEGS = [f"0000000100000000000000{n:02X}" for n in range(1, 6)]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Repository, Path, dict[str, bytes]]]:
    """A repository archiving SEGS[:4] of source 'main' and a fetcher thread serving pg_wal's spool."""
    repo = Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    content = {name: wal_segment(name) for name in SEGS}
    for name in SEGS[:4]:
        repo.put_object(wal_key("main", name), content[name])
    pg_wal = tmp_path / "pg_wal"
    spool = Path(fetchspool.spool_dir(pg_wal / "RECOVERYXLOG", "main"))
    spool.mkdir(parents=True)
    lock = os.open(spool / fetchspool.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    stop = threading.Event()
    fetcher = Fetcher(repo, "main", spool, ahead=2, stop=stop)
    thread = threading.Thread(target=fetcher.run)
    thread.start()
    try:
        yield repo, pg_wal, content
    finally:
        stop.set()
        thread.join(10)
        fetcher.close()
        os.close(lock)
        repo.close()


def _fetch(pg_wal: Path, name: str) -> int | None:
    return fetchspool.fetch(pg_wal / "RECOVERYXLOG", "main", name, None)


def test_fetcher_serves_segments_reads_ahead_and_answers_missing(
    served: tuple[Repository, Path, dict[str, bytes]],
) -> None:
    repo, pg_wal, content = served
    dest, spool = pg_wal / "RECOVERYXLOG", Path(fetchspool.spool_dir(pg_wal / "RECOVERYXLOG", "main"))
    assert _fetch(pg_wal, SEGS[0]) == len(content[SEGS[0]])
    assert dest.read_bytes() == content[SEGS[0]]
    # the next two are read ahead, and served from the spool by a rename
    wait_until(lambda: (spool / SEGS[1]).exists() and (spool / SEGS[2]).exists(), timeout=10,
               what="read-ahead")  # fmt: skip
    assert _fetch(pg_wal, SEGS[1]) == len(content[SEGS[1]]) and dest.read_bytes() == content[SEGS[1]]
    assert not (spool / SEGS[1]).exists()
    # taking a spooled segment (no request) moves the read-ahead window on as well
    wait_until(lambda: (spool / SEGS[3]).exists(), timeout=10, what="the window to move on")

    # a missing file (history probe, end of archive) is answered missing and nothing is written
    dest.unlink()
    assert _fetch(pg_wal, "00000002.history") == fetchspool.MISSING
    assert _fetch(pg_wal, SEGS[4]) == fetchspool.MISSING
    assert not dest.exists()
    # ... and an earlier "missing" is never reused once the archive has the file
    repo.put_object(wal_key("main", SEGS[4]), content[SEGS[4]])
    (spool / f"{SEGS[4]}.missing").write_bytes(b"")
    assert _fetch(pg_wal, SEGS[4]) == len(content[SEGS[4]]) and dest.read_bytes() == content[SEGS[4]]
    assert not [p.name for p in spool.iterdir() if p.name.endswith((".want", ".missing", ".error"))]


def test_a_partial_or_misnamed_spool_file_is_never_served(
    served: tuple[Repository, Path, dict[str, bytes]],
) -> None:
    _repo, pg_wal, content = served
    dest, spool = pg_wal / "RECOVERYXLOG", Path(fetchspool.spool_dir(pg_wal / "RECOVERYXLOG", "main"))
    wanted = SEGS[3]
    for bad in (content[wanted][: 1 << 19], content[SEGS[2]], b""):  # truncated, another segment, empty
        (spool / wanted).write_bytes(bad)
        assert fetchspool.take(spool, wanted, dest) is None
        assert not dest.exists() and not (spool / wanted).exists()
    (spool / wanted).write_bytes(content[SEGS[2]])
    # through the fetcher: the bad file is dropped and the archive's copy is served instead
    assert _fetch(pg_wal, wanted) == len(content[wanted])
    assert dest.read_bytes() == content[wanted]


def test_the_fast_entry_takes_only_restore_commands_line() -> None:
    assert _parse(["--config", "c.yaml", "fetch", "--source", "main", SEGS[0], "pg_wal/RECOVERYXLOG"]) == (
        "c.yaml", False, "main", SEGS[0], "pg_wal/RECOVERYXLOG",
    )  # fmt: skip
    assert _parse(["--json", "fetch", "--source=db", "00000002.history", "d"]) == (
        None, True, "db", "00000002.history", "d",
    )  # fmt: skip
    for other in (["push", "--source", "main", "p"], ["fetch", SEGS[0], "d"], ["fetch", "--source", "m", "x"],
                  ["--verbose", "fetch", "--source", "m", SEGS[0], "d"], ["fetch", "--source"]):  # fmt: skip
        assert _parse(other) is None
    assert fetchspool.is_fetchable(SEGS[0]) and fetchspool.is_fetchable("0000000A.history")
    for bad in (SEGS[0] + ".partial", "../../etc/passwd", "00000001000000000000000a"):
        assert not fetchspool.is_fetchable(bad)


def _light(cli: PgCli, *args: str) -> subprocess.CompletedProcess[str]:
    entry = Path(cli.env["PYTHONPATH"].split(os.pathsep)[0]) / "recoverctl" / "cli" / "wal_fetch_entry.py"
    argv = [PYTHON, "-S", "-P", str(entry), *args]
    if os.geteuid() == 0:
        argv = ["runuser", "-m", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, env=cli.env, cwd=cli.home, capture_output=True, text=True, timeout=120)


def test_restore_command_starts_one_fetcher_that_goes_when_its_data_dir_goes(pg_cli: PgCli) -> None:
    pg_cli.write_config({"main": {"type": "postgres"}})
    pg_cli("init", check=0)
    pg_wal = pg_cli.home / "data" / "pg_wal"
    pg_wal.mkdir(parents=True)
    first = pg_wal / SEGS[0]
    data = wal_segment(SEGS[0])
    first.write_bytes(data)
    pg_cli._chown()
    pg_cli("wal", "push", "--source", "main", str(first), check=0)
    first.unlink()

    got = _light(pg_cli, "--json", "fetch", "--source", "main", SEGS[0], str(pg_wal / "RECOVERYXLOG"))
    assert got.returncode == 0, got.stderr
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == data
    spool = Path(fetchspool.spool_dir(pg_wal / "RECOVERYXLOG", "main"))
    assert fetchspool.fetcher_alive(spool)
    pid = int((spool / fetchspool.PID_FILE).read_text())

    missing = _light(pg_cli, "fetch", "--source", "main", SEGS[1], str(pg_wal / "RECOVERYXLOG2"))
    assert missing.returncode == 10, missing.stderr
    assert f"WAL file '{SEGS[1]}' is not in the archive of source 'main'" in missing.stderr
    assert not (pg_wal / "RECOVERYXLOG2").exists()
    assert int((spool / fetchspool.PID_FILE).read_text()) == pid  # the same fetcher answered

    # what the spool does not serve goes the full way (site loaded despite -S)
    partial = _light(pg_cli, "fetch", "--source", "main", SEGS[1] + ".partial", str(pg_wal / "P"))
    assert partial.returncode == 10 and f"'{SEGS[1]}.partial' is not in the archive" in partial.stderr

    # the restored data dir is removed (drill cleanup): the fetcher notices and exits
    subprocess.run(["rm", "-rf", str(pg_cli.home / "data")], check=True)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or b"wal_fetcher" not in Path(
        f"/proc/{pid}/cmdline").read_bytes(), timeout=10, what="the fetcher to exit")  # fmt: skip
