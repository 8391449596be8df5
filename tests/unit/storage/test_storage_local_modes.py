"""A local repository is for its owner only: every directory 0700, every file 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from recoverctl.repo import Repository, backup_tree
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most shells and services run with
    try:
        yield
    finally:
        os.umask(old)


def _wrong_modes(root: Path) -> dict[str, str]:
    """Return the entries under `root` (and root itself) that are not 0700 dirs or 0600 files."""
    wrong = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if dirpath == str(root) else [*dirs, *files]:
            st = Path(dirpath, name).lstat()
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) != want:
                wrong[os.path.relpath(Path(dirpath, name), root)] = oct(stat.S_IMODE(st.st_mode))
    return wrong


def test_repository_tree_is_private(tmp_path: Path, usual_umask: None) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    root = tmp_path / "parent" / "repo"
    repo = Repository.init(LocalStorage(root), "pw", kdf=FAST_KDF)
    with repo.lock(operation="backup"):
        backup_tree(repo, tmp_path / "src")
        assert [p.parent.name for p in root.rglob("*") if p.is_file() and p.parent.name == "locks"] == [
            "locks"
        ]
        assert _wrong_modes(root) == {}  # with the lock object in it
    assert (root / "snapshots").is_dir() and (root / "data").is_dir()
    assert _wrong_modes(root) == {}
    # the parent above the repository is not the repository's to restrict
    assert stat.S_IMODE((tmp_path / "parent").stat().st_mode) == 0o755
