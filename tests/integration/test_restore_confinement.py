"""`restore --target` writes only inside its target: hostile snapshots (names like '..', '/abs',
'a/../../x', NUL, a symlink and a directory of one name) are refused with exit 13 before anything
is written outside, symlinks already in the target are replaced and never followed (also by
--delta's deletions), and a non-empty target needs --force or --delta (--delta --dry-run previews).

Each test plants its snapshot through the repository's own write path and fingerprints everything
around the target (files, modes, times, a sentinel file) before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from recoverctl.repo import Repository
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.hostile_snapshots import directory, file, fingerprint, save_snapshot, symlink
from tests.inproc_cli import InProcessCli

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
PASSWORD = "correct horse"
SKIP = ("home", "repo", "target")


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalStorage(tmp_path / "repo"), PASSWORD, kdf=FAST_KDF, pack_size_mib=1)


@pytest.fixture
def rc(cli: Cli, tmp_path: Path, repo: Repository) -> InProcessCli:
    cli.env["RECOVERCTL_REPOSITORY"] = str(tmp_path / "repo")
    cli.env["RECOVERCTL_PASSWORD"] = PASSWORD
    return InProcessCli(cli)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """Things outside the target a hostile restore would reach, and an empty target."""
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "sentinel").write_text("keep me\n")
    (outside / "sentinel").chmod(0o640)
    (outside / "inner" / "file").write_text("inner\n")
    (tmp_path / "sentinel").write_text("top\n")
    (tmp_path / "target").mkdir()
    return tmp_path


PWNED = b"pwned\n"


def _hostile(tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    return {
        "dotdot": [directory("..", file("pwned", PWNED), file("sentinel", PWNED, 0o777), mode=0o777)],
        "dot": [directory(".", file("pwned", PWNED))],
        "traversal": [directory("a"), file("a/../../pwned", PWNED)],
        "absolute": [file(str(tmp_path / "outside" / "sentinel"), PWNED, 0o777)],
        "nul": [file("a\x00b", PWNED)],
        "empty": [file("", PWNED)],
        "symlink-then-dir": [
            symlink("link", str(tmp_path / "outside")),
            directory("link", file("sentinel", PWNED, 0o777), mode=0o700),
        ],
        "nested": [directory("ok", directory("deeper", file("../../../pwned", PWNED)))],
    }


@pytest.mark.parametrize(
    "case", ["dotdot", "dot", "traversal", "absolute", "nul", "empty", "symlink-then-dir", "nested"]
)
def test_hostile_names_exit_13_naming_snapshot_and_path_and_change_nothing_outside(
    rc: InProcessCli, repo: Repository, world: Path, case: str
) -> None:
    good = save_snapshot(repo, [file("x", b"x")])
    sid = save_snapshot(repo, _hostile(world)[case])
    before = fingerprint(world, SKIP)
    r = rc("restore", sid[:8], "--target", str(world / "target"), "--json", check=13)
    err = r.error_json()
    assert err["error"] == "InvalidTreeError"
    assert f"snapshot {sid[:8]}" in err["message"]
    expected_dir = "'/ok/deeper'" if case == "nested" else "'/'"
    assert f"directory {expected_dir}" in err["message"], err["message"]
    assert fingerprint(world, SKIP) == before
    assert not (world / "pwned").exists() and (world / "outside" / "sentinel").read_text() == "keep me\n"

    # Every reader of trees says the same, none crashes: ls, diff, verify.
    for args in (["ls", sid[:8]], ["diff", good[:8], sid[:8]]):
        r = rc(*args, "--json", check=13)
        assert f"snapshot {sid[:8]}" in r.error_json()["message"]
    v = rc("verify", "--json", check=13)
    assert f"snapshot {sid[:8]}" in v.stdout + v.stderr and "tree_invalid" in v.stdout + v.stderr
    assert fingerprint(world, SKIP) == before


def test_symlinks_in_target_are_replaced_never_followed_with_force(
    rc: InProcessCli, repo: Repository, world: Path
) -> None:
    target = world / "target"
    (target / "data").symlink_to(world / "outside")
    (target / "f.txt").symlink_to(world / "outside" / "sentinel")
    (target / "fifo").symlink_to(world / "outside" / "inner")
    sid = save_snapshot(
        repo,
        [
            directory("data", file("sentinel", PWNED, 0o777), directory("inner"), mode=0o700),
            file("f.txt", b"new content\n", 0o600),
            symlink("fifo", "elsewhere"),
        ],
    )
    before = fingerprint(world, SKIP)
    refused = rc("restore", sid[:8], "--target", str(target), "--json", check=2)
    assert "not empty" in refused.error_json()["message"] and "data" in refused.error_json()["message"]
    rc("restore", sid[:8], "--target", str(target), "--force", check=0)
    assert fingerprint(world, SKIP) == before
    assert not (target / "data").is_symlink() and (target / "data" / "sentinel").read_bytes() == PWNED
    assert (target / "data").stat().st_mode & 0o777 == 0o700
    assert not (target / "f.txt").is_symlink() and (target / "f.txt").read_bytes() == b"new content\n"
    assert os.readlink(target / "fifo") == "elsewhere"


def test_delta_never_deletes_or_chmods_through_a_symlink(
    rc: InProcessCli, repo: Repository, world: Path
) -> None:
    target = world / "target"
    (target / "sub").symlink_to(world / "outside")  # the snapshot has an (empty) directory here
    (target / "extra").symlink_to(world / "outside")  # the snapshot lacks it
    (target / "keep.txt").write_bytes(b"same\n")
    sid = save_snapshot(repo, [directory("sub", mode=0o700), file("keep.txt", b"same\n")])
    before = fingerprint(world, SKIP)

    plan = rc("restore", sid[:8], "--target", str(target), "--delta", "--dry-run", "--json", check=0).json()
    assert plan["dry_run"] is True
    assert plan["would_remove"] == ["/extra"] and plan["would_overwrite"] == ["/sub"]
    assert plan["files_skipped_unchanged"] == 1 and plan["files"] == 0

    out = rc("restore", sid[:8], "--target", str(target), "--delta", "--json", check=0).json()
    assert out["removed"] == 1 and out["files_skipped_unchanged"] == 1
    assert fingerprint(world, SKIP) == before
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt", "sub"]
    assert (
        (target / "sub").is_dir()
        and not (target / "sub").is_symlink()
        and not list((target / "sub").iterdir())
    )


def test_non_empty_target_is_refused_and_delta_dry_run_lists_and_changes_nothing(
    rc: InProcessCli, repo: Repository, world: Path
) -> None:
    target = world / "target"
    (target / "docs").mkdir()
    (target / "docs" / "same.txt").write_bytes(b"unchanged\n")
    (target / "docs" / "changed.txt").write_bytes(b"old\n")
    (target / "docs" / "stale.txt").write_bytes(b"not in the snapshot\n")
    (target / "olddir" / "deep").mkdir(parents=True)
    (target / "olddir" / "deep" / "x").write_bytes(b"x")
    (target / "new.txt").mkdir()  # a directory where the snapshot has a file
    sid = save_snapshot(
        repo,
        [
            directory("docs", file("changed.txt", b"new\n"), file("same.txt", b"unchanged\n")),
            file("new.txt", b"hello\n"),
        ],
    )
    everything = fingerprint(world, ("home", "repo"))

    r = rc("restore", sid[:8], "--target", str(target), "--json", check=2)
    msg = r.error_json()["message"]
    assert "not empty" in msg and "docs" in msg and "olddir" in msg
    assert "--delta --dry-run" in r.error_json()["hint"] and "--force" in r.error_json()["hint"]
    assert fingerprint(world, ("home", "repo")) == everything

    plan = rc("restore", sid[:8], "--target", str(target), "--delta", "--dry-run", "--json", check=0).json()
    assert sorted(plan["would_remove"]) == ["/docs/stale.txt", "/olddir/"]
    assert sorted(plan["would_overwrite"]) == ["/docs/changed.txt", "/new.txt/"]
    assert plan["files"] == 2 and plan["files_skipped_unchanged"] == 1
    text = rc("restore", sid[:8], "--target", str(target), "--delta", "--dry-run", check=0).stdout
    assert "would remove   /olddir/" in text and "would replace  /docs/changed.txt" in text
    assert fingerprint(world, ("home", "repo")) == everything  # the dry run changed nothing at all

    rc("restore", sid[:8], "--target", str(target), "--delta", check=0)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        "docs",
        "docs/changed.txt",
        "docs/same.txt",
        "new.txt",
    ]
    assert (target / "docs" / "changed.txt").read_bytes() == b"new\n"
    assert (target / "new.txt").read_bytes() == b"hello\n"


def test_dry_run_into_a_missing_target_creates_nothing(
    rc: InProcessCli, repo: Repository, world: Path
) -> None:
    sid = save_snapshot(repo, [directory("d", file("f", b"data"))])
    missing = world / "target" / "not-yet"
    plan = rc("restore", sid[:8], "--target", str(missing), "--dry-run", "--json", check=0).json()
    assert plan["files"] == 1 and plan["dirs"] == 1 and plan["would_remove"] == plan["would_overwrite"] == []
    assert not missing.exists()
    rc("restore", sid[:8], "--target", str(missing), check=0)
    assert (missing / "d" / "f").read_bytes() == b"data"


def test_files_drill_of_a_hostile_snapshot_fails_13_and_writes_nothing_outside(
    rc: InProcessCli, repo: Repository, world: Path
) -> None:
    parent = world / "target"  # the drill's workspace is made under here
    rc.write_config(
        {
            "repository": {"url": str(world / "repo"), "pack_size_mib": 1},
            "sources": {"docs": {"type": "files", "paths": [str(world / "outside")]}},
        }
    )
    sid = save_snapshot(repo, _hostile(world)["dotdot"], source="docs")
    playbook = world / "home" / "docs.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "drill": {
                    "name": "docs-nightly",
                    "source": "docs",
                    "recovery_point": "latest",
                    "targets": {"rto": "1h", "rpo": "1h"},
                    "where": {"temp_dir": str(parent)},
                }
            }
        )
    )
    before = fingerprint(world, SKIP)
    r = rc("drill", "run", str(playbook), "--json", check=13)
    assert f"snapshot {sid[:8]}" in r.stdout + r.stderr and "'..'" in r.stdout + r.stderr
    assert fingerprint(world, SKIP) == before
    assert not list(parent.rglob("pwned"))
