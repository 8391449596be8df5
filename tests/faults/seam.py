"""Install the test-only fault hooks into recoverctl (see tests/faults/__init__.py)."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any

from tests.faults.storage import ENV_FAULTS, FaultyStorage, parse_faults

ENV_CRASH_AFTER = "RECOVERCTL_FAULT_CRASH_AFTER_STEP"


def install_storage_faults() -> None:
    """Make `recoverctl.storage.open_backend` wrap each backend in the faults RECOVERCTL_FAULTS
    names at the time of the call (none when it is unset)."""
    import recoverctl.storage as storage

    opened: Callable[..., Any] = storage.open_backend
    if getattr(opened, "fault_seam", False):
        return

    @functools.wraps(opened)
    def open_backend(url: str, options: Any = None) -> Any:
        backend = opened(url, options)
        spec = os.environ.get(ENV_FAULTS)
        return FaultyStorage(backend, parse_faults(spec)) if spec else backend

    open_backend.fault_seam = True  # type: ignore[attr-defined]
    storage.open_backend = open_backend


def _crash_if(step: str) -> None:
    if os.environ.get(ENV_CRASH_AFTER) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def install_rollback_crash() -> None:
    """Make a rollback SIGKILL its process right after the catalog recorded the step named by
    RECOVERCTL_FAULT_CRASH_AFTER_STEP (read at the time of each step)."""
    import recoverctl.catalog.rollbacks as rows

    created: Callable[..., Any] = rows.create_rollback
    ended: Callable[..., Any] = rows.end_step
    if getattr(ended, "fault_seam", False):
        return

    @functools.wraps(created)
    def create_rollback(*args: Any, **kwargs: Any) -> Any:
        rollback_id = created(*args, **kwargs)
        _crash_if("lock")
        return rollback_id

    @functools.wraps(ended)
    def end_step(catalog: Any, rollback_id: int, name: str, state: str, output: Any) -> None:
        ended(catalog, rollback_id, name, state, output)
        if state != "failed":
            _crash_if(name)

    end_step.fault_seam = True  # type: ignore[attr-defined]
    rows.create_rollback = create_rollback
    rows.end_step = end_step


def install_if_asked() -> None:
    """Install the hooks whose variable is set in this process's environment (sitecustomize)."""
    if os.environ.get(ENV_FAULTS):
        install_storage_faults()
    if os.environ.get(ENV_CRASH_AFTER):
        install_rollback_crash()
