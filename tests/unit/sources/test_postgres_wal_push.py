"""One archive_command call pushes the ready WAL files in parallel; later calls only compare digests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recoverctl.actions import wal
from recoverctl.errors import VerificationError
from recoverctl.repo import Repository
from recoverctl.sources.postgres import walarchive, walpush, walspool
from recoverctl.sources.postgres.walnames import wal_key
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


def _pg_wal(tmp_path: Path, n: int) -> list[Path]:
    wal_dir = tmp_path / "pg_wal"
    (wal_dir / "archive_status").mkdir(parents=True)
    segs = []
    for i in range(n):
        seg = wal_dir / f"0000000100000000000000{i + 1:02X}"
        seg.write_bytes(os.urandom(4096) * 4)
        (wal_dir / "archive_status" / f"{seg.name}.ready").write_text("")
        segs.append(seg)
    return segs


def test_batch_stores_every_ready_file_and_marks_the_others(tmp_path: Path) -> None:
    repo = Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, parallelism=2)
    segs = _pg_wal(tmp_path, 5)
    markers = walspool.pushed_marker(segs[0], "main").parent
    ready = walpush._ready(segs[0], markers)
    assert ready == [s.name for s in segs[1:]]  # the file asked for is not in its own batch
    result, pushed = walpush._push_batch(repo, "main", segs[0], ready, markers)
    assert result.status == "stored" and pushed == 4
    for seg in segs:
        assert repo.get_object(wal_key("main", seg.name)) == seg.read_bytes()
    assert walpush._ready(segs[0], markers) == []  # marked: the next call does not push them again
    assert walspool.take_pushed(segs[1], "main") == segs[1].stat().st_size
    segs[2].write_bytes(b"changed after the push")
    assert walspool.take_pushed(segs[2], "main") is None  # digest differs: push normally
    marker = markers / segs[3].name
    marker.write_text(walspool.digest(segs[3].read_bytes()))  # a marker without stat identity
    assert walspool.take_pushed(segs[3], "main") == segs[3].stat().st_size and not marker.exists()


def test_a_conflict_on_a_file_pushed_ahead_only_warns_but_on_the_asked_file_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, parallelism=2)
    segs = _pg_wal(tmp_path, 3)
    repo.put_object(wal_key("main", segs[2].name), b"other cluster's segment")
    markers = walspool.pushed_marker(segs[0], "main").parent
    result, pushed = walpush._push_batch(repo, "main", segs[0], walpush._ready(segs[0], markers), markers)
    assert result.status == "stored" and pushed == 1
    assert segs[2].name in capsys.readouterr().err
    assert not (markers / segs[2].name).exists()  # never acknowledged: PostgreSQL will ask, and fail
    with pytest.raises(VerificationError, match="different content"):
        walpush._push_batch(repo, "main", segs[2], [], markers)
    assert repo.get_object(wal_key("main", segs[2].name)) == b"other cluster's segment"


def test_a_backup_pushes_its_ready_wal_itself_and_names_a_segment_that_never_comes(tmp_path: Path) -> None:
    repo = Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, parallelism=2)
    segs = _pg_wal(tmp_path, 4)
    pg_wal = segs[0].parent
    (pg_wal / "archive_status" / f"{segs[0].name}.ready").rename(
        pg_wal / "archive_status" / f"{segs[0].name}.done"
    )
    repo.put_object(wal_key("main", segs[0].name), segs[0].read_bytes())  # the archiver's work
    waited = walarchive.wait_for_wal(repo, "main", segs[0].name, segs[2].name, timeout=5, pg_wal=pg_wal)
    assert waited < 5
    for seg in segs[:3]:
        assert repo.get_object(wal_key("main", seg.name)) == seg.read_bytes()
    # the archiver's own calls for them are answered from the markers
    assert walspool.take_pushed(segs[1], "main") == segs[1].stat().st_size
    assert not any(True for _ in repo.list_objects(wal_key("main", segs[3].name)))  # not asked for
    (pg_wal / "archive_status" / f"{segs[3].name}.ready").unlink()
    with pytest.raises(VerificationError, match=segs[3].name):  # not ready: the archiver's job, late
        walarchive.wait_for_wal(repo, "main", segs[0].name, segs[3].name, timeout=0.3, pg_wal=pg_wal)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config", "/etc/r.yaml", "push", "--source", "main", "pg_wal/X"], ("main", "pg_wal/X")),
        (["--config=/etc/r.yaml", "push", "--source=main", "pg_wal/X"], ("main", "pg_wal/X")),
        (["push", "--source", "main", "pg_wal/X"], ("main", "pg_wal/X")),
        (["--json", "push", "--source", "main", "pg_wal/X"], None),  # output wanted: argparse path
        (["push", "pg_wal/X"], None),  # no source: the config names the default one
        (["fetch", "X", "pg_wal/RECOVERYXLOG"], None),
        (["push", "--source", "main", "--help"], None),
    ],
)
def test_the_archive_command_shape_is_parsed_without_argparse(
    argv: list[str], expected: tuple[str, str] | None
) -> None:
    from recoverctl.cli.wal_entry import _archive_call

    assert _archive_call(argv) == expected


def test_a_marked_segment_is_acknowledged_without_argparse_config_or_repository(tmp_path: Path) -> None:
    import subprocess
    import sys

    seg = _pg_wal(tmp_path, 1)[0]
    markers = walspool.pushed_marker(seg, "main").parent
    markers.mkdir(parents=True)
    (markers / seg.name).write_text(walspool.pushed_record(seg, seg.read_bytes(), seg.stat()))
    probe = (
        "import sys, runpy; sys.argv = ['recoverctl-wal', '--config', '/nonexistent.yaml', 'push', "
        f"'--source', 'main', {str(seg)!r}]\n"
        "try:\n    runpy.run_module('recoverctl.cli.wal_entry', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = ('argparse', 'pydantic', 'sqlalchemy', 'recoverctl.config', 'recoverctl.repo')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []"
    assert not (markers / seg.name).exists()  # consumed


def test_the_repository_package_imports_archiver_and_reader_on_first_use() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\nfrom recoverctl.repo import Repository\n"
        "print('recoverctl.repo.archiver' in sys.modules, 'recoverctl.repo.reader' in sys.modules)\n"
        "from recoverctl.repo import backup_tree, restore_snapshot\n"
        "print(callable(backup_tree), callable(restore_snapshot))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True"]


def test_a_marker_with_a_stable_identity_holds_no_digest_and_a_moved_identity_acknowledges_nothing(
    tmp_path: Path,
) -> None:
    seg = _pg_wal(tmp_path, 1)[0]
    marker = walspool.pushed_marker(seg, "main")
    marker.parent.mkdir(parents=True)
    marker.write_text(walspool.pushed_record(seg, seg.read_bytes(), seg.stat()))
    assert marker.read_text().split()[0] == walspool.NO_DIGEST  # not hashed: the identity decides
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 1))  # same bytes, moved stat
    assert walspool.take_pushed(seg, "main") is None and not marker.exists()  # pushed again, normally


def test_a_call_for_a_claimed_segment_waits_for_the_pushers_marker(tmp_path: Path) -> None:
    import threading

    segs = _pg_wal(tmp_path, 3)
    markers = walspool.pushed_marker(segs[0], "main").parent
    lock = walspool.claim_pusher(markers, [segs[1].name])
    assert lock is not None
    assert walspool.claim_pusher(markers, [segs[2].name]) is None  # one pusher per source
    assert walspool.wait_pushed(segs[2], "main") is None  # not claimed: pushed by its own call

    def pusher() -> None:
        walspool.write_marker(markers / segs[1].name, walspool.pushed_record(segs[1], b"", segs[1].stat()))

    timer = threading.Timer(0.2, pusher)
    timer.start()
    assert walspool.wait_pushed(segs[1], "main") == segs[1].stat().st_size  # waited, then taken
    timer.join()
    os.close(lock)
    # the pusher ended without a marker (its push failed): the call pushes itself, at once
    lock = walspool.claim_pusher(markers, [segs[2].name])
    assert lock is not None
    os.close(lock)
    assert walspool.wait_pushed(segs[2], "main", timeout=30) is None


def _pusher_ended(markers: Path) -> bool:
    import fcntl

    fd = os.open(markers / walspool.PUSHER_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def test_a_pusher_serves_later_calls_so_they_never_derive_the_key(tmp_path: Path) -> None:
    """The first archive_command call derives the key and leaves a pusher; later calls hand their
    file to it (no repository open, no key derivation in the calling process)."""
    from recoverctl.config import parse_config
    from tests.fixtures.net import wait_until

    repo = Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, parallelism=2)
    cfg = parse_config(
        {
            "repository": {"url": str(tmp_path / "repo")},
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "sources": {"main": {"type": "postgres"}},
        },
        env={},
    )
    (tmp_path / "postmaster.pid").write_text("1\n")  # pg_wal's parent is a running data directory
    segs = _pg_wal(tmp_path, 5)
    for seg in segs[2:]:
        (seg.parent / "archive_status" / f"{seg.name}.ready").unlink()
    # segs[1] is ready, so the first call's pusher claims it, and fails on it: it conflicts
    repo.put_object(wal_key("main", segs[1].name), b"other content")
    markers = walspool.pushed_marker(segs[0], "main").parent
    result = wal.wal_push(cfg, "pw", source="main", path=segs[0], detach=True)
    assert result.status == "stored" and result.pushing_ahead == 1
    wait_until(lambda: (markers / walspool.PUSHER_FIFO).exists(), what="the pusher serving")
    # the call for the claimed file that failed does not wait for the pusher to leave
    assert walspool.wait_pushed(segs[1], "main") is None
    assert not _pusher_ended(markers)
    for seg in segs[2:4]:
        assert walspool.wait_pushed(seg, "main") == seg.stat().st_size  # handed off and pushed
    for seg in [segs[0], *segs[2:4]]:
        assert repo.get_object(wal_key("main", seg.name)) == seg.read_bytes()
    # a handed-off file the pusher cannot store comes back at once: the call pushes it itself
    # and reports the conflict as usual
    repo.put_object(wal_key("main", segs[4].name), b"other content")
    assert walspool.wait_pushed(segs[4], "main") is None
    assert not _pusher_ended(markers)
    with pytest.raises(VerificationError, match="different content"):
        walpush.push_file(repo, "main", segs[4])
    (tmp_path / "postmaster.pid").unlink()  # the server stopped: the pusher leaves
    wait_until(lambda: _pusher_ended(markers), timeout=10, what="the pusher to end")
    assert not (markers / walspool.PUSHER_FIFO).exists()
