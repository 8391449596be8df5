"""Format-level tests on a local repository, in-process: crypto, packs, index, keys, objects, streams."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from recoverctl.errors import NotFoundError, UsageError, VerificationError, WrongKeyError
from recoverctl.repo import Repository, backup_stream, backup_tree, open_file, restore_snapshot
from recoverctl.repo.crypto import Cipher, DecryptError, MasterKey
from recoverctl.repo.pack import DATA, PackBuilder, pack_key, parse_header
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)


def test_cipher_round_trip_compresses_and_rejects_tampering() -> None:
    c = Cipher(MasterKey.generate())
    text = b"compressible " * 1000
    sealed = c.seal(text, b"aad")
    assert len(sealed) < len(text) // 10
    assert c.open(sealed, b"aad") == text
    random = os.urandom(5000)
    assert len(c.seal(random, b"x")) == len(random) + 29  # stored raw: not smaller when compressed
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(DecryptError):
        c.open(bytes(flipped), b"aad")
    with pytest.raises(DecryptError):
        c.open(sealed, b"other aad")


def test_blob_ids_are_keyed() -> None:
    a, b = Cipher(MasterKey.generate()), Cipher(MasterKey.generate())
    assert a.blob_id(b"same") != b.blob_id(b"same")
    assert a.blob_id(b"same") == a.blob_id(b"same")


def test_pack_header_lists_blobs() -> None:
    c = Cipher(MasterKey.generate())
    builder = PackBuilder(c, 1024)
    blobs = [os.urandom(100), b"x" * 500]
    for data in blobs:
        builder.add(DATA, c.blob_id(data), c.seal(data, b"a"), len(data))
    pack = builder.finish()
    with pack.body:
        data = pack.body.read()
    pid, entries = pack.id, pack.entries
    parsed = parse_header(c, data, len(data), "pack")
    assert [(e.id, e.offset, e.length, e.raw_length) for e in parsed] == [
        (e.id, e.offset, e.length, e.raw_length) for e in entries
    ]
    assert len(pid) == 64


def test_open_wrong_password_and_missing(tmp_path: Path, repo: Repository) -> None:
    with pytest.raises(WrongKeyError):
        Repository.open(LocalStorage(tmp_path / "repo"), "nope")
    with pytest.raises(NotFoundError):
        Repository.open(LocalStorage(tmp_path / "nothing"), "pw")
    with pytest.raises(UsageError, match="already exists"):
        Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF)


def test_newer_format_refused_clearly(tmp_path: Path, repo: Repository) -> None:
    import json

    cfg = json.loads((tmp_path / "repo" / "config").read_text())
    cfg["version"] = 99
    (tmp_path / "repo" / "config").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="format version 99"):
        Repository.open(LocalStorage(tmp_path / "repo"), "pw")


def test_tampered_config_detected(tmp_path: Path, repo: Repository) -> None:
    import json

    cfg = json.loads((tmp_path / "repo" / "config").read_text())
    cfg["chunker"]["avg"] = 4096
    (tmp_path / "repo" / "config").write_text(json.dumps(cfg))
    with pytest.raises(VerificationError, match="modified"):
        Repository.open(LocalStorage(tmp_path / "repo"), "pw")


def test_keys_add_passwd_remove(tmp_path: Path, repo: Repository) -> None:
    second = repo.add_key("second")
    assert len(repo.list_keys()) == 2
    other = Repository.open(LocalStorage(tmp_path / "repo"), "second")
    assert other.key_id == second
    repo.change_password("renamed")
    with pytest.raises(WrongKeyError):
        Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    assert Repository.open(LocalStorage(tmp_path / "repo"), "renamed").id == repo.id
    other.remove_key(second)
    with pytest.raises(UsageError, match="last key"):
        repo.remove_key(repo.key_id)


def test_objects_are_encrypted_and_scoped(tmp_path: Path, repo: Repository) -> None:
    payload = b"WAL segment " * 10000
    repo.put_object("wal/00000001/000000010000000000000001", payload)
    raw = (tmp_path / "repo" / "wal" / "00000001" / "000000010000000000000001").read_bytes()
    assert b"WAL segment" not in raw and len(raw) < len(payload)
    assert repo.get_object("wal/00000001/000000010000000000000001") == payload
    assert list(repo.list_objects("wal/")) == ["wal/00000001/000000010000000000000001"]
    with pytest.raises(UsageError):
        repo.put_object("snapshots/x", b"no")


def test_stream_round_trip(repo: Repository) -> None:
    data = os.urandom(3_000_000) + b"tail" * 100_000
    result = backup_stream(repo, io.BytesIO(data), filename="db.dump", kind="pg_dump", source="db")
    assert result.snapshot_id
    snap = repo.resolve_snapshot("latest", kind="pg_dump")
    assert b"".join(open_file(repo, snap, "/db.dump")) == data
    assert repo.find_snapshots(kind="pg_dump", source="db")[0].id == result.snapshot_id
    again = backup_stream(repo, io.BytesIO(data), filename="db.dump", kind="pg_dump", source="db")
    assert again.summary["bytes_added"] < 10_000  # only the new root tree


def test_tree_api_with_extra_files_and_force_reread(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "pgdata"
    (src / "base").mkdir(parents=True)
    (src / "base" / "1").write_bytes(b"a" * 1000)
    (src / "skip.tmp").write_bytes(b"nope")
    first = backup_tree(
        repo,
        src,
        exclude=lambda rel, st: rel.endswith(".tmp"),
        extra_files={"backup_label": b"START WAL LOCATION: 0/2000028\n"},
        kind="postgres",
        source="main",
        tags={"type": "full"},
        metadata={"start_lsn": "0/2000028"},
    )
    snap = repo.load_snapshot(str(first.snapshot_id))
    assert snap.metadata == {"start_lsn": "0/2000028"} and snap.tags == {"type": "full"}
    seen: list[str] = []

    def reread(rel: str, st: os.stat_result) -> bool:
        seen.append(rel)
        return True

    second = backup_tree(
        repo,
        src,
        exclude=lambda rel, st: rel.endswith(".tmp"),
        kind="postgres",
        parent=snap,
        force_reread=reread,
    )
    assert seen == ["base/1"] and second.summary["files_changed"] == 1
    out = tmp_path / "out"
    restore_snapshot(repo, str(first.snapshot_id), str(out))
    assert (out / "backup_label").read_bytes().startswith(b"START WAL")
    assert (out / "base" / "1").read_bytes() == b"a" * 1000
    assert not (out / "skip.tmp").exists()


def test_before_snapshot_hook_sees_warnings_and_sets_metadata_and_partial(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 5000)
    metadata: dict[str, object] = {"start": 1}
    calls: list[list[str]] = []

    def before_snapshot(warnings: list[str]) -> bool:
        calls.append(warnings)
        metadata["stop"] = 2  # e.g. the stop LSN, known only once every file is read
        return True

    result = backup_tree(repo, src, metadata=metadata, before_snapshot=before_snapshot)
    assert calls == [[]] and result.partial
    snap = repo.load_snapshot(str(result.snapshot_id))
    assert snap.metadata == {"start": 1, "stop": 2} and snap.partial
    assert result.summary["bytes_read"] == 5000


def test_unchanged_directories_reuse_the_parent_tree(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "src"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
        for i in range(3):
            (src / d / f"f{i}").write_bytes(os.urandom(100 + i))
    first = backup_tree(repo, src)
    first_snap = repo.load_snapshot(str(first.snapshot_id))
    second = backup_tree(repo, src, parent=first_snap)
    assert second.summary["files_unmodified"] == 6
    assert second.summary["bytes_added"] == 0 and second.summary["blobs_added"] == 0
    assert repo.load_snapshot(str(second.snapshot_id)).tree == first_snap.tree
    (src / "b" / "f0").write_bytes(b"changed")
    third = backup_tree(repo, src, parent=first_snap)
    assert third.summary["files_changed"] == 1 and third.summary["blobs_added"] == 3  # f0, b/, root
    third_root = repo.load_tree(bytes.fromhex(repo.load_snapshot(str(third.snapshot_id)).tree))["nodes"]
    first_root = repo.load_tree(bytes.fromhex(first_snap.tree))["nodes"]
    assert third_root[0]["subtree"] == first_root[0]["subtree"]  # a/ untouched
    assert third_root[1]["subtree"] != first_root[1]["subtree"]


def test_small_files_restore_per_pack_skipping_a_damaged_blob(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i:02d}": os.urandom(1000 + i) for i in range(20)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    snap = repo.load_snapshot(str(backup_tree(repo, src).snapshot_id))
    node = next(n for n in repo.load_tree(bytes.fromhex(snap.tree))["nodes"] if n["name"] == "f07")
    loc = repo.load_index().get(bytes.fromhex(node["content"][0]))
    assert loc is not None
    pack_file = tmp_path / "repo" / pack_key(loc.pack)
    raw = bytearray(pack_file.read_bytes())
    raw[loc.offset + 20] ^= 0xFF
    pack_file.write_bytes(bytes(raw))

    out = tmp_path / "out"
    out.mkdir()
    (out / "f03").write_bytes(b"old content, replaced atomically")
    fresh = Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    result = restore_snapshot(fresh, str(snap.id), str(out), verify=True, force=True)
    assert [(e["path"], e["damaged"]) for e in result.errors] == [("/f07", "yes")]
    assert result.files == 19 and not (out / "f07").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {k: v for k, v in files.items() if k != "f07"}


def test_xattrs_of_unchanged_files_come_from_the_parent_and_changes_are_seen(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_bytes(b"data")
    first = repo.load_snapshot(str(backup_tree(repo, src).snapshot_id))
    os.setxattr(f, "user.label", b"v1")  # changes the ctime, so the file is looked at again
    second = backup_tree(repo, src, parent=first)
    assert _root_node(repo, second, "f")["xattrs"] == {"user.label": "djE="}
    third = backup_tree(repo, src, parent=repo.load_snapshot(str(second.snapshot_id)))
    assert third.summary["files_unmodified"] == 1
    assert _root_node(repo, third, "f")["xattrs"] == {"user.label": "djE="}


def test_followed_symlinks_are_stored_as_their_directories_and_reused(
    tmp_path: Path, repo: Repository
) -> None:
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "links").mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "data").write_bytes(os.urandom(300))
    (src / "links" / "in").symlink_to(outside)
    (src / "links" / "kept").symlink_to(outside)
    follow = {"links/in"}.__contains__
    first = backup_tree(repo, src, follow_symlinks=follow)
    nodes = {n["name"]: n for n in repo.load_tree(bytes.fromhex(_subtree(repo, first, "links")))["nodes"]}
    assert nodes["in"]["type"] == "dir" and nodes["kept"]["type"] == "symlink"
    second = backup_tree(repo, src, follow_symlinks=follow, parent=repo.load_snapshot(str(first.snapshot_id)))
    assert second.summary["files_unmodified"] == 1 and second.summary["blobs_added"] == 0
    out = tmp_path / "out"
    restore_snapshot(repo, str(second.snapshot_id), str(out))
    assert (out / "links" / "in" / "sub" / "data").read_bytes() == (outside / "sub" / "data").read_bytes()
    assert not (out / "links" / "in").is_symlink() and (out / "links" / "kept").is_symlink()


def _root_node(repo: Repository, result: object, name: str) -> dict[str, Any]:
    """Return the node called `name` in the root tree of the snapshot a backup made."""
    snap = repo.load_snapshot(str(result.snapshot_id))  # type: ignore[attr-defined]
    return next(n for n in repo.load_tree(bytes.fromhex(snap.tree))["nodes"] if n["name"] == name)


def _subtree(repo: Repository, result: object, name: str) -> str:
    snap = repo.load_snapshot(str(result.snapshot_id))  # type: ignore[attr-defined]
    nodes = repo.load_tree(bytes.fromhex(snap.tree))["nodes"]
    return str(next(n["subtree"] for n in nodes if n["name"] == name))


def test_unchanged_file_keeps_its_node_and_a_metadata_change_is_seen(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_bytes(b"x" * 100)
    f.chmod(0o600)
    first = backup_tree(repo, src, kind="files")
    again = backup_tree(repo, src, kind="files", parent=repo.load_snapshot(str(first.snapshot_id)))
    assert _root_node(repo, again, "f") == _root_node(repo, first, "f")
    assert again.summary["files_unmodified"] == 1
    f.chmod(0o644)  # moves the ctime: node and file are read again
    os.setxattr(f, "user.note", b"v2")
    third = backup_tree(repo, src, kind="files", parent=repo.load_snapshot(str(again.snapshot_id)))
    n = _root_node(repo, third, "f")
    assert n["mode"] == 0o644 and n["xattrs"] == {"user.note": "djI="}
    assert n["content"] == _root_node(repo, first, "f")["content"] and third.summary["files_changed"] == 1


def test_open_to_writes_the_plaintext_piece_by_piece_and_nothing_when_it_does_not_authenticate(
    tmp_path: Path,
) -> None:
    c = Cipher(MasterKey.generate())
    segment = (b"wal record " * 100_000)[: 16 * 1024 * 1024 - 5] + os.urandom(5)  # compressible, 16 MiB
    for plaintext, compress in ((segment, True), (os.urandom(70_000), False)):
        sealed = c.seal(plaintext, b"object:wal/x", compress=compress)
        tracemalloc.start()
        try:
            with open(tmp_path / "out", "wb") as out:
                c.open_to(sealed, b"object:wal/x", out)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (tmp_path / "out").read_bytes() == plaintext == c.open(sealed, b"object:wal/x")
        if compress:
            assert peak < 4 * 1024 * 1024, f"{peak} bytes traced: the segment was held whole"
        tampered = bytearray(sealed)
        tampered[-1] ^= 1
        with open(tmp_path / "bad", "wb") as out, pytest.raises(DecryptError):
            c.open_to(bytes(tampered), b"object:wal/x", out)
        assert (tmp_path / "bad").read_bytes() == b""
