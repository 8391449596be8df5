"""Every read-only command works against a repository it cannot write to, and writes nothing to it.

(a) a local repository seen through a read-only bind mount (root ignores mode bits, a read-only
mount it cannot); (b) S3 with an IAM user allowed only to read. Restores are byte-identical, a
files drill passes, and a reader still refuses to start while an exclusive lock (prune) is held.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from recoverctl.repo import Repository
from recoverctl.repo.locks import RepositoryLock
from recoverctl.repo.pack import pack_key
from recoverctl.repo.reader import find_node
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.fixtures.net import free_port
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import BIN_DIR, PgCluster, _as_pg_user, chown_to_pg
from tests.fixtures.s3 import S3Server
from tests.fixtures.sshd import SshServer
from tests.inproc_cli import InProcessCli
from tests.repo_trees import digest, make_tree

pytestmark = pytest.mark.integration

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


def _objects(root: Path) -> dict[str, tuple[int, str]]:
    """Return every file under a local repository with its size and sha256."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            out[str(full.relative_to(root))] = (
                full.stat().st_size,
                hashlib.sha256(full.read_bytes()).hexdigest(),
            )
    return out


@contextlib.contextmanager
def _bind_readonly(rw: Path, ro: Path) -> Iterator[None]:
    """Show directory `rw` at `ro` through a read-only bind mount while in the block."""
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(rw), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(OSError, match="Read-only file system"):
            (ro / "probe").write_bytes(b"x")
        yield
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.fixture
def readonly_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Return (writable repository dir, the same dir bind-mounted read-only); unmounted at teardown."""
    rw, ro = tmp_path / "repo", tmp_path / "repo-ro"
    rw.mkdir()
    with _bind_readonly(rw, ro):
        yield rw, ro


def _playbook(path: Path, parent: Path) -> Path:
    body = {
        "name": "docs-readonly",
        "source": "docs",
        "recovery_point": "latest",
        "targets": {"rto": "1h", "rpo": "1h"},
        "where": {"temp_dir": str(parent)},
    }
    path.write_text(yaml.safe_dump({"drill": body}))
    return path


def _read_everything(cli: InProcessCli | Cli, src: Path, tmp_path: Path, first: str) -> None:
    """Run restore, verify, snapshots, ls, cat, diff, forget --dry-run (also with --prune), prune
    --dry-run and a files drill; assert each."""
    out = tmp_path / "restored"
    cli("restore", "latest", "--target", str(out), "--verify", "--json", check=0)
    assert digest(out / str(src).lstrip("/")) == digest(src)  # byte-identical, metadata too

    report = cli("verify", "--read-data", "--json", check=0).json()
    assert report["ok"] is True and report["packs_read"] == report["packs_total"] > 0

    snaps = cli("snapshots", "--json", check=0).json()
    assert len(snaps) == 2 and snaps[0]["id"] == first
    names = {n["path"] for n in cli("ls", "latest", str(src / "docs"), "--json", check=0).json()["nodes"]}
    assert f"{src}/docs/readme.txt" in names
    cat = cli("cat", "latest", f"{src}/docs/nested/notes.md", check=0)
    assert cat.stdout == (src / "docs" / "nested" / "notes.md").read_text()
    changes = cli("diff", first, "latest", "--json", check=0).json()
    assert {c["path"] for c in changes["changes"]} >= {f"{src}/added.txt"}

    plan = cli("forget", "--keep-last", "1", "--dry-run", "--json", check=0).json()
    assert plan["removed"] == [first]
    plan = cli("forget", "--keep-last", "1", "--prune", "--dry-run", "--json", check=0).json()
    assert plan["removed"] == [first] and plan["prune"]["dry_run"] is True
    assert cli("prune", "--dry-run", "--json", check=0).json()["dry_run"] is True

    parent = tmp_path / "drills"
    parent.mkdir()
    drill = cli("drill", "run", str(_playbook(tmp_path / "pb.yaml", parent)), "--json", check=0).json()
    assert drill["verdict"] == "pass", drill.get("reason")


def _two_backups(cli: InProcessCli | Cli, src: Path, env: dict[str, str]) -> str:
    """Back `src` up twice (a file added in between) with write access; return the first id."""
    first = cli("backup", "files", str(src), "--source", "docs", "--json", env=env, check=0)
    sid = next(json.loads(x) for x in first.stdout.splitlines() if '"summary"' in x)["snapshot_id"]
    (src / "added.txt").write_text("added after the first snapshot\n")
    cli("backup", "files", str(src), "--source", "docs", "--json", env=env, check=0)
    return str(sid)


@dataclass
class LocalSetup:
    cli: InProcessCli
    src: Path
    rw: Path  # the repository directory, writable
    first: str  # the first of two snapshots


def _prepare(cli: Cli, tmp_path: Path, rw: Path, reader: dict[str, Any], big: int = 1_500_000) -> LocalSetup:
    """Create a repository in directory `rw` with two backups made there; configure the CLI to
    read it through the `reader` repository section."""
    src = make_tree(tmp_path / "src", big=big)
    icli = InProcessCli(cli)
    icli.env["RECOVERCTL_PASSWORD"] = "pw"
    icli.write_config(
        {
            "repository": {**reader, "pack_size_mib": 1},
            "sources": {"docs": {"type": "files", "paths": [str(src)]}},
        }
    )
    Repository.init(LocalStorage(rw), "pw", kdf=FAST_KDF, pack_size_mib=1)
    first = _two_backups(icli, src, {"RECOVERCTL_REPOSITORY": str(rw)})
    return LocalSetup(icli, src, rw, first)


@pytest.fixture
def local_ro(cli: Cli, tmp_path: Path, readonly_view: tuple[Path, Path]) -> LocalSetup:
    rw, ro = readonly_view
    return _prepare(cli, tmp_path, rw, {"url": str(ro)})


def test_local_readonly_mount_restore_verify_browse_drill(local_ro: LocalSetup, tmp_path: Path) -> None:
    before = _objects(local_ro.rw)
    _read_everything(local_ro.cli, local_ro.src, tmp_path, local_ro.first)
    assert _objects(local_ro.rw) == before  # not one object written, removed or changed

    # A writer gets a clear refusal, not a crash.
    err = local_ro.cli("backup", "files", str(local_ro.src), "--json", check=1).error_json()
    assert err["error"] == "WriteRefused" and "Read-only file system" in err["message"]
    assert _objects(local_ro.rw) == before


def test_full_disk_restore_verify_browse_drill(cli: Cli, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        setup = _prepare(cli, tmp_path, mnt / "repo", {"url": str(mnt / "repo")}, big=500_000)
        with open(mnt / "filler", "wb") as f, pytest.raises(OSError, match="No space left"):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        before = _objects(setup.rw)
        _read_everything(setup.cli, setup.src, tmp_path, setup.first)
        assert _objects(setup.rw) == before
        err = setup.cli("backup", "files", str(tmp_path), "--json", check=1).error_json()
        assert err["error"] == "WriteRefused" and "No space left" in err["message"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_sftp_readonly_mount_restore_verify_browse_drill(cli: Cli, tmp_path: Path, sshd: SshServer) -> None:
    rw, ro = sshd.root / "repo", sshd.root / "repo-ro"
    rw.mkdir()
    with _bind_readonly(rw, ro):
        sftp = {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
        setup = _prepare(cli, tmp_path, rw, {"url": sshd.url("repo-ro"), "sftp": sftp})
        before = _objects(rw)
        _read_everything(setup.cli, setup.src, tmp_path, setup.first)
        assert _objects(rw) == before
        err = setup.cli("backup", "files", str(setup.src), "--json", check=1).error_json()
        assert err["error"] == "WriteRefused"


def test_local_readonly_reader_still_waits_for_an_exclusive_lock(
    local_ro: LocalSetup, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    with RepositoryLock(LocalStorage(local_ro.rw), exclusive=True, operation="prune"):
        err = local_ro.cli("restore", "latest", "--target", out, "--json", check=11).error_json()
        assert "exclusive lock for prune" in err["message"]
    local_ro.cli("restore", "latest", "--target", out, check=0)


def test_pack_removed_under_a_lockfree_reader_is_a_clear_not_found(
    local_ro: LocalSetup, tmp_path: Path
) -> None:
    # What a reader without a lock sees when a prune deletes a pack after the reader loaded the
    # index: the index still names the pack, storage no longer has it.
    repo = Repository.open(LocalStorage(local_ro.rw), "pw")
    snap = repo.resolve_snapshot("latest")
    node = find_node(repo, snap, f"{local_ro.src}/random.bin")
    pack = repo.load_index().get(bytes.fromhex(node["content"][0]))
    assert pack is not None
    (local_ro.rw / pack_key(pack.pack)).unlink()

    err = local_ro.cli(
        "restore", "latest", "--target", str(tmp_path / "out"), "--json", check=10
    ).error_json()
    assert err["error"] == "NotFoundError"
    assert pack.pack[:16] in err["message"] and "prune" in err["message"]
    assert "run the restore again" in err["hint"]
    cat = local_ro.cli("cat", "latest", f"{local_ro.src}/random.bin", "--json", check=10).error_json()
    assert pack.pack in cat["message"] and "a prune that ran while this command was reading" in cat["message"]


def test_s3_readonly_user_restore_verify_browse_drill(
    cli: Cli, tmp_path: Path, s3_readonly_server: S3Server
) -> None:
    bucket = s3_readonly_server.create_bucket()
    src = make_tree(tmp_path / "src", big=1_500_000)
    icli = InProcessCli(cli)
    icli.env.update(RECOVERCTL_PASSWORD="pw", **s3_readonly_server.readonly_env())
    icli.write_config(
        {
            "repository": {**bucket.repository("prod"), "pack_size_mib": 1},
            "sources": {"docs": {"type": "files", "paths": [str(src)]}},
        }
    )
    writer = s3_readonly_server.env()
    icli("init", env=writer, check=0)
    first = _two_backups(icli, src, writer)
    before = {o["Key"]: o["ETag"] for o in bucket.client().list_objects_v2(Bucket=bucket.name)["Contents"]}

    _read_everything(icli, src, tmp_path, first)
    after = {o["Key"]: o["ETag"] for o in bucket.client().list_objects_v2(Bucket=bucket.name)["Contents"]}
    assert after == before

    err = icli("backup", "files", str(src), "--json", check=1).error_json()
    assert err["error"] == "WriteRefused" and "AccessDenied" in err["message"]


def test_lockfree_verify_racing_a_prune_says_so_instead_of_reporting_damage(
    local_ro: LocalSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recoverctl.repo.check import Checker

    original = Checker.check_packs
    writer = {"RECOVERCTL_REPOSITORY": str(local_ro.rw)}

    def prune_then_check(self: Checker, index: Any) -> Any:
        # verify has loaded the index; a prune on the writable side now repacks and deletes packs.
        local_ro.cli.base("forget", "--keep-last", "1", "--prune", "--max-unused", "0", env=writer, check=0)
        return original(self, index)

    monkeypatch.setattr(Checker, "check_packs", prune_then_check)
    err = local_ro.cli("verify", "--json", check=11).error_json()
    assert "changed while verify read it without a lock" in err["message"]
    monkeypatch.setattr(Checker, "check_packs", original)
    assert local_ro.cli("verify", "--json", check=0).json()["ok"] is True
    with sqlite3.connect(local_ro.cli.home / "catalog.db") as db:
        kinds = [r[0] for r in db.execute("select kind from events")]
    assert "verify.failed" not in kinds  # no false alarm was raised


def test_postgres_restore_wal_fetch_and_drill_from_a_readonly_repository(
    pg_cli: PgCli, pg_factory: Any
) -> None:
    pg: PgCluster = pg_factory(start=False, extra_conf=(
        f"archive_mode = on\narchive_command = '{pg_cli.archive_command('main')}'\n"
    ))  # fmt: skip
    pg_cli.write_config({"main": pg.source_config()})
    pg_cli("init", check=0)
    pg.start()
    pg.psql("create table marks(id serial primary key, note text)")
    pg.psql("insert into marks(note) values ('in the backup')")
    pg_cli("backup", "postgres", "--source", "main", check=0)
    pg.psql("insert into marks(note) values ('only in the WAL')")
    pg.psql("select pg_switch_wal()")
    pg.stop()  # archives what is left; nothing writes the repository from here on
    before = _objects(pg_cli.repository)

    ro = pg_cli.home / "repo-ro"
    with _bind_readonly(pg_cli.repository, ro):
        config = yaml.safe_load(pg_cli.config_path.read_text())
        config["repository"]["url"] = str(ro)
        ro_config = pg_cli.home / "readonly.yaml"
        ro_config.write_text(yaml.safe_dump(config))
        os.chmod(ro_config, 0o644)
        target, port = pg_cli.home / "restored", free_port()
        pg_cli("--json", "restore", "postgres", "--target-dir", str(target), "--to-latest", "--start",
               "--port", str(port), env={"RECOVERCTL_CONFIG": str(ro_config)}, check=0)  # fmt: skip
        try:
            rows = subprocess.run(
                [str(BIN_DIR / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port),
                 "-U", "postgres", "-c", "select note from marks order by id"],
                capture_output=True, text=True, check=True,
            ).stdout.splitlines()  # fmt: skip
        finally:
            subprocess.run(
                _as_pg_user([str(BIN_DIR / "pg_ctl"), "-D", str(target), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
            )
        assert rows == ["in the backup", "only in the WAL"]

        scratch = pg_cli.home / "scratch"
        scratch.mkdir()
        playbook = pg_cli.home / "drill.yaml"
        playbook.write_text(yaml.safe_dump({"drill": {
            "name": "main-readonly",
            "source": "main",
            "recovery_point": "latest",
            "checks": [{"sql": "select count(*) from marks", "expect": "== 2"}],
            "targets": {"rto": "2h", "rpo": "24h"},
            "where": {"temp_dir": str(scratch)},
        }}))  # fmt: skip
        chown_to_pg(scratch)
        chown_to_pg(playbook)
        drill = pg_cli(
            "drill", "run", str(playbook), "--json", env={"RECOVERCTL_CONFIG": str(ro_config)}, check=0
        )
        assert drill.json()["verdict"] == "pass", drill.json().get("reason")
    assert _objects(pg_cli.repository) == before


def test_prune_dry_runs_on_a_readonly_repository_with_orphan_packs(local_ro: LocalSetup) -> None:
    # An interrupted backup (every index write fails) leaves packs no index lists; a dry run plans
    # for them in memory instead of writing their index.
    writer = {"RECOVERCTL_REPOSITORY": str(local_ro.rw), "RECOVERCTL_FAULTS": "put:error:*@index/"}
    (local_ro.src / "more.bin").write_bytes(os.urandom(1_200_000))
    local_ro.cli("backup", "files", str(local_ro.src), env=writer, check=1)
    repo = Repository.open(LocalStorage(local_ro.rw), "pw")
    orphans = set(repo.list_packs()) - set(repo.load_index().packs)
    assert orphans
    before = _objects(local_ro.rw)

    plan = local_ro.cli("forget", "--keep-last", "1", "--prune", "--dry-run", "--json", check=0).json()
    assert plan["removed"] == [local_ro.first] and plan["prune"]["packs_delete"] >= len(orphans)
    plan = local_ro.cli("prune", "--dry-run", "--json", check=0).json()
    assert plan["dry_run"] is True and plan["packs_delete"] == len(orphans)
    assert _objects(local_ro.rw) == before
