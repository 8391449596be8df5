"""ContentIds: a file's chunk ids in order, done futures dropped as the file is read."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from recoverctl.repo.content_ids import ContentIds


def _done(value: str) -> Future[str]:
    f: Future[str] = Future()
    f.set_result(value)
    return f


def test_ids_keep_chunk_order_and_done_futures_are_not_held() -> None:
    ids = ContentIds()
    slow: Future[str] = Future()
    ids.append("kept-0")
    ids.append(_done("sealed-1"))
    ids.append(slow)  # still being sealed: it and everything after it stay as they are
    ids.append(_done("sealed-3"))
    assert [type(i) for i in ids._items] == [str, str, Future, Future]
    slow.set_result("sealed-2")
    ids.append("kept-4")
    # Once the slow chunk is done, the next append turns every done future before it into its id.
    assert all(isinstance(i, str) for i in ids._items)
    assert ids.result() == ["kept-0", "sealed-1", "sealed-2", "sealed-3", "kept-4"]


def test_a_failed_chunk_is_raised_and_the_rest_cancelled() -> None:
    ids = ContentIds()
    failed: Future[str] = Future()
    queued: Future[str] = Future()
    ids.append(failed)
    ids.append(queued)
    failed.set_exception(OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        ids.append("kept")
    ids.cancel()
    assert queued.cancelled()


def test_result_waits_for_the_chunks_still_being_sealed() -> None:
    ids = ContentIds()
    pending: Future[str] = Future()
    ids.append(pending)
    pending.set_result("late")
    assert ids.result() == ["late"]
