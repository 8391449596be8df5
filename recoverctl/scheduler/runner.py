"""Run one claimed job of any kind: keep its lease, execute it, record its outcome, deliver events.

Scheduled occurrences (claimed by the scheduler loop or `run-job`) and webhook jobs (claimed by
the serve worker) are rows of one `jobs` table; once a row is held, running it is the same steps
for every kind, written here once. What differs per kind is only the executor: a callable that
does the work and returns a typed `Outcome` (what to record, whether to retry, which events to
emit once the outcome is recorded).

Also the child-process runner both a scheduled occurrence and a backup job use: a crashing or
hanging command cannot take the runner down.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from recoverctl.catalog import Catalog, jobs, leases
from recoverctl.config import Config
from recoverctl.errors import RecoverctlError
from recoverctl.notify.delivery import deliver_pending

log = logging.getLogger(__name__)

OUTPUT_TAIL = 4000


@dataclass(frozen=True)
class Held:
    """A row of `jobs` this process holds under a lease: its id, the holder, and its name in logs."""

    id: int
    owner: str
    what: str


@dataclass(frozen=True)
class JobEvent:
    """An event a job emits only when its outcome is recorded (not when it lost its lease)."""

    kind: str
    severity: str
    subject: str | None
    summary: str
    details: dict[str, Any]
    dedup_key: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How an executor ran a job: the state and result to record, or a delay to try again after.

    `queued` with `retry_in` queues the job again (its next attempt resumes); every other state
    finishes it.
    """

    state: Literal["succeeded", "failed", "abandoned", "queued"]
    result: dict[str, Any] | None = None
    error: str | None = None
    retry_in: float | None = None
    events: tuple[JobEvent, ...] = field(default=())


# Given the event set when the lease is lost (stop: someone else may already run it), do the work.
Executor = Callable[[threading.Event], Outcome]


def run_job(cfg: Config, catalog: Catalog, held: Held, execute: Executor, *, lease: float) -> Outcome:
    """Given a held job and its kind's executor, run it under a renewed lease and return its Outcome.

    The outcome is recorded (finished, or queued again when it asks to be retried) unless the
    lease was lost meanwhile, in which case whoever took it has recorded it already; the outcome's
    events are emitted only when it was recorded. Events are delivered before returning; delivery
    problems are logged, never raised. An executor's exception propagates after the lease stops
    being renewed (the row is then reclaimed when its lease expires).
    """
    keeper = leases.LeaseKeeper(catalog, held.id, held.owner, lease, held.what)
    keeper.start()
    try:
        outcome = execute(keeper.lost)
    finally:
        keeper.stop()
    if outcome.retry_in is not None:
        recorded = jobs.retry_later(
            catalog,
            held.id,
            held.owner,
            outcome.retry_in,
            result=outcome.result or {},
            error=outcome.error or "",
        )
        log.warning("%s failed, retrying in %.0f s: %s", held.what, outcome.retry_in, outcome.error)
    else:
        recorded = jobs.finish(
            catalog, held.id, held.owner, outcome.state, result=outcome.result, error=outcome.error
        )
    if recorded:
        for e in outcome.events:
            catalog.emit_event(e.kind, e.severity, e.subject, e.summary, e.details, e.dedup_key)
    else:
        log.warning("%s was marked abandoned while it ran", held.what)
    # Events the job recorded go out now, not whenever some command next closes the catalog.
    try:
        deliver_pending(cfg, catalog)
    except RecoverctlError as e:
        log.error("%s: could not deliver notifications: %s", held.what, e)
    return outcome


def _die_with_parent() -> None:
    # If the runner is killed, its job must not live on unsupervised while its lease expires and
    # another runner starts the next occurrence.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_subprocess(
    argv: list[str], timeout: float, env: dict[str, str], cancel: threading.Event | None = None
) -> tuple[int | None, bool, str]:
    """Run argv; return (exit code, stopped early, output tail).

    The job is terminated (then killed) when `timeout` passes or `cancel` is set; the exit code is
    then None.
    """
    cancel = cancel or threading.Event()
    # Output goes to a file, not a pipe: the wait loop below does not read, and a full pipe would
    # block the job forever.
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        stopped = False
        while True:
            try:
                proc.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set() or time.monotonic() >= deadline:
                    stopped = True
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    break
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        text = out.read().decode(errors="replace")
    return (None if stopped else proc.returncode), stopped, text


def recoverctl_argv(cfg: Config, args: list[str]) -> list[str]:
    """Return the command line that runs `recoverctl ARGS` with this interpreter and config."""
    argv = [sys.executable, "-m", "recoverctl"]
    if cfg.path is not None:
        argv += ["--config", str(cfg.path.absolute())]
    return argv + args
