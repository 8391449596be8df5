"""One operation on the repository: open it, take its lock, record the run, close it.

Every use case that touches the repository has the same frame (restic's `openWithExclusiveLock`
plus `defer unlock`, pgBackRest's per-command lock type). Writing that frame once means a run is
never left `running` because one action forgot its failure branch, and a repository is never left
open because one path returned early.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from recoverctl.config import Config
from recoverctl.recorder import RunRecorder, record_failed_run
from recoverctl.repo import Repository
from recoverctl.repo.configured import open_repository

LockKind = Literal["shared", "exclusive", "reader"]


@dataclass
class Operation:
    """An open repository and the catalog run recording what is done with it."""

    repo: Repository
    run_id: int | None
    recorder: RunRecorder | None
    lock: Any = None
    outcome: str | None = field(default=None)

    def finish(self, status: str = "succeeded", **fields: Any) -> None:
        """Record the run's outcome (`succeeded`, `partial`, `failed`) with its fields; once only."""
        if self.outcome is not None:
            raise RuntimeError(f"run {self.run_id} was already recorded as {self.outcome}")
        self.outcome = status
        if self.recorder is not None and self.run_id is not None:
            self.recorder.finish_run(self.run_id, status, **fields)


@contextmanager
def operation(
    cfg: Config,
    password: str,
    kind: str,
    *,
    recorder: RunRecorder | None = None,
    source: str | None = None,
    lock: LockKind | None = None,
    lock_name: str | None = None,
) -> Iterator[Operation]:
    """Open the configured repository for one `kind` of operation and yield it as an Operation.

    With a `recorder`, a run is started before the body and finished after it: `failed` (with
    the error's text, `cancelled by SIGINT` for a cancel) when the body raises, `succeeded` when
    it returns without calling `op.finish(...)` itself. `lock` holds the repository lock for the
    whole body: `shared`, `exclusive`, or `reader` (shared, but goes on lock-free where the
    storage refuses writes); None leaves locking to the body. The repository is closed on every
    path. Raise what opening the repository raises (NotFoundError, WrongKeyError, StorageError)
    before any run is recorded.
    """
    repo = open_repository(cfg, password)
    with repo:
        run_id = recorder.start_run(kind, source, repo.url) if recorder is not None else None
        op = Operation(repo, run_id, recorder)
        try:
            with ExitStack() as stack:
                if lock is not None:
                    op.lock = stack.enter_context(
                        repo.lock(
                            exclusive=lock == "exclusive",
                            operation=lock_name or kind,
                            reader=lock == "reader",
                        )
                    )
                yield op
        except BaseException as e:
            if run_id is not None and recorder is not None and op.outcome is None:
                op.outcome = "failed"
                record_failed_run(recorder, run_id, e)
            raise
        if op.outcome is None:
            op.finish()
