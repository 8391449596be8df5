"""Tree validation on load (every reader gets it) and the confined restore's descriptor table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from recoverctl.repo import Repository, backup_tree, confined, restore_snapshot
from recoverctl.repo.reader import link_leaves
from recoverctl.repo.tree import InvalidTreeError, parse_tree
from recoverctl.storage.local import LocalStorage
from tests.hostile_snapshots import directory, file, save_snapshot, symlink
from tests.repo_trees import digest

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
TID = bytes.fromhex("ab" * 32)
SUB = "cd" * 32


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)


def _tree(*nodes: dict[str, Any]) -> bytes:
    return json.dumps({"nodes": list(nodes)}).encode()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_tree({"name": "..", "type": "dir"}), "'..'"),
        (_tree({"name": ".", "type": "file"}), "'.'"),
        (_tree({"name": "a/b", "type": "file"}), "must not contain '/'"),
        (_tree({"name": "/etc/passwd", "type": "file"}), "must not contain '/'"),
        (_tree({"name": "a\x00b", "type": "file"}), "NUL"),
        (_tree({"name": "", "type": "file"}), "non-empty"),
        (_tree({"name": 7, "type": "file"}), "non-empty string"),
        (_tree({"name": "x", "type": "symlink", "target": "t"}, {"name": "x", "type": "dir"}), "two entries"),
        (_tree({"name": "x", "type": "door"}), "unknown type 'door'"),
        (_tree({"name": "x", "type": "dir", "subtree": "../../zz"}), "malformed subtree"),
        (_tree({"name": "x", "type": "file", "subtree": SUB}), "malformed subtree"),
        (_tree({"name": "x", "type": "symlink", "target": "a\x00"}), "invalid target"),
        (_tree("not a node"), "non-empty string"),  # type: ignore[arg-type]
        (b'{"nodes": {}}', "not a tree document"),
        (b"\xff not json", "not a JSON document"),
    ],
)
def test_parse_tree_refuses_what_no_file_system_holds(data: bytes, says: str) -> None:
    with pytest.raises(InvalidTreeError) as e:
        parse_tree(TID, data)
    assert says in e.value.message and e.value.exit_code == 13
    assert f"tree {TID.hex()[:16]}" in e.value.message


BLOB = "ef" * 32
GOOD: dict[str, Any] = {
    "name": "f",
    "type": "file",
    "mode": 0o644,
    "uid": 1000,
    "gid": 1000,
    "user": "alice",
    "group": None,
    "mtime_ns": 1_700_000_000_000_000_000,
    "ctime_ns": -5,  # before 1970 is a real time
    "atime_ns": 1,
    "inode": 2**64 - 1,
    "dev": 2049,
    "links": 1,
    "size": 3,
    "content": [BLOB, BLOB.upper()],
    "sparse": True,
    "changed_during_read": False,
    "xattrs": {"user.a": "aGk=", "user.empty": ""},
    "rdev": 0,
    "future_field": {"not": "checked"},
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "0644"),
        ("mode", 1.5),
        ("mode", None),
        ("mode", 0o10000),
        ("mode", -1),
        ("uid", "root"),
        ("uid", 2**32),
        ("gid", [1]),
        ("gid", -1),
        ("mtime_ns", "yesterday"),
        ("mtime_ns", 2**63),
        ("ctime_ns", 1e18),
        ("atime_ns", {"ns": 1}),
        ("inode", 2**64),
        ("dev", "sda"),
        ("links", -1),
        ("size", "3"),
        ("size", -3),
        ("size", 2**63),
        ("rdev", "8:1"),
        ("user", 0),
        ("group", ["staff"]),
        ("content", BLOB),
        ("content", [BLOB[:-2]]),
        ("content", [BLOB + "00"]),
        ("content", ["zz" * 32]),
        ("content", [" " + BLOB[1:]]),
        ("content", [7]),
        ("content", [BLOB, None]),
        ("sparse", "yes"),
        ("changed_during_read", 1),
        ("xattrs", ["user.a"]),
        ("xattrs", {"user.a": 5}),
        ("xattrs", {"user.a": "not base64!"}),
        ("xattrs", {"user.a": "abc"}),
        ("xattrs", {"": "aGk="}),
        ("xattrs", {"user.\x00": "aGk="}),
        ("target", 5),
    ],
)
def test_parse_tree_refuses_a_field_of_the_wrong_type_or_range(field: str, value: Any) -> None:
    parse_tree(TID, _tree(GOOD))  # the good node passes
    with pytest.raises(InvalidTreeError) as e:
        parse_tree(TID, _tree({"name": "ok", "type": "dir"}, {**GOOD, field: value}))
    msg = e.value.message
    assert e.value.exit_code == 13 and "'f'" in msg and field in msg, msg
    err = e.value.locate(snapshot="1234abcd", directory="/etc")
    assert str(err).startswith("snapshot 1234abcd: directory '/etc' (tree abababab")


def test_parse_tree_checks_fields_of_nodes_lacking_common_ones() -> None:
    # Nodes without some common fields take the one-by-one path: same verdicts.
    parse_tree(TID, _tree({"name": "f", "type": "file", "mode": 0o600}))
    with pytest.raises(InvalidTreeError, match="whose uid 'x'"):
        parse_tree(TID, _tree({"name": "f", "type": "file", "uid": "x"}))


def test_a_tampered_field_is_exit_13_for_restore_and_ls(tmp_path: Path, repo: Repository) -> None:
    from recoverctl.repo.pack import TREE
    from recoverctl.repo.saver import BlobSaver
    from recoverctl.repo.snapshot import Snapshot

    with BlobSaver(repo) as saver:
        tree = saver.save(TREE, _tree({**GOOD, "content": [], "size": 0, "mode": "rwx"}))[0].hex()
    sid = repo.save_snapshot(Snapshot(time=1.0, kind="files", tree=tree, paths=["/x"]))
    with pytest.raises(InvalidTreeError) as e:
        restore_snapshot(repo, sid, str(tmp_path / "out"))
    assert f"snapshot {sid[:8]}: directory '/'" in str(e.value) and "mode 'rwx'" in str(e.value)
    assert not (tmp_path / "out" / "f").exists()


def test_parse_tree_keeps_real_names_and_locate_names_snapshot_and_directory() -> None:
    odd = "caf\udce9 ü ..x .hidden -"  # a non-UTF-8 name as a surrogate escape, and odd but real names
    doc = parse_tree(TID, _tree({"name": odd, "type": "file"}, {"name": "d", "type": "dir", "subtree": SUB}))
    assert [n["name"] for n in doc["nodes"]] == [odd, "d"]
    err = InvalidTreeError(TID, "holds two entries named 'x'").locate(directory="/a/b")
    err.locate(snapshot="1234abcd", directory="/ignored: the deepest reader named it")
    assert str(err).startswith("snapshot 1234abcd: directory '/a/b' (tree abababab")


def test_load_tree_validates_for_every_reader(repo: Repository) -> None:
    sid = save_snapshot(repo, [directory("ok", file("..", b"x"))])
    snap = repo.load_snapshot(sid)
    root = repo.load_tree(bytes.fromhex(snap.tree))["nodes"]
    with pytest.raises(InvalidTreeError):
        repo.load_tree(bytes.fromhex(root[0]["subtree"]))


def test_restore_with_few_descriptors_reopens_directories_and_stays_exact(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    for i in range(12):
        d = src / f"d{i:02d}" / "inner" / "deep"
        d.mkdir(parents=True)
        for j in range(3):
            (d / f"f{j}").write_bytes(os.urandom(100 + j))
            (d.parent / f"g{j}").write_bytes(b"same" * (j + 1))
        (d / "big").write_bytes(os.urandom(300_000))
        os.link(d / "f0", src / f"link{i:02d}")
        (d / "rel").symlink_to("f1")
        (d.parent).chmod(0o750)
    monkeypatch.setattr(confined, "MAX_IDLE_DIRS", 2)
    sid = str(backup_tree(repo, src).snapshot_id)
    out = tmp_path / "out"
    result = restore_snapshot(repo, sid, str(out))
    assert not result.errors
    restored = out
    assert digest(restored) == digest(src)
    assert os.stat(restored / "link03").st_ino == os.stat(restored / "d03" / "inner" / "deep" / "f0").st_ino
    again = restore_snapshot(repo, sid, str(out), delta=True)
    assert again.skipped == result.files and again.removed == 0 and not again.errors


def test_mounts_send_a_directory_elsewhere_and_leave_the_link(tmp_path: Path, repo: Repository) -> None:
    sid = save_snapshot(
        repo, [directory("pg_tblspc", directory("16385", file("PG_VERSION", b"15\n"))), symlink("s", "x")]
    )
    target, ts = tmp_path / "data", tmp_path / "ts"
    (target / "pg_tblspc").mkdir(parents=True)
    ts.mkdir()
    (target / "pg_tblspc" / "16385").symlink_to(ts)
    with pytest.raises(Exception, match="not empty"):
        restore_snapshot(repo, sid, str(target))
    result = restore_snapshot(repo, sid, str(target), force=True, mounts={"/pg_tblspc/16385": str(ts)})
    assert not result.errors and (ts / "PG_VERSION").read_bytes() == b"15\n"
    assert os.readlink(target / "pg_tblspc" / "16385") == str(ts)


def test_recovery_config_replaces_planted_symlinks_and_reads_nothing_through_them(tmp_path: Path) -> None:
    from recoverctl.sources.postgres.recovery import write_recovery_config

    outside = tmp_path / "outside.conf"
    outside.write_text("secret = 'do not copy'\n")
    outside.chmod(0o640)
    data = tmp_path / "data"
    data.mkdir()
    (data / "postgresql.auto.conf").symlink_to(outside)
    (data / "recovery.signal").symlink_to(tmp_path / "created-outside")
    write_recovery_config(data, {"restore_command": "true"})
    assert outside.read_text() == "secret = 'do not copy'\n" and outside.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "created-outside").exists()
    conf = data / "postgresql.auto.conf"
    assert not conf.is_symlink() and "restore_command = 'true'" in conf.read_text()
    assert "secret" not in conf.read_text()
    assert not (data / "recovery.signal").is_symlink()


# 85 three-byte characters: 255 bytes, the most a name can hold (NAME_MAX).
LONGEST = "日" * 85


def test_longest_multibyte_name_is_replaced_via_a_short_temporary_name(tmp_path: Path) -> None:
    assert len(os.fsencode(LONGEST)) == 255
    (tmp_path / LONGEST).write_bytes(b"old")
    confined.write_file(tmp_path, LONGEST, b"new")
    assert (tmp_path / LONGEST).read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == [LONGEST]  # no temporary file left


def test_restore_force_over_the_longest_multibyte_name(tmp_path: Path, repo: Repository) -> None:
    sid = save_snapshot(repo, [directory("d", file(LONGEST, b"from the snapshot\n"))])
    target = tmp_path / "target"
    (target / "d").mkdir(parents=True)
    (target / "d" / LONGEST).write_bytes(b"in the way\n")  # replaced through a temporary name
    result = restore_snapshot(repo, sid, str(target), force=True)
    assert not result.errors and result.files == 1
    assert (target / "d" / LONGEST).read_bytes() == b"from the snapshot\n"
    assert [p.name for p in (target / "d").iterdir()] == [LONGEST]


@pytest.mark.parametrize(
    ("target", "leaves"),
    [
        ("/var/lib/pg/wal", True),
        ("", True),
        ("..", True),
        ("../x", True),
        ("a/../b", True),  # '..' after a link component climbs from the link's target
        ("a/b/..", True),
        ("x", False),
        ("./a/b", False),
        ("a..b/c", False),
    ],
)
def test_link_leaves(target: str, leaves: bool) -> None:
    assert link_leaves(target) is leaves


def test_inner_links_only_leaves_out_links_that_could_point_outside(tmp_path: Path, repo: Repository) -> None:
    sid = save_snapshot(
        repo,
        [
            symlink("pg_wal", str(tmp_path / "production-wal")),
            symlink("up", "../../etc"),
            directory("d", symlink("inner", "f"), file("f", b"x")),
        ],
    )
    target = tmp_path / "target"
    target.mkdir()
    (target / "pg_wal").mkdir()  # what the caller put there stays
    plan = restore_snapshot(repo, sid, str(target), force=True, dry_run=True, inner_links_only=True)
    assert [x["path"] for x in plan.links_skipped] == ["/pg_wal", "/up"]
    result = restore_snapshot(repo, sid, str(target), force=True, inner_links_only=True)
    assert result.links_skipped == [
        {"path": "/pg_wal", "target": str(tmp_path / "production-wal")},
        {"path": "/up", "target": "../../etc"},
    ]
    assert (target / "pg_wal").is_dir() and not (target / "pg_wal").is_symlink()
    assert not os.path.lexists(target / "up") and os.readlink(target / "d" / "inner") == "f"
    assert not (tmp_path / "production-wal").exists()
    # A files restore keeps every link as it was (nothing follows them).
    plain = restore_snapshot(repo, sid, str(tmp_path / "plain"))
    assert not plain.links_skipped and os.readlink(tmp_path / "plain" / "up") == "../../etc"


def test_place_pg_wal_replaces_a_left_over_link_without_following_it(tmp_path: Path) -> None:
    from recoverctl.sources.postgres.layout import place_pg_wal

    production = tmp_path / "production-wal"
    production.mkdir()
    (production / "000000010000000000000001").write_bytes(b"wal")
    target = tmp_path / "data"
    target.mkdir()
    (target / "pg_wal").symlink_to(production)  # left by an earlier restore (--delta reuses it)
    place_pg_wal(target, None)
    assert (target / "pg_wal").is_dir() and not (target / "pg_wal").is_symlink()
    assert [p.name for p in production.iterdir()] == ["000000010000000000000001"]
    (target / "pg_wal" / "x").write_bytes(b"")
    place_pg_wal(target, None)  # a real directory stays as it is
    assert (target / "pg_wal" / "x").exists()
    chosen = tmp_path / "wal-disk" / "restored"
    place_pg_wal(target, chosen)
    assert os.readlink(target / "pg_wal") == str(chosen) and chosen.is_dir()
    assert chosen.stat().st_mode & 0o777 == 0o700
