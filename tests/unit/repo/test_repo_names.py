"""Every repository object is bound to its name: copies and swaps are refused on read and reported
by verify (exit 13); key files cannot lock out a valid passphrase; format 1 still reads and
upgrades."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from recoverctl.errors import UsageError, VerificationError, WrongKeyError
from recoverctl.repo import Repository, backup_tree, open_file
from recoverctl.repo.check import check
from recoverctl.repo.crypto import DEFAULT_KDF, KeySlot, KeySlotError, check_kdf
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.inproc_cli import InProcessCli

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
FIXTURE_V1 = Path(__file__).parents[2] / "fixtures" / "repo_v1"
V1_SNAPSHOTS = {
    "e8773c85dfc7e7588a644e7a566776e1b759cd357faad317b51dc217c6dcc46b": b"hello from a v1 repository\n",
    "3dd6a62b66e37826d10dcab88ff0105ef7cb2aaaf44a6972fa472a033cb83e33": b"hello again, second snapshot\n",
}
SEG1, SEG2 = "000000010000000000000001", "000000010000000000000002"


def _repo_with_two_snapshots(tmp_path: Path) -> tuple[Path, Repository, list[str]]:
    path = tmp_path / "repo"
    repo = Repository.init(LocalStorage(path), "pw", kdf=FAST_KDF, pack_size_mib=1)
    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for text in ("first", "second"):
        (src / "f.txt").write_text(text)
        ids.append(backup_tree(repo, src, kind="files").snapshot_id)
    return path, repo, ids


def _reopen(path: Path, password: str = "pw") -> Repository:
    return Repository.open(LocalStorage(path), password)


def _errors(repo: Repository, **kw: bool) -> list[dict[str, object]]:
    return check(repo, **kw).errors  # type: ignore[arg-type]


def test_a_copied_snapshot_is_no_second_snapshot(tmp_path: Path) -> None:
    path, _, (first, _second) = _repo_with_two_snapshots(tmp_path)
    phantom = "ab" * 32
    shutil.copy(path / "snapshots" / first, path / "snapshots" / phantom)
    repo = _reopen(path)
    with pytest.raises(VerificationError, match=f"snapshot {phantom} is not stored under its own name") as e:
        repo.list_snapshots()
    assert e.value.exit_code == 13 and e.value.details["object"] == f"snapshots/{phantom}"
    assert repo.load_snapshot(first).id == first  # the original is fine
    errors = _errors(repo)
    assert [x["snapshot"] for x in errors if x["kind"] == "snapshot"] == [phantom]


def test_two_swapped_snapshots_are_refused(tmp_path: Path) -> None:
    path, _, (a, b) = _repo_with_two_snapshots(tmp_path)
    sa, sb = path / "snapshots" / a, path / "snapshots" / b
    data_a, data_b = sa.read_bytes(), sb.read_bytes()
    sa.write_bytes(data_b)
    sb.write_bytes(data_a)
    repo = _reopen(path)
    for sid in (a, b):
        with pytest.raises(VerificationError, match="copy of another object, or was moved or swapped"):
            repo.load_snapshot(sid)
    assert sorted(x["snapshot"] for x in _errors(repo) if x["kind"] == "snapshot") == sorted([a, b])


def test_a_copied_index_file_is_refused(tmp_path: Path) -> None:
    path, _, _ = _repo_with_two_snapshots(tmp_path)
    original = sorted((path / "index").iterdir())[0]
    shutil.copy(original, path / "index" / ("cd" * 32))
    repo = _reopen(path)
    with pytest.raises(
        VerificationError, match=f"index file 'index/{'cd' * 32}' is not stored under its own"
    ):
        repo.load_index()
    assert [x["object"] for x in _errors(repo) if x["kind"] == "index"] == [f"index/{'cd' * 32}"]


def _wal_cli(cli: Cli, path: Path) -> InProcessCli:
    cli.write_config({"repository": {"url": str(path)}, "sources": {"main": {"type": "postgres"}}})
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    return InProcessCli(cli)


def test_swapped_wal_segments_are_refused_by_fetch_and_verify(tmp_path: Path, cli: Cli) -> None:
    path, repo, _ = _repo_with_two_snapshots(tmp_path)
    from recoverctl.sources.postgres.walnames import wal_key

    k1, k2 = wal_key("main", SEG1), wal_key("main", SEG2)
    repo.put_object(k1, b"\x01" * 8192)
    repo.put_object(k2, b"\x02" * 8192)
    run = _wal_cli(cli, path)
    run("wal", "fetch", "--source", "main", SEG1, str(tmp_path / "ok"), check=0)
    assert (tmp_path / "ok").read_bytes() == b"\x01" * 8192
    f1, f2 = path / k1, path / k2
    d1, d2 = f1.read_bytes(), f2.read_bytes()
    f1.write_bytes(d2)
    f2.write_bytes(d1)
    r = run("--json", "wal", "fetch", "--source", "main", SEG1, str(tmp_path / "swapped"), check=13)
    assert k1 in r.error_json()["message"] and "failed authentication" in r.error_json()["message"]
    assert not (tmp_path / "swapped").exists()  # nothing replayable was written
    errors = _errors(_reopen(path), read_objects=True)
    assert sorted(x["object"] for x in errors if x["kind"] == "object") == sorted([k1, k2])


def test_verify_exits_13_naming_a_copied_snapshot(tmp_path: Path, cli: Cli) -> None:
    path, _, (first, _) = _repo_with_two_snapshots(tmp_path)
    run = _wal_cli(cli, path)
    run("verify", check=0)
    shutil.copy(path / "snapshots" / first, path / "snapshots" / ("ef" * 32))
    r = run("--json", "verify", check=13)
    assert f"snapshot {'ef' * 32} is not stored under its own name" in r.error_json()["message"]
    r = run("--json", "snapshots", check=13)
    assert "ef" * 32 in r.error_json()["message"]


def _plant(path: Path, name: str, content: bytes) -> None:
    (path / "keys" / name).write_bytes(content)


def test_planted_and_broken_key_files_do_not_lock_out_a_valid_passphrase(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, repo, _ = _repo_with_two_snapshots(tmp_path)
    good = json.loads((path / "keys" / repo.key_id).read_text())
    huge = {**good, "kdf": {"name": "scrypt", "n": 2**40, "r": 2**20, "p": 1}}
    # Slots are tried in name order and the first that opens wins: '-' sorts before every hex
    # digit, so each planted file is tried (and warned about) before the real slot.
    planted = {
        "-00-garbage": b"\x00not json{",
        "-01-list": b"[1, 2]",
        "-02-types": json.dumps({**good, "kdf": {"name": "scrypt", "n": "32768", "r": 8, "p": 1}}).encode(),
        "-03-huge-kdf": json.dumps(huge).encode(),
        "-04-bool": json.dumps({**good, "kdf": {"name": "scrypt", "n": True, "r": 8, "p": 1}}).encode(),
        "-05-argon": json.dumps({**good, "kdf": {"name": "argon9"}}).encode(),
        "-06-big-file": b" " * (1 << 20),
        "-07-copy": (path / "keys" / repo.key_id).read_bytes(),  # a copy under another name
    }
    for name, content in planted.items():
        _plant(path, name, content)
    with caplog.at_level(logging.WARNING, logger="recoverctl.repo.repository"):
        opened = _reopen(path)
    assert opened.key_id == repo.key_id
    warned = caplog.text
    for name in planted:
        assert f"keys/{name}" in warned
    assert "exceed the accepted bounds" in warned and "not the hash of its content" in warned
    with pytest.raises(WrongKeyError, match="8 unusable or unreadable key file"):
        _reopen(path, "wrong")
    rows = {r["id"]: r for r in opened.list_keys()}
    assert rows[repo.key_id]["problem"] is None and all(rows[n]["problem"] for n in planted)
    assert sorted(x["object"] for x in _errors(opened) if x["kind"] == "key_slot") == sorted(
        f"keys/{n}" for n in planted
    )
    # the garbage does not count as a key: the last usable slot is still protected
    with pytest.raises(UsageError, match="last key"):
        opened.remove_key(repo.key_id)
    opened.remove_key("-00-garbage")


def test_an_unreadable_key_file_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.faults.storage import Fault, FaultyStorage

    path, repo, _ = _repo_with_two_snapshots(tmp_path)
    shutil.copy(path / "keys" / repo.key_id, path / "keys" / "00-unreadable")
    storage = FaultyStorage(LocalStorage(path), [Fault("get", "error", None, "keys/00-unreadable")])
    with caplog.at_level(logging.WARNING, logger="recoverctl.repo.repository"):
        assert Repository.open(storage, "pw").key_id == repo.key_id
    assert "keys/00-unreadable" in caplog.text and "injected error fault" in caplog.text


def test_kdf_parameters_are_bounded_before_any_work() -> None:
    assert check_kdf(FAST_KDF) == FAST_KDF
    for bad in (
        {"name": "scrypt", "n": 2**21, "r": 8, "p": 1},
        {"name": "scrypt", "n": 2**20, "r": 16, "p": 1},  # 2 GiB
        {"name": "scrypt", "n": 2**17, "r": 8, "p": 16},  # 16x the default work
        {"name": "scrypt", "n": 3000, "r": 8, "p": 1},
        {"name": "scrypt", "n": 2**14, "r": 0, "p": 1},
        {"name": "scrypt", "n": 2**14.0, "r": 8, "p": 1},
        "scrypt",
    ):
        with pytest.raises(KeySlotError):
            check_kdf(bad)


def test_new_keys_follow_current_kdf_guidance(tmp_path: Path) -> None:
    assert DEFAULT_KDF == {"name": "scrypt", "n": 2**15, "r": 8, "p": 3}
    repo = Repository.init(LocalStorage(tmp_path / "repo"), "pw")
    (key,) = (tmp_path / "repo" / "keys").iterdir()
    doc = json.loads(key.read_text())
    assert doc["kdf"] == DEFAULT_KDF
    assert key.name == KeySlot.parse(doc).id == repo.key_id  # named by its content
    assert repo.config["version"] == 3


def _v1_copy(tmp_path: Path) -> Path:
    path = tmp_path / "v1"
    shutil.copytree(FIXTURE_V1, path)
    return path


def _reads_everything(repo: Repository) -> None:
    assert sorted(s.id for s in repo.list_snapshots()) == sorted(V1_SNAPSHOTS)
    for sid, hello in V1_SNAPSHOTS.items():
        assert b"".join(open_file(repo, repo.load_snapshot(sid), "/hello.txt")) == hello
        assert b"".join(open_file(repo, repo.load_snapshot(sid), "/sub/nested.txt")) == b"nested file\n"
    assert repo.get_object(f"wal/fixture/00000001/{SEG1}") == b"\x01" * 8192
    assert repo.get_object(f"wal/fixture/00000001/{SEG2}") == b"\x02" * 8192


def test_a_format_1_repository_written_by_the_previous_release_still_reads(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path)
    for password in ("fixture-v1", "fixture-v1-second"):
        repo = _reopen(path, password)
        assert repo.config["version"] == 1
        _reads_everything(repo)
    report = check(repo, read_packs=lambda packs: packs, read_objects=True)
    assert report.ok, report.errors
    assert any("format version 1" in n and "repair upgrade" in n for n in report.notes)
    # copies are detected in a format-1 repository too: the names were always content hashes
    first = sorted(V1_SNAPSHOTS)[0]
    shutil.copy(path / "snapshots" / first, path / "snapshots" / ("01" * 32))
    with pytest.raises(VerificationError, match="not stored under its own name"):
        _reopen(path, "fixture-v1").list_snapshots()


def test_upgrade_binds_key_slots_to_their_names(tmp_path: Path, cli: Cli) -> None:
    path = _v1_copy(tmp_path)
    old_keys = sorted(p.name for p in (path / "keys").iterdir())
    cli.write_config({"repository": {"url": str(path)}})
    cli.env["RECOVERCTL_PASSWORD"] = "fixture-v1"
    run = InProcessCli(cli)
    dry = json.loads(run("--json", "repair", "upgrade", "--dry-run", check=0).stdout)
    assert dry["version_before"] == 1 and dry["dry_run"] and len(dry["keys_renamed"]) == 2
    assert sorted(p.name for p in (path / "keys").iterdir()) == old_keys
    assert json.loads((path / "config").read_text())["version"] == 1

    done = json.loads(run("--json", "repair", "upgrade", check=0).stdout)
    assert (done["version_before"], done["version"]) == (1, 3)
    assert json.loads((path / "config").read_text())["version"] == 3
    for key in (path / "keys").iterdir():
        assert key.name == KeySlot.parse(json.loads(key.read_text())).id
    for password in ("fixture-v1", "fixture-v1-second"):
        repo = _reopen(path, password)
        _reads_everything(repo)
    assert check(repo, read_packs=lambda packs: packs, read_objects=True).ok
    again = json.loads(run("--json", "repair", "upgrade", check=0).stdout)
    assert again["version_before"] == 3 and again["keys_renamed"] == []

    # now a key slot copied under another name is refused and reported
    some = sorted((path / "keys").iterdir())[0]
    shutil.copy(some, path / "keys" / "copied")
    repo = _reopen(path, "fixture-v1")
    assert repo.key_id != "copied"
    assert [x["object"] for x in _errors(repo) if x["kind"] == "key_slot"] == ["keys/copied"]
    assert run("--json", "verify", check=13)
