"""`prune --dry-run` and `forget --prune --dry-run` write nothing to the repository, even when
packs no index lists (an interrupted backup) wait to be planned for; the real prune still
deletes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recoverctl.repo import Repository
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.inproc_cli import InProcessCli

pytestmark = pytest.mark.integration

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Return every object of a local repository with its size and mtime (ns)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = (Path(dirpath) / name).stat()
            out[str((Path(dirpath) / name).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def orphan_packs(repo_dir: Path) -> set[str]:
    """Return the packs in storage that no index file lists."""
    repo = Repository.open(LocalStorage(repo_dir), "pw")
    return set(repo.list_packs()) - set(repo.load_index().packs)


def interrupted_backup(cli: InProcessCli, src: Path) -> None:
    """Run a backup whose index writes all fail: its packs are stored, no index lists them."""
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(700_000))
    cli("backup", "files", str(src), env={"RECOVERCTL_FAULTS": "put:error:*@index/"}, check=1)


@pytest.fixture
def env(cli: Cli, tmp_path: Path) -> InProcessCli:
    icli = InProcessCli(cli)
    icli.write_config({"repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1}})
    icli.env["RECOVERCTL_PASSWORD"] = "pw"
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    return icli


def test_dry_runs_leave_orphan_packs_unindexed_and_the_real_prune_deletes_them(
    env: InProcessCli, tmp_path: Path
) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "a.txt").write_text("kept by a snapshot\n")
    env("backup", "files", str(kept), check=0)
    env("backup", "files", str(kept), check=0)
    interrupted_backup(env, tmp_path / "src")
    repo_dir = tmp_path / "repo"
    orphans = orphan_packs(repo_dir)
    assert orphans, "the interrupted backup left no orphan pack"
    before = listing(repo_dir)

    plan = env("prune", "--dry-run", "--json", check=0).json()
    assert plan["dry_run"] is True and plan["packs_delete"] == len(orphans)
    assert listing(repo_dir) == before
    plan = env("forget", "--keep-last", "1", "--prune", "--dry-run", "--json", check=0).json()
    assert plan["prune"]["packs_delete"] == len(orphans) and len(plan["removed"]) == 1
    assert listing(repo_dir) == before  # no index file written, no lock left, nothing changed
    assert orphan_packs(repo_dir) == orphans

    done = env("prune", "--json", check=0).json()
    assert done["packs_delete"] == len(orphans) and done["bytes_freed"] > 0
    assert orphan_packs(repo_dir) == set()
    assert not set(Repository.open(LocalStorage(repo_dir), "pw").list_packs()) & orphans
    env("verify", "--read-data", check=0)
