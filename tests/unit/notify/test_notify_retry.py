from __future__ import annotations

import time

import pytest

from recoverctl.config import ChannelRetry
from recoverctl.notify.base import DeliveryError, Message, Receipt
from recoverctl.notify.retry import RetryingNotifier
from recoverctl.notify.transport import retry_after_seconds


class Scripted:
    name = "scripted"
    type = "test"

    def __init__(self, *outcomes: DeliveryError | None):
        self.outcomes = list(outcomes)
        self.calls: list[float] = []

    def send(self, message: Message) -> Receipt:
        self.calls.append(time.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return Receipt(http_status=200)

    def close(self) -> None:
        pass


MSG = Message(severity="critical", kind="backup.failed", summary="boom", subject="main")
FAST = ChannelRetry(attempts=4, initial=0.01, maximum=0.05, max_retry_after=5)


def test_transient_failures_are_retried_until_success() -> None:
    inner = Scripted(DeliveryError("503", retryable=True, http_status=503), None)
    receipt = RetryingNotifier(inner, FAST).send(MSG)
    assert (receipt.attempts, len(inner.calls)) == (2, 2)


def test_permanent_failure_is_not_retried() -> None:
    inner = Scripted(DeliveryError("400", retryable=False, http_status=400))
    with pytest.raises(DeliveryError) as e:
        RetryingNotifier(inner, FAST).send(MSG)
    assert (e.value.attempts, len(inner.calls)) == (1, 1)


def test_retry_after_is_waited_and_too_long_a_wait_gives_up() -> None:
    inner = Scripted(DeliveryError("429", retryable=True, http_status=429, retry_after=0.3), None)
    RetryingNotifier(inner, FAST).send(MSG)
    assert inner.calls[1] - inner.calls[0] >= 0.3
    inner = Scripted(DeliveryError("429", retryable=True, http_status=429, retry_after=3600))
    with pytest.raises(DeliveryError) as e:
        RetryingNotifier(inner, FAST).send(MSG)
    assert e.value.attempts == 1


def test_attempts_are_bounded() -> None:
    inner = Scripted(*[DeliveryError("503", retryable=True) for _ in range(10)])
    with pytest.raises(DeliveryError) as e:
        RetryingNotifier(inner, FAST).send(MSG)
    assert e.value.attempts == 4 == len(inner.calls)


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None


def test_incident_key_is_stable_and_actions_follow_the_kind() -> None:
    a = Message(severity="critical", kind="backup.failed", summary="x", subject="main", at=1)
    b = Message(severity="critical", kind="backup.failed", summary="y", subject="main", at=2)
    assert a.incident_key == b.incident_key == "recoverctl/backup/main"
    assert a.action == "trigger"
    assert (
        Message(severity="warning", kind="backup.resolved", summary="ok", subject="main").action == "resolve"
    )
    assert Message(severity="warning", kind="rollback.succeeded", summary="r").action == "change"
