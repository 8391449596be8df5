"""Recording a run in the catalog without waiting for the catalog.

Importing SQLAlchemy and opening the catalog cost ~0.4 s CPU before a command can write its first
row: a third of an unchanged re-backup, and SQLAlchemy with the catalog holds ~30 MiB for the
whole backup. A backup only *writes* to the catalog (the run's start and end, the snapshot's row,
an audit entry, an event), so `ForkedRecorder` forks a child that imports and opens the catalog on
the other core while the backup works, and applies the writes the parent sends it, in order. The
parent never waits for a write until `close()`, which returns once every write is committed, or
raises CatalogError saying what failed. The repository stays the source of truth: a snapshot whose
row could not be written comes back with `recoverctl catalog sync`.

If the parent dies without closing (kill -9, SIGTERM), the child sees its end of the pipe close and
marks the runs that were started and never finished as failed, instead of leaving them "running".
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from recoverctl.errors import CatalogError, cleanup_after, failure_text

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from recoverctl.catalog import Catalog
    from recoverctl.repo import Snapshot


class RunRecorder(Protocol):
    """The catalog writes of a backup: `Catalog` makes them directly, `ForkedRecorder` from a child."""

    def start_run(self, kind: str, source: str | None = None, repository: str | None = None) -> int: ...

    def finish_run(self, run_id: int, status: str, **fields: Any) -> None: ...

    def record_snapshot(self, repository: str, snap: Snapshot) -> None: ...

    def audit(
        self, action: str, target: str | None, outcome: str, details: dict[str, Any] | None = None
    ) -> None: ...

    def emit_event(
        self,
        kind: str,
        severity: str,
        subject: str | None,
        summary: str,
        details: dict[str, Any] | None = None,
    ) -> Any: ...


def record_failed_run(recorder: RunRecorder, run_id: int, exc: BaseException) -> None:
    """Mark run `run_id` failed with `exc`'s text; a catalog failure here is attached to `exc` as a
    note (and logged), never raised in its place: the run's own error is the one to report."""
    with cleanup_after(exc, "recording the failed run in the catalog"):
        recorder.finish_run(run_id, "failed", error=failure_text(exc))


# One write: (operation, run reference or None, positional args, keyword args); None ends the stream.
Message = tuple[str, int | None, tuple[Any, ...], dict[str, Any]] | None


class ForkedRecorder:
    """A RunRecorder whose catalog lives in a forked child. Use as a context manager.

    Given `open_catalog` (called in the child), start the child at once. Run ids returned by
    `start_run` are references local to this recorder; the child maps them to the catalog's ids.
    """

    def __init__(self, open_catalog: Callable[[], Catalog]) -> None:
        ctx = multiprocessing.get_context("fork")
        child_inbox, self._outbox = ctx.Pipe(duplex=False)
        self._results, child_results = ctx.Pipe(duplex=False)
        # Output buffered here would be written a second time by the child when it exits.
        sys.stdout.flush()
        sys.stderr.flush()
        self._process = ctx.Process(
            target=_serve,
            args=(open_catalog, child_inbox, self._outbox, child_results, os.getpid()),
            name="recoverctl-catalog",
            daemon=True,
        )
        self._process.start()
        child_inbox.close()
        child_results.close()
        self._last_ref = 0
        self._closed = False

    def start_run(self, kind: str, source: str | None = None, repository: str | None = None) -> int:
        self._last_ref += 1
        self._send(("start_run", self._last_ref, (kind, source, repository), {}))
        return self._last_ref

    def finish_run(self, run_id: int, status: str, **fields: Any) -> None:
        self._send(("finish_run", run_id, (status,), fields))

    def record_snapshot(self, repository: str, snap: Snapshot) -> None:
        self._send(("record_snapshot", None, (repository, snap), {}))

    def audit(
        self, action: str, target: str | None, outcome: str, details: dict[str, Any] | None = None
    ) -> None:
        self._send(("audit", None, (action, target, outcome, details), {}))

    def emit_event(
        self,
        kind: str,
        severity: str,
        subject: str | None,
        summary: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record the event from the child; its id is not known here (nothing needs it)."""
        self._send(("emit_event", None, (kind, severity, subject, summary, details), {}))

    def _send(self, message: Message) -> None:
        if self._closed:
            raise RuntimeError("catalog recorder used after close()")
        with contextlib.suppress(OSError):  # the child is gone; close() reports why
            self._outbox.send(message)

    def close(self) -> None:
        """Wait until the child has committed every write; raise CatalogError if any failed."""
        if self._closed:
            return
        self._send(None)
        self._closed = True
        self._outbox.close()
        try:
            errors: list[str] = self._results.recv()
        except EOFError:
            errors = []
            self._process.join()
            errors.append(f"the catalog process ended with exit code {self._process.exitcode}")
        finally:
            self._results.close()
        self._process.join()
        if errors:
            raise CatalogError(
                f"could not record the run in the catalog: {'; '.join(errors)}",
                hint="the repository holds what was backed up; run 'recoverctl catalog sync' once "
                "the catalog is reachable",
            )

    def __enter__(self) -> ForkedRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The command's own error is the one to report; a failed catalog write is a note on it.
        with cleanup_after(exc, "recording the run in the catalog"):
            self.close()


def _serve(
    open_catalog: Callable[[], Catalog],
    inbox: Connection,
    parents_outbox: Connection,
    results: Connection,
    parent_pid: int,
) -> None:
    # Ctrl-C is the parent's: it records how the run ended and then closes the stream.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing here is needed before the command ends; a busy backup keeps both cores.
    os.nice(10)
    parents_outbox.close()  # else this process holds the pipe open and never sees the parent die
    errors: list[str] = []
    runs: dict[int, int] = {}
    catalog: Catalog | None = None
    try:
        catalog = open_catalog()
    except Exception as e:
        errors.append(str(e))
    ended = False
    while True:
        try:
            message: Message = inbox.recv()
        except EOFError:
            break
        if message is None:
            ended = True
            break
        if catalog is None:
            continue
        op, ref, args, kwargs = message
        try:
            if op == "start_run":
                assert ref is not None
                runs[ref] = catalog.start_run(*args)
            elif op == "finish_run":
                assert ref is not None
                if ref in runs:
                    catalog.finish_run(runs.pop(ref), *args, **kwargs)
            elif op in ("record_snapshot", "audit", "emit_event"):
                getattr(catalog, op)(*args)
            else:
                errors.append(f"unknown catalog write '{op}'")
        except Exception as e:
            errors.append(str(e))
    if catalog is not None and not ended:
        why = f"interrupted: recoverctl process {parent_pid} ended before the run did"
        for run_id in runs.values():
            with contextlib.suppress(Exception):  # nobody is left to tell
                catalog.finish_run(run_id, "failed", error=why)
    with contextlib.suppress(OSError):
        results.send(errors)
    if catalog is not None:
        catalog.close()
