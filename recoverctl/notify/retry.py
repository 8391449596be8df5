"""Retries for any notifier, in one place: backoff on transient failures, Retry-After honoured."""

from __future__ import annotations

import logging
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from recoverctl.notify.base import DeliveryError, Message, Receipt

log = logging.getLogger(__name__)


class RetryingNotifier:
    """Wraps a notifier: retry DeliveryError(retryable) up to `policy.attempts` times."""

    def __init__(self, inner: Any, policy: Any):
        self.inner = inner
        self.name: str = inner.name
        self.type: str = inner.type
        self.policy = policy
        self._backoff = wait_exponential(multiplier=policy.initial, max=policy.maximum)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DeliveryError) and exc.retry_after is not None:
            return float(exc.retry_after)
        return float(self._backoff(state))

    def _retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, DeliveryError) or not exc.retryable:
            return False
        # Waiting longer than the policy allows would stall every other channel behind this one.
        return exc.retry_after is None or exc.retry_after <= self.policy.max_retry_after

    def send(self, message: Message) -> Receipt:
        """Deliver with retries; return the Receipt with attempts; raise the last DeliveryError."""
        attempts = 0

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("notify %s: attempt %d failed (%s), retrying", self.name, state.attempt_number, exc)

        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    receipt = self.inner.send(message)
        except DeliveryError as e:
            e.attempts = attempts
            raise
        receipt.attempts = attempts
        return receipt

    def close(self) -> None:
        self.inner.close()
