"""A repository lock's cleanup never replaces the error that ended the operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from recoverctl.errors import LockedError, StorageError, WriteRefused
from recoverctl.repo.locks import RepositoryLock
from recoverctl.storage.local import LocalStorage
from tests.faults.storage import FaultyStorage, parse_faults


def test_failed_release_is_a_note_on_the_operations_error(tmp_path: Path) -> None:
    storage = FaultyStorage(LocalStorage(tmp_path), parse_faults("delete:error:*@locks/"))
    with (
        pytest.raises(ValueError, match="the upload failed") as info,
        RepositoryLock(storage, operation="backup"),
    ):
        raise ValueError("the upload failed")
    [note] = info.value.__notes__
    assert "releasing the repository lock" in note and "injected error fault" in note


def test_failed_release_after_success_is_raised(tmp_path: Path) -> None:
    storage = FaultyStorage(LocalStorage(tmp_path), parse_faults("delete:error:*@locks/"))
    with (
        pytest.raises(StorageError, match="injected error fault"),
        RepositoryLock(storage, operation="backup"),
    ):
        pass


def test_conflict_survives_a_failed_removal_of_our_own_lock(tmp_path: Path) -> None:
    inner = LocalStorage(tmp_path)
    storage = FaultyStorage(inner, parse_faults("delete:error:*@locks/"))
    with (
        RepositoryLock(inner, exclusive=True, operation="prune"),
        pytest.raises(LockedError, match="exclusive lock for prune") as info,
        RepositoryLock(storage, operation="backup"),
    ):
        pass
    assert "removing our lock" in info.value.__notes__[0]


def test_only_readers_go_on_when_writes_are_refused(tmp_path: Path) -> None:
    class ReadOnly(LocalStorage):
        def put(self, key: str, data: bytes) -> None:
            raise WriteRefused(f"unable to write '{key}': Read-only file system")

    storage = ReadOnly(tmp_path)
    with RepositoryLock(storage, operation="restore", reader=True) as lock:
        assert lock.held is False
    with pytest.raises(WriteRefused), RepositoryLock(storage, operation="backup"):
        pass
    with pytest.raises(WriteRefused), RepositoryLock(storage, exclusive=True, operation="prune", reader=True):
        pass
