"""The repository through the CLI on a local path: init, keys, backup, snapshots, ls, diff, cat, restore."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.inproc_cli import InProcessCli
from tests.repo_trees import digest, make_tree


@pytest.fixture
def repo_cli(cli: Cli, tmp_path: Path) -> InProcessCli:
    cli.env["RECOVERCTL_REPOSITORY"] = str(tmp_path / "repo")
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    cli("init", check=0)  # once through a real process: the installed entry point works
    return InProcessCli(cli)


def summary(result: Any) -> dict[str, Any]:
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    return next(x for x in lines if x["message_type"] == "summary")


def test_init_refuses_existing_and_wrong_passphrase_exit_12(repo_cli: InProcessCli, tmp_path: Path) -> None:
    r = repo_cli("init", "--json", check=2)
    assert "already exists" in r.error_json()["message"]
    before = sorted(p.name for p in (tmp_path / "repo" / "keys").iterdir())
    r = repo_cli("--json", "snapshots", env={"RECOVERCTL_PASSWORD": "wrong"}, check=12)
    assert r.error_json()["error"] == "WrongKeyError"
    assert sorted(p.name for p in (tmp_path / "repo" / "keys").iterdir()) == before
    assert not (tmp_path / "repo" / "locks").exists() or not list((tmp_path / "repo" / "locks").iterdir())


def test_missing_repository_exit_10(cli: Cli, tmp_path: Path) -> None:
    cli.env.update(RECOVERCTL_REPOSITORY=str(tmp_path / "none"), RECOVERCTL_PASSWORD="x")
    r = cli("snapshots", "--json", check=10)
    assert "no repository" in r.error_json()["message"]


def test_round_trip_change_detection_and_browse(repo_cli: InProcessCli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    r = repo_cli("backup", "files", str(src), "--tag", "env=test", "--exclude", "*.tmp", "--json", check=0)
    first = summary(r)
    assert first["files_new"] >= 9 and first["files_unmodified"] == 0 and first["snapshot_id"]
    assert first["bytes_read"] >= 2_500_000

    again = summary(repo_cli("backup", "files", str(src), "--json", check=0))
    assert again["files_unmodified"] == first["files_new"] and again["bytes_read"] == 0
    assert again["bytes_added"] < 0.01 * first["bytes_added"]

    (src / "docs" / "readme.txt").write_text("changed\n")
    (src / "new.txt").write_text("new file\n")
    third = summary(repo_cli("backup", "files", str(src), "--json", check=0))
    assert third["files_changed"] >= 1 and third["files_new"] == 1

    snaps = repo_cli("snapshots", "--json", check=0).json()
    assert [s["id"] for s in snaps] == [first["snapshot_id"], again["snapshot_id"], third["snapshot_id"]]
    assert snaps[0]["tags"] == {"env": "test"} and snaps[0]["paths"] == [str(src)]
    assert snaps[1]["parent"] == first["snapshot_id"] and snaps[0]["kind"] == "files"
    assert set(snaps[0]) >= {"id", "time", "kind", "paths", "tags", "parent", "summary"}

    out = tmp_path / "out"
    repo_cli("restore", first["snapshot_id"][:8], "--target", str(out), "--verify", check=0)
    restored = out / str(src).lstrip("/")
    original = digest(restored)
    # Undo the two changes to compare with the first snapshot's state.
    (src / "new.txt").unlink()
    (src / "docs" / "readme.txt").unlink()
    (src / "hardlink.txt").unlink()
    make_hard = restored / "docs" / "readme.txt"
    assert make_hard.read_text() == "hello recoverctl\n" * 100
    assert original["hardlink.txt"][3] == original["docs/readme.txt"][3]
    assert original["__hardlinks__"] == [["docs/readme.txt", "hardlink.txt"]]
    assert original["secret.key"][1] == "0o600" and original["run.sh"][1] == "0o755"
    assert original["link-to-readme"] == ("symlink", "docs/readme.txt")
    assert original["empty-dir"][0] == "dir" and original["empty.txt"][2] == 0
    assert original["docs/readme.txt"][4] == 1_600_000_000_123_456_789
    assert os.stat(restored / "sparse.img").st_blocks * 512 < 3 * 1024 * 1024

    latest = tmp_path / "latest"
    repo_cli("restore", "latest", "--target", str(latest), check=0)
    now = digest(latest / str(src).lstrip("/"))
    src_digest = digest(src)
    # hardlink.txt and readme were removed from src after the third backup; compare the rest.
    for key in ("random.bin", "sparse.img", "run.sh", "docs/ünïcødé ファイル.txt", "dangling"):
        assert now[key] == src_digest[key]

    listing = repo_cli("ls", "latest", str(src / "docs"), "--json", check=0).json()
    paths = [n["path"] for n in listing["nodes"]]
    assert f"{src}/docs/nested/notes.md" in paths
    d = repo_cli("diff", first["snapshot_id"], "latest", "--json", check=0).json()
    changes = {c["path"]: c["change"] for c in d["changes"]}
    assert changes[f"{src}/new.txt"] == "added" and changes[f"{src}/docs/readme.txt"] == "modified"
    cat = repo_cli("cat", "latest", f"{src}/run.sh", check=0)
    assert cat.stdout == "#!/bin/sh\necho hi\n"

    inc = tmp_path / "inc"
    repo_cli("restore", "latest", "--target", str(inc), "--include", f"{src}/docs/nested", check=0)
    assert (inc / str(src).lstrip("/") / "docs" / "nested" / "notes.md").exists()
    assert not (inc / str(src).lstrip("/") / "random.bin").exists()


def test_dry_run_writes_nothing(repo_cli: InProcessCli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(10_000))
    s = summary(repo_cli("backup", "files", str(src), "--dry-run", "--json", check=0))
    assert s["snapshot_id"] is None and s["bytes_added"] >= 10_000
    assert repo_cli("snapshots", "--json", check=0).json() == []
    assert (
        not list((tmp_path / "repo" / "data").glob("*/*")) if (tmp_path / "repo" / "data").exists() else True
    )


def test_keys_cli(repo_cli: InProcessCli) -> None:
    keys = repo_cli("key", "list", "--json", check=0).json()
    assert len(keys) == 1 and keys[0]["current"]
    r = repo_cli("key", "remove", keys[0]["id"][:8], "--json", check=2)
    assert "last key" in r.error_json()["message"]
    repo_cli("key", "add", env={"RECOVERCTL_NEW_PASSWORD": "second"}, check=0)
    repo_cli("key", "passwd", env={"RECOVERCTL_NEW_PASSWORD": "third"}, check=0)
    repo_cli("snapshots", check=12)  # the original passphrase was replaced
    assert len(repo_cli("key", "list", "--json", env={"RECOVERCTL_PASSWORD": "second"}, check=0).json()) == 2
    assert len(repo_cli("key", "list", "--json", env={"RECOVERCTL_PASSWORD": "third"}, check=0).json()) == 2


def test_help_has_examples() -> None:
    from click.testing import CliRunner

    from recoverctl.cli.main import cli

    for cmd in (
        ["init"],
        ["backup", "files"],
        ["snapshots"],
        ["ls"],
        ["diff"],
        ["cat"],
        ["restore"],
        ["key", "add"],
        ["key", "passwd"],
        ["key", "list"],
        ["key", "remove"],
        ["unlock"],
        ["verify"],
        ["repair", "index"],
        ["forget"],
        ["prune"],
        ["catalog", "sync"],
        ["backup", "volume"],
        ["dump"],
    ):
        r = CliRunner().invoke(cli, [*cmd, "--help"])
        assert r.exit_code == 0 and "Example:" in r.output, cmd


def test_names_that_are_not_utf8_round_trip(repo_cli: InProcessCli, tmp_path: Path) -> None:
    # Such names are stored as surrogate escapes; their trees take the json parser's path.
    src = tmp_path / "src"
    src.mkdir()
    latin1 = os.fsencode(src) + b"/caf\xe9"
    os.mkdir(latin1)
    with open(latin1 + b"/men\xfc.txt", "wb") as f:
        f.write(b"escaped\n")
    first = summary(repo_cli("backup", "files", str(src), "--json", check=0))
    assert first["files_new"] == 1
    again = summary(repo_cli("backup", "files", str(src), "--json", check=0))
    assert again["files_unmodified"] == 1 and again["bytes_read"] == 0
    out = tmp_path / "out"
    repo_cli("restore", "latest", "--target", str(out), check=0)
    restored = os.fsencode(out / str(src).lstrip("/")) + b"/caf\xe9/men\xfc.txt"
    with open(restored, "rb") as f:
        assert f.read() == b"escaped\n"
