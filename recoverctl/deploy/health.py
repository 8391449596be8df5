"""HTTP health verification: N consecutive good answers within a deadline (httpx + tenacity)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from recoverctl.config import HealthPolicy


@dataclass
class HealthResult:
    url: str
    ok: bool
    attempts: int = 0
    consecutive: int = 0
    seconds: float = 0.0
    last: str = ""
    history: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "attempts": self.attempts,
            "consecutive": self.consecutive,
            "seconds": round(self.seconds, 3),
            "last": self.last,
        }


def _probe(client: httpx.Client, url: str, policy: HealthPolicy) -> tuple[bool, str]:
    try:
        r = client.get(url, timeout=policy.request_timeout)
    except httpx.HTTPError as e:
        return False, f"{type(e).__name__}: {e}"
    if r.status_code != policy.expect_status:
        return False, f"HTTP {r.status_code}"
    if policy.expect_json:
        try:
            body = r.json()
        except ValueError:
            return False, f"HTTP {r.status_code}, body is not JSON"
        for key, want in policy.expect_json.items():
            if not isinstance(body, dict) or body.get(key) != want:
                got = body.get(key) if isinstance(body, dict) else None
                return False, f"HTTP {r.status_code}, {key}={got!r} (want {want!r})"
    return True, f"HTTP {r.status_code}"


def check_health(url: str, policy: HealthPolicy) -> HealthResult:
    """Given a URL and policy, return a HealthResult: ok once `successes` answers in a row were good.

    Any failed probe resets the count; gives up (ok=False) when `timeout` seconds have passed.
    """
    result = HealthResult(url=url, ok=False)
    start = time.monotonic()

    with httpx.Client(follow_redirects=False) as client:

        def attempt() -> int:
            good, detail = _probe(client, url, policy)
            result.attempts += 1
            result.last = detail
            result.consecutive = result.consecutive + 1 if good else 0
            if len(result.history) < 50:
                result.history.append(detail)
            return result.consecutive

        retrying = Retrying(
            stop=stop_after_delay(policy.timeout),
            wait=wait_fixed(policy.interval),
            retry=retry_if_result(lambda n: n < policy.successes),
        )
        try:
            retrying(attempt)
            result.ok = True
        except RetryError:
            result.ok = False
    result.seconds = time.monotonic() - start
    return result
