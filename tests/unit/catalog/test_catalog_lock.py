"""The in-process lock that queues SQLite transactions of one process in arrival order."""

from __future__ import annotations

import threading

from recoverctl.catalog import FifoLock
from tests.fixtures.net import wait_until


def test_waiters_get_the_lock_in_arrival_order_even_against_the_releaser() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1)
    order: list[str] = []
    started: list[str] = []

    def take(name: str) -> None:
        started.append(name)
        assert lock.acquire(timeout=5)
        order.append(name)
        lock.release()

    waiters = []
    for name in ("b", "c"):
        th = threading.Thread(target=take, args=(name,))
        th.start()
        waiters.append(th)
        # Queue them one after the other: b is waiting before c asks.
        wait_until(lambda n=name: n in started and len(lock._waiting) == len(waiters), timeout=5)
    lock.release()
    # The releasing thread asks again at once: it queues behind b and c.
    assert lock.acquire(timeout=5)
    order.append("a")
    lock.release()
    for th in waiters:
        th.join(5)
    assert order == ["b", "c", "a"]


def test_reentrant_and_times_out() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1) and lock.acquire(timeout=1)
    lock.release()
    got: list[bool] = []
    th = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)))
    th.start()
    th.join(5)
    assert got == [False] and not lock._waiting
    lock.release()
    th = threading.Thread(target=lambda: got.append(lock.acquire(timeout=1)))
    th.start()
    th.join(5)
    assert got == [False, True]
