"""A raising signal handler never cuts a catalog transaction in half (recoverctl/interrupts.py)."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.interrupts import interrupt, uninterruptible


class Stop(Exception):
    """An ordinary Exception on purpose: SQLAlchemy wraps one raised inside it (StatementError),
    so only a deferred raise comes out as Stop. Drills raise a BaseException on top of this."""


@pytest.fixture
def raising_handler() -> Iterator[list[int]]:
    """SIGUSR1 and SIGALRM raise Stop through interrupt(); yields the list of signals handled."""
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)
        interrupt(Stop(signum))

    previous = {s: signal.signal(s, handler) for s in (signal.SIGUSR1, signal.SIGALRM)}
    try:
        yield seen
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in previous.items():
            signal.signal(s, h)


def test_outside_a_block_the_interrupt_raises_at_once(raising_handler: list[int]) -> None:
    reached = False
    with pytest.raises(Stop):
        os.kill(os.getpid(), signal.SIGUSR1)
        reached = True
    assert raising_handler == [signal.SIGUSR1] and not reached


def test_inside_nested_blocks_it_waits_for_the_outermost_end(raising_handler: list[int]) -> None:
    steps: list[str] = []
    with pytest.raises(Stop):
        with uninterruptible():
            with uninterruptible():
                os.kill(os.getpid(), signal.SIGUSR1)
                steps.append("inner body finished")
            steps.append("outer body finished")
        steps.append("after the block")
    assert raising_handler == [signal.SIGUSR1]
    assert steps == ["inner body finished", "outer body finished"]
    # Raised once: the next block runs to its end undisturbed.
    with uninterruptible():
        steps.append("next block")
    assert steps[-1] == "next block"


def test_the_interrupt_wins_over_the_blocks_own_error(raising_handler: list[int]) -> None:
    with pytest.raises(Stop) as info, uninterruptible():
        os.kill(os.getpid(), signal.SIGUSR1)
        raise ValueError("the block's own failure")
    assert isinstance(info.value.__context__, ValueError)


def test_a_worker_threads_block_does_not_hold_back_the_main_thread(raising_handler: list[int]) -> None:
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with uninterruptible():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(Stop):
            os.kill(os.getpid(), signal.SIGUSR1)
            pytest.fail("the main thread's interrupt waited for the worker's block")
    finally:
        release.set()
        thread.join()


def test_catalog_stays_usable_under_interrupts_at_random_points(
    raising_handler: list[int], tmp_path: Path
) -> None:
    # Unguarded, an interrupt inside SQLAlchemy surfaces as StatementError, an AssertionError in
    # commit, or a lock held forever; every interrupt here must come out as Stop, after a whole
    # transaction, and leave the catalog working.
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    rng = random.Random(7)
    returned = 0
    for _ in range(200):
        try:
            # One shot: fired (and raised inside this try) or disarmed before the try ends.
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0001, 0.003))
            for _ in range(20):
                run_id = catalog.start_run("restore", None, "file:///r")
                returned += 1
                catalog.finish_run(run_id, "succeeded")
            signal.setitimer(signal.ITIMER_REAL, 0)
        except Stop:
            pass
    interrupts = len(raising_handler)
    assert interrupts > 100, "the timer never interrupted the loop: the test proves nothing"
    with catalog.begin() as conn:
        statuses = conn.execute(sa.select(t.runs.c.status)).scalars().all()
    # A start_run interrupted at its end has committed its row without returning its id.
    assert returned <= len(statuses) <= returned + interrupts
    assert set(statuses) <= {"running", "succeeded"}
    catalog.close()
