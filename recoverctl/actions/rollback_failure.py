"""What a failed rollback step means: where it failed, the state it left the service in, whether
the infrastructure (not the release) was at fault, and the record and error that say so."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import rollbacks as rollback_rows
from recoverctl.config import ServiceRetry
from recoverctl.deploy import TargetUnreachable
from recoverctl.deploy.retry import within_window
from recoverctl.errors import CatalogError, RecoverctlError, VerificationError

T = TypeVar("T")


def catalog_fault(e: BaseException) -> bool:
    """Return True when the catalog did not answer (PostgreSQL down or restarting, SQLite locked).

    Catalog.begin turns an OperationalError into CatalogError and keeps it as the context.
    """
    return isinstance(e, CatalogError) and isinstance(e.__context__, sa.exc.OperationalError)


def book(options: ServiceRetry, catalog: Catalog, what: str, fn: Callable[[], T]) -> T:
    """Run one piece of rollback bookkeeping, riding out an unreachable catalog within the window."""
    return within_window(options, f"{what} in catalog '{catalog.display_url}'", fn, transient=catalog_fault)


def transient_fault(err: BaseException) -> bool:
    """Return True when `err` came from an engine, hosts or a catalog that did not answer (past the
    retry window): the infrastructure, not the release, so resuming later may finish the rollback."""
    if catalog_fault(err) or isinstance(err, TargetUnreachable):
        return True
    hosts = getattr(err, "details", {}).get("hosts")
    failed = [h for h in hosts if not h.get("ok")] if isinstance(hosts, list) else []
    return bool(failed) and all(h.get("unreachable") for h in failed)


def service_state(step: str | None, plan: dict[str, Any], finished: bool) -> str:
    """Say what runs after a rollback stopped in `step`, or right after it `finished` (when only
    recording the step failed), from what the step does."""
    frm, to = plan.get("from_version"), plan.get("to_version")
    healthy = f"{to} runs and passed its health check"
    during = {
        "stop_current": f"unknown: {frm} may still run or be stopped (the stop did not complete); "
        f"{to} is not started",
        "schema": f"{frm} is stopped, {to} is not started; the database schema may be partly changed",
        "start_target": f"{frm} is stopped; {to} may be started on some hosts or none",
        "verify": f"{to} is started but not verified healthy",
        "notify": f"{healthy}; the notification was not sent",
        "record": f"{healthy}; the release records are not updated",
    }
    after = {
        "stop_current": f"{frm} is stopped, {to} is not started",
        "schema": f"{frm} is stopped, {to} is not started; the schema step is done",
        "start_target": f"{to} is started but not verified healthy",
        "verify": f"{healthy}; the notification was not sent",
        "notify": f"{healthy}; the release records are not updated",
        "record": f"{to} is live",
    }
    if step is None:
        return "unknown: the rollback stopped between steps"
    if finished:
        return f"{after[step]} (step {step} finished, but the catalog could not record it)"
    return during[step]


def failed_on(err: BaseException, target: dict[str, Any], catalog: Catalog) -> str:
    """Name what the failure happened on: the catalog, the engine, or the hosts that failed."""
    if catalog_fault(err):
        return f"catalog '{catalog.display_url}'"
    if isinstance(err, TargetUnreachable):
        return err.where
    hosts = getattr(err, "details", {}).get("hosts")
    if isinstance(hosts, list) and any(not h.get("ok") for h in hosts):
        return "hosts " + ", ".join(str(h["host"]) for h in hosts if not h.get("ok"))
    if target.get("target") == "database":
        return f"the database of source '{target['source']}'"
    if target.get("target") == "docker":
        return f"docker host {target['engine']}"
    return "hosts " + ", ".join(target.get("hosts", []))


def _announce(
    catalog: Catalog,
    rollback_id: int,
    service: str,
    plan: dict[str, Any],
    who: str,
    step: str | None,
    err: BaseException,
    state: str,
) -> None:
    """Emit the rollback.failed event and the audit row; the failure itself is already recorded."""
    versions = f"from {plan.get('from_version')} to {plan.get('to_version')}"
    summary = f"failed at step {step}: {err} ({state})"
    with contextlib.suppress(CatalogError):
        catalog.emit_event(
            "rollback.failed",
            "critical",
            service,
            f"rollback of {service} {versions} {summary}",
            {"rollback_id": rollback_id, "failed_step": step, "service_state": state},
            dedup_key=f"rollback:{rollback_id}",
        )
        catalog.audit(
            "rollback",
            service,
            "failed",
            {
                "rollback_id": rollback_id,
                "failed_step": step,
                "error": f"{type(err).__name__}: {err}",
                "service_state": state,
            },
            who=who,
        )


def fail(
    catalog: Catalog,
    options: ServiceRetry,
    rollback_id: int,
    service: str,
    plan: dict[str, Any],
    who: str,
    step: str | None,
    finished: bool,
    target: dict[str, Any],
    err: BaseException,
    summarize: Callable[[], dict[str, Any]],
) -> BaseException:
    """Record that the rollback failed at `step` (when the catalog answers) and return the error to
    raise: a RecoverctlError saying which step failed on what, the state the service is in, and
    how to resume (with the rollback's timeline, from `summarize`). Anything else is a bug and is
    returned unchanged, keeping its traceback."""
    state = service_state(step, plan, finished)
    message = f"{type(err).__name__}: {err}"
    # A catalog that stayed away for the whole window is tried once more, not for another window.
    options = options.model_copy(update={"window": 0.0}) if catalog_fault(err) else options
    recorded = True
    try:
        record = functools.partial(
            rollback_rows.record_failure,
            catalog,
            rollback_id,
            step,
            {"error": str(err), **getattr(err, "details", {})},
            message,
            target_failed_verification=isinstance(err, VerificationError),
        )
        book(options, catalog, "recording the failure", record)
    except CatalogError:
        recorded = False  # still "running" under this process: resumable once it has exited
    if recorded:
        _announce(catalog, rollback_id, service, plan, who, step, err, state)
    if not isinstance(err, RecoverctlError):
        return err
    resume = f"recoverctl rollback {service} --resume"
    err.message = (
        f"rollback of '{service}' failed at step '{step}' on {failed_on(err, target, catalog)}: "
        f"{err.message} — service state: {state}; resume with '{resume}'"
    )
    if not recorded:
        err.message += " (the catalog could not record this failure)"
    err.hint = f"{err.hint + '; ' if err.hint else ''}once the cause is fixed: {resume}"
    timeline: dict[str, Any] | None = None
    if recorded:
        with contextlib.suppress(CatalogError):
            timeline = summarize()
    err.details = {
        **err.details,
        "service_state": state,
        "failed_step": step,
        "rollback_id": rollback_id,
        "transient": recorded and transient_fault(err),
        **({"rollback": timeline} if timeline is not None else {}),
    }
    return err
