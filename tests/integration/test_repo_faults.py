"""Faults and maintenance through the CLI: damage, lost index, locks, kill -9, forget/prune, pins, sync.

Repositories are created in-process with cheap scrypt parameters (stored in the key file, so the
CLI uses them too) to keep these tests fast.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from recoverctl.repo import Repository
from recoverctl.repo.pack import pack_key
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.fixtures.net import wait_until
from tests.inproc_cli import InProcessCli

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


def make_repo(path: Path) -> Repository:
    return Repository.init(LocalStorage(path), "pw", kdf=FAST_KDF, pack_size_mib=1)


@pytest.fixture
def env(cli: Cli, tmp_path: Path) -> InProcessCli:
    cli = InProcessCli(cli)  # type: ignore[assignment]
    cli.write_config({"repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1}})
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    make_repo(tmp_path / "repo")
    return cli  # type: ignore[return-value]


def summary(stdout: str) -> dict[str, Any]:
    return [json.loads(x) for x in stdout.splitlines() if '"summary"' in x][-1]


def test_flipped_byte_verify_names_pack_and_files_restore_refuses(env: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    a, b = os.urandom(1_500_000), os.urandom(1_500_000)
    (src / "a.bin").write_bytes(a)
    (src / "b.bin").write_bytes(b)
    first = summary(env("backup", "files", str(src), "--json", check=0).stdout)

    repo = Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    snap = repo.load_snapshot(first["snapshot_id"])
    from recoverctl.repo.reader import find_node

    blob = bytes.fromhex(find_node(repo, snap, f"{src}/a.bin")["content"][0])
    loc = repo.load_index().get(blob)
    assert loc is not None
    pack_file = tmp_path / "repo" / pack_key(loc.pack)
    raw = bytearray(pack_file.read_bytes())
    raw[loc.offset + 100] ^= 0xFF
    pack_file.write_bytes(bytes(raw))

    env("verify", check=0)  # structure is intact: same objects, same sizes
    r = env("verify", "--read-data", "--json", check=13)
    err = r.error_json()
    assert loc.pack in err["message"] and f"{src}/a.bin" in err["message"]
    assert err["details"]["damaged_packs"] == [loc.pack]
    assert err["details"]["affected"][0]["snapshot"] == first["snapshot_id"]
    assert err["details"]["affected"][0]["paths"] == [f"{src}/a.bin"]

    out = tmp_path / "out"
    r = env("restore", "latest", "--target", str(out), "--json", check=13)
    assert f"{src}/a.bin" in r.error_json()["message"]
    restored = out / str(src).lstrip("/")
    assert not (restored / "a.bin").exists()
    assert [p.name for p in restored.iterdir()] == ["b.bin"]  # no temp file left behind
    assert (restored / "b.bin").read_bytes() == b
    r = env("cat", "latest", f"{src}/a.bin", check=13)
    assert r.stdout == ""

    with sqlite3.connect(env.home / "catalog.db") as db:
        rows = dict(db.execute("select pack, ok from verified_packs").fetchall())
    assert rows[loc.pack] == 0 and sum(rows.values()) == len(rows) - 1


def test_deleted_index_reported_and_repaired(env: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(300_000))
    (src / "g.txt").write_text("text\n" * 1000)
    env("backup", "files", str(src), check=0)
    for f in (tmp_path / "repo" / "index").iterdir():
        f.unlink()
    r = env("verify", "--json", check=13)
    assert "repair index" in r.error_json()["message"]
    data = env("repair", "index", "--json", check=0).json()
    assert data["packs"] >= 2 and data["blobs"] >= 3
    env("verify", "--read-data", check=0)
    env("restore", "latest", "--target", str(tmp_path / "out"), check=0)
    assert (tmp_path / "out" / str(src).lstrip("/") / "g.txt").read_text() == "text\n" * 1000


def test_locks_exit_11_naming_holder_and_stale_locks(env: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    repo = Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    with repo.lock(exclusive=True, operation="prune"):
        r = env("backup", "files", str(src), "--json", check=11)
        err = r.error_json()
        assert "exclusive lock for prune" in err["message"] and f"pid {os.getpid()}" in err["message"]
    with repo.lock(operation="backup"):  # a running backup holds a shared lock
        r = env("prune", "--json", check=11)
        assert "shared lock for backup" in r.error_json()["message"]
        env("forget", "--keep-last", "1", check=11)
        env("verify", check=0)  # shared + shared is fine
    assert env("snapshots", "--json", check=0).json() == []

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {
        "exclusive": True,
        "hostname": os.uname().nodename,
        "pid": dead.pid,
        "username": "x",
        "operation": "prune",
        "time": time.time(),
        "refreshed": time.time(),
    }
    (tmp_path / "repo" / "locks").mkdir(exist_ok=True)
    (tmp_path / "repo" / "locks" / "deadbeef").write_text(json.dumps(lock))
    env("backup", "files", str(src), check=0)  # a lock of a dead local process is stale
    removed = env("unlock", "--json", check=0).json()
    assert [r["lock"] for r in removed] == ["locks/deadbeef"]
    assert not list((tmp_path / "repo" / "locks").iterdir())


def test_kill_9_mid_backup_then_retry_uploads_less(env: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(2_000_000))
    data_dir = tmp_path / "repo" / "data"
    # The snapshot write keeps failing (retried for ~18 s): however late this process gets to
    # send the kill, the backup cannot have finished. The kill still lands mid-data (>= 20 of ~95
    # packs uploaded).
    slow_retry = {"initial": "2s", "maximum": "2s", "attempts": 10}
    env.write_config({"repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1, "retry": slow_retry}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "recoverctl", "backup", "files", str(src), "--json"],
        env={**env.env, "RECOVERCTL_FAULTS": "put:transient:*@snapshots/"},
        cwd=env.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def packs() -> int:
        return sum(1 for _ in data_dir.glob("*/*")) if data_dir.exists() else 0

    wait_until(lambda: packs() >= 20 or proc.poll() is not None, timeout=120, what="20 packs uploaded")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    uploaded_before = packs()
    assert 0 < uploaded_before < 100, "the backup finished before it could be killed"

    assert env("snapshots", "--json", check=0).json() == []
    verify = env("verify", "--json", check=0).json()
    assert verify["ok"]
    env("unlock", check=0)  # the killed process's lock is stale (dead pid): removed
    retry = summary(env("backup", "files", str(src), "--json", check=0).stdout)
    fresh = 50 * 2_000_000
    assert retry["bytes_uploaded"] < fresh - 15 * 1_000_000
    env("verify", "--read-data", check=0)
    env("prune", "--json", check=0)
    env("restore", "latest", "--target", str(tmp_path / "out"), check=0)
    assert (tmp_path / "out" / str(src).lstrip("/") / "f49.bin").read_bytes() == (
        src / "f49.bin"
    ).read_bytes()


def test_ctrl_c_mid_verify_exits_130_records_the_cancel_and_frees_the_lock(
    env: InProcessCli, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3_000_000))
    env("backup", "files", str(src), check=0)
    # Every data read keeps failing (retried for ~30 s): the signal comes while the verify waits
    # for the retries, which must neither hold the cancel back (the reader threads stop at their
    # next back-off) nor turn it into a storage error.
    slow_retry = {"initial": "1s", "maximum": "1s", "attempts": 30}
    env.write_config({"repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1, "retry": slow_retry}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "recoverctl", "verify", "--read-data"],
        env={**env.env, "RECOVERCTL_FAULTS": "get:transient:*@data/"},
        cwd=env.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        first_retry = b""
        while b"retrying" not in first_retry and proc.poll() is None:
            first_retry = proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=15)  # well before the retries would run out
    finally:
        if proc.poll() is None:
            proc.kill()
    err = first_retry + rest
    assert proc.returncode == 130, err
    assert b"cancelled" in err and b"failed after retries" not in err and b"Traceback" not in err
    with sqlite3.connect(env.home / "catalog.db") as db:
        verify_runs = db.execute("select status, error from runs where kind = 'verify'").fetchall()
    assert verify_runs == [("failed", "cancelled by SIGINT")]
    assert list((tmp_path / "repo" / "locks").iterdir()) == []
    assert env("verify", "--json", check=0).json()["ok"]


def test_forget_pins_prune_object_lock_and_catalog_sync(env: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for i in range(3):
        (src / f"v{i}.bin").write_bytes(os.urandom(400_000))
        if i:
            (src / f"v{i - 1}.bin").unlink()
        ids.append(summary(env("backup", "files", str(src), "--json", check=0).stdout)["snapshot_id"])
    with sqlite3.connect(env.home / "catalog.db") as db:
        db.execute(
            "insert into pins (snapshot_id, reason, owner, created_at) values (?, 'release', 'api v1', 0)",
            (ids[0][:12],),
        )
    r = env("forget", "--keep-last", "1", "--dry-run", "--json", check=0).json()
    decisions = {d["id"]: d for d in r["decisions"]}
    assert decisions[ids[2]]["reasons"] == ["last 1"]
    assert decisions[ids[0]]["reasons"] == ["pinned: release (api v1)"]
    assert not decisions[ids[1]]["keep"] and r["removed"] == [ids[1]]
    assert len(env("snapshots", "--json", check=0).json()) == 3  # dry run

    # Object Lock (by config): prune must not try to delete objects still in retention.
    env.write_config(
        {
            "repository": {
                "url": str(tmp_path / "repo"),
                "pack_size_mib": 1,
                "s3": {"object_lock_mode": "GOVERNANCE", "object_lock_days": 1},
            }
        }
    )
    before = sorted(p.name for p in (tmp_path / "repo" / "data").glob("*/*"))
    r = env("forget", "--keep-last", "1", "--prune", "--json", check=0).json()
    assert r["removed"] == [ids[1]] and r["prune"]["locked_not_deleted"]
    assert sorted(p.name for p in (tmp_path / "repo" / "data").glob("*/*")) == before

    env.write_config({"repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1}})
    # leftovers of a crashed write: swept when older than a day, kept while it may be in flight
    stale, fresh = tmp_path / "repo" / "data" / ".tmp-crashed", tmp_path / "repo" / "data" / ".tmp-inflight"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 100)
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    p = env("prune", "--max-unused", "0", "--json", check=0).json()
    assert p["packs_delete"] >= 1 and p["bytes_freed"] > 300_000 and not p["locked_not_deleted"]
    assert p["partial_writes"] == ["data/.tmp-crashed"]
    assert not stale.exists() and fresh.exists()
    env("verify", "--read-data", check=0)
    for sid in (ids[0], ids[2]):
        out = tmp_path / f"out-{sid[:8]}"
        env("restore", sid, "--target", str(out), check=0)

    with sqlite3.connect(env.home / "catalog.db") as db:
        db.execute("delete from snapshots")
    s = env("catalog", "sync", "--json", check=0).json()
    assert s["snapshots"] == 2 and s["added"] == 2
    with sqlite3.connect(env.home / "catalog.db") as db:
        assert {r[0] for r in db.execute("select id from snapshots")} == {ids[0], ids[2]}
        kinds = {r[0] for r in db.execute("select kind from runs")}
    assert {"backup", "forget", "prune", "verify", "restore", "catalog-sync"} <= kinds


def test_forget_without_rule_refused(env: Cli) -> None:
    r = env("forget", "--json", check=2)
    assert "no keep rule" in r.error_json()["message"]


def test_overlapping_paths_and_missing_exclude_file(env: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("fine")
    # A path inside another one named for backup is stored once.
    r = env("backup", "files", str(src), str(src / "ok"), "--json", check=0)
    assert summary(r.stdout)["files_new"] == 1
    r = env("backup", "files", str(src), "--exclude-file", str(tmp_path / "missing"), "--json", check=2)
    assert "exclude file" in r.error_json()["message"]


def test_file_changing_during_read_is_flagged_exit_3(
    env: InProcessCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recoverctl.repo.archiver import Archiver

    src = tmp_path / "src"
    src.mkdir()
    (src / "busy.log").write_text("first\n")
    (src / "gone.txt").write_text("soon deleted\n")
    (src / "calm.txt").write_text("stable\n")
    real = Archiver._read_file

    def racing(self: Archiver, path: str, st: os.stat_result, *plan: Any) -> tuple[list[str], int]:
        if path.endswith("gone.txt"):
            os.unlink(path)
        result = real(self, path, st, *plan)
        if path.endswith("busy.log"):
            with open(path, "a") as f:  # a writer appends after every read: never stable
                f.write("more\n")
        return result

    monkeypatch.setattr(Archiver, "_read_file", racing)
    r = env("backup", "files", str(src), "--json", check=3)
    s = summary(r.stdout)
    assert s["partial"] and s["snapshot_id"]
    warnings = [json.loads(x)["message"] for x in r.stdout.splitlines() if '"warning"' in x]
    assert any("busy.log: changed while it was read" in w for w in warnings)
    assert any("gone.txt: vanished" in w for w in warnings)
    snap = env("snapshots", "--json", check=0).json()[0]
    assert snap["partial"]
    nodes = {n["path"].rsplit("/", 1)[1]: n for n in env("ls", "latest", "--json", check=0).json()["nodes"]}
    assert nodes["busy.log"].get("changed_during_read") and "gone.txt" not in nodes
    assert not nodes["calm.txt"].get("changed_during_read")
