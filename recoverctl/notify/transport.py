"""HTTP delivery shared by the webhook-style channels: status codes mapped to DeliveryError."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from recoverctl.notify.base import DeliveryError


def retry_after_seconds(value: str | None) -> float | None:
    """Given a Retry-After header (seconds or an HTTP date), return seconds to wait, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def post(client: httpx.Client, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """POST and return the response when 2xx; raise DeliveryError (retryable on 429/5xx/network).

    `what` names the endpoint in errors instead of the URL, which may carry a secret (Slack).
    """
    return request(client, "POST", url, what, **kwargs)


def request(client: httpx.Client, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """Send `method` to `url` and return the response when 2xx; raise DeliveryError as `post`."""
    try:
        r = client.request(method, url, **kwargs)
    except httpx.TimeoutException as e:
        raise DeliveryError(f"{what}: timed out ({type(e).__name__})", retryable=True) from None
    except httpx.TransportError as e:
        raise DeliveryError(f"{what}: {type(e).__name__}: {e}", retryable=True) from None
    if r.is_success:
        return r
    body = r.text[:300].strip()
    retryable = r.status_code == 429 or r.status_code >= 500
    raise DeliveryError(
        f"{what}: HTTP {r.status_code}{': ' + body if body else ''}",
        retryable=retryable,
        http_status=r.status_code,
        retry_after=retry_after_seconds(r.headers.get("retry-after")) if retryable else None,
    )
