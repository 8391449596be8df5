"""Rides out an engine restart or a host reboot, for any deploy target, in one place.

`RetryingTarget` composes around a Target (like storage/retry.py around a Storage): operations
that read or change the running service are retried with exponential back-off while the target
reports itself unreachable (TargetUnreachable, or outcomes marked `transient`), for at most the
service's `retry.window` per operation. Only the hosts that failed are tried again, where the
operation is per host (stop, start, retire); a read that combines every host's answer (running
version, available versions) is asked again of all. `preflight`
and `prepare` are not retried: they run before anything changed, and a fast, clear "cannot go"
serves the operator better there than a minute of waiting.

`within_window` is the same policy for any other call (rollback bookkeeping in the catalog).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_result
from tenacity import wait_random_exponential as backoff

from recoverctl.config import ServiceRetry
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome, Target, TargetUnreachable
from recoverctl.errors import CancelledError
from recoverctl.interrupts import stop_requested

log = logging.getLogger(__name__)
T = TypeVar("T")


def within_window(
    options: ServiceRetry,
    what: str,
    fn: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    retry_result: Callable[[T], bool] | None = None,
) -> T:
    """Call `fn` until it neither raises a `transient` error nor returns a result `retry_result`
    accepts, for at most `options.window` seconds after the first failure (a long but healthy
    first attempt, such as a `docker stop` waiting for its timeout, does not eat the window);
    return its last result or raise its last error.

    Raise CancelledError when the user stops the process while it waits.
    """
    first_failure: list[float] = []

    def stop(state: RetryCallState) -> bool:
        now = state.outcome_timestamp or time.monotonic()
        if not first_failure:
            first_failure.append(now)
        return now - first_failure[0] >= options.window

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        why = outcome.exception() if outcome is not None and outcome.failed else "some hosts unreachable"
        log.warning(
            "%s failed (attempt %d, %.1f s): %s; retrying",
            what,
            state.attempt_number,
            state.seconds_since_start or 0.0,
            why,
        )

    def sleep(seconds: float) -> None:
        if stop_requested.wait(seconds):
            raise CancelledError(f"{what}: cancelled while waiting to retry")

    def last(state: RetryCallState) -> Any:
        assert state.outcome is not None
        return state.outcome.result()  # the last error is raised, the last result returned

    retrying = Retrying(
        retry=retry_if_exception(transient) | retry_if_result(retry_result or (lambda _: False)),
        stop=stop,
        wait=backoff(multiplier=options.initial, max=options.maximum),
        before_sleep=before_sleep,
        sleep=sleep,
        retry_error_callback=last,
    )
    return retrying(fn)


def _unreachable(e: BaseException) -> bool:
    return isinstance(e, TargetUnreachable)


class RetryingTarget:
    """A Target that retries its inner target's transient faults within the service's window."""

    def __init__(self, inner: Target, options: ServiceRetry):
        self.inner = inner
        self.options = options
        self.kind = inner.kind

    def _call(self, what: str, fn: Callable[[], T], retry_result: Callable[[T], bool] | None = None) -> T:
        try:
            return within_window(self.options, what, fn, transient=_unreachable, retry_result=retry_result)
        except TargetUnreachable as e:
            raise TargetUnreachable(
                f"{e.message} {self._gave_up}", where=e.where, hint=e.hint, hosts=e.hosts
            ) from e

    @property
    def _gave_up(self) -> str:
        return f"(still after {self.options.window:.0f} s of retries)"

    def _fleet(self, what: str, op: Callable[[Target], list[HostOutcome]]) -> list[HostOutcome]:
        """Run `op` on every host, then again on the hosts whose outcome was transient."""
        final: dict[str, HostOutcome] = {}
        order: list[str] = []

        def attempt() -> list[HostOutcome]:
            pending = [h for h in order if final[h].transient]
            outcomes = op(self.inner.only(pending) if order else self.inner)
            for o in outcomes:
                if o.host not in final:
                    order.append(o.host)
                final[o.host] = o
            return [o for o in outcomes if o.transient]

        still = self._call(what, attempt, retry_result=bool)
        for o in still:
            o.error = f"{o.error} {self._gave_up}"
        return [final[h] for h in order]

    # --- Target ---------------------------------------------------------------------------------

    def preflight(self, version: str | None) -> None:
        self.inner.preflight(version)

    def prepare(self, version: str, image: str | None = None) -> Artifact:
        return self.inner.prepare(version, image)

    def available_versions(self) -> list[str]:
        return self._call("listing versions", self.inner.available_versions)

    def stop(self) -> list[HostOutcome]:
        return self._fleet("stopping the current version", lambda t: t.stop())

    def start(self, artifact: Artifact) -> list[HostOutcome]:
        return self._fleet(f"starting {artifact.version}", lambda t: t.start(artifact))

    def endpoints(self) -> list[Endpoint]:
        return self._call("listing health endpoints", self.inner.endpoints)

    def running_version(self) -> str | None:
        return self._call("reading the running version", self.inner.running_version)

    def retire(self, versions: list[str]) -> list[str]:
        pending: list[str] = []  # after a host dropped: only the hosts that did not answer

        def attempt() -> list[str]:
            try:
                return (self.inner.only(pending) if pending else self.inner).retire(versions)
            except TargetUnreachable as e:
                pending[:] = e.hosts
                raise

        return self._call("retiring old releases", attempt)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def only(self, hosts: list[str]) -> Target:
        return RetryingTarget(self.inner.only(hosts), self.options)

    def close(self) -> None:
        self.inner.close()
