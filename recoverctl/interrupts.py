"""Signal handlers that raise, kept out of code that must not be cut in half.

A handler that raises (a drill's SIGINT/SIGTERM guard) lands between any two bytecodes of the main
thread. Inside SQLAlchemy that is fatal for the catalog: an exception during an INSERT comes back
as StatementError, one during COMMIT as an AssertionError, one inside a pool or writer lock leaves
the lock held. Such code runs inside `uninterruptible()`; handlers raise through `interrupt()`,
which raises at once outside those blocks and when the outermost one ends inside them.

Only the main thread runs signal handlers, so the nesting depth is per thread: a worker thread's
catalog write does not hold back the main thread's interrupt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _State(threading.local):
    depth = 0
    pending: BaseException | None = None


_state = _State()

# Set once the user has asked this process to stop (SIGINT, a drill's SIGTERM). Worker threads
# cannot be interrupted; their long waits (retry back-off) watch this instead, so the process does
# not sit out every retry of every in-flight read before it can exit.
stop_requested = threading.Event()


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Run the block whole; an `interrupt()` from a signal handler meanwhile is raised at its end.

    The deferred interrupt wins over an exception the block itself raised (a cancel is a cancel);
    that exception stays attached as its context.
    """
    outer = _state.depth
    _state.depth = outer + 1
    try:
        yield
    finally:
        _state.depth = outer
        if outer == 0 and _state.pending is not None:
            pending, _state.pending = _state.pending, None
            raise pending


def interrupt(exc: BaseException) -> None:
    """Given the exception a signal handler wants to raise, raise it now, or at the end of the
    enclosing `uninterruptible()` block. The first deferred interrupt is kept; later ones are
    dropped, as the block's end can raise only one."""
    if _state.depth == 0:
        raise exc
    if _state.pending is None:
        _state.pending = exc
