"""Webhook authentication: bearer token or HMAC-SHA256 signature over the raw body.

The signature follows Grafana's webhook scheme: lowercase hex HMAC-SHA256 of the body, or of
`<timestamp>:<body>` when a timestamp header is sent (Unix seconds; older than `max_skew` is
refused to stop replays). Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from recoverctl.config import ServeAuth, read_secret_file
from recoverctl.errors import ConfigError


@dataclass(frozen=True)
class Secrets:
    bearer: str | None
    hmac_key: bytes | None
    settings: ServeAuth

    @property
    def configured(self) -> bool:
        return bool(self.bearer or self.hmac_key)


def _load(file: str | None, env: str | None, what: str, environ: Mapping[str, str]) -> str | None:
    if file:
        value = read_secret_file(file, what)
    elif env:
        value = environ.get(env, "")
        if not value:
            raise ConfigError(f"{what}: environment variable '{env}' is empty or not set")
    else:
        return None
    if len(value) < 16:
        raise ConfigError(f"{what} is shorter than 16 characters", hint="generate one: openssl rand -hex 32")
    return value


def load_secrets(auth: ServeAuth, environ: Mapping[str, str] | None = None) -> Secrets:
    """Read the configured bearer token and HMAC secret; raise ConfigError when unreadable or weak."""
    environ = os.environ if environ is None else environ
    bearer = _load(auth.bearer_token_file, auth.bearer_token_env, "serve.auth bearer token", environ)
    key = _load(auth.hmac_secret_file, auth.hmac_secret_env, "serve.auth HMAC secret", environ)
    return Secrets(bearer=bearer, hmac_key=key.encode() if key else None, settings=auth)


def sign(key: bytes, body: bytes, timestamp: str | None = None) -> str:
    """Return the hex signature a sender puts in the signature header."""
    message = f"{timestamp}:".encode() + body if timestamp is not None else body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def authenticate(
    secrets: Secrets, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> str | None:
    """Return None when the request is authentic, else the reason it is not (for a 401).

    `headers` must be case-insensitive (Starlette's Headers are).
    """
    if not secrets.configured:
        return None
    cfg = secrets.settings
    authorization = headers.get("authorization")
    signature = headers.get(cfg.signature_header)
    if secrets.bearer and authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), secrets.bearer.encode()
        ):
            return None
        if not (secrets.hmac_key and signature):
            return "bearer token does not match"
    if secrets.hmac_key and signature:
        timestamp = headers.get(cfg.timestamp_header)
        if timestamp is None and cfg.require_timestamp:
            return f"signature without the {cfg.timestamp_header} header"
        if timestamp is not None:
            try:
                ts = float(timestamp)
            except ValueError:
                return f"{cfg.timestamp_header} is not Unix seconds"
            if abs((time.time() if now is None else now) - ts) > cfg.max_skew:
                return f"timestamp outside ±{cfg.max_skew:.0f}s (stale or replayed request)"
        expected = sign(secrets.hmac_key, body, timestamp)
        if hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
            return None
        return "signature does not match the body"
    wanted = " or ".join(
        w
        for w, on in (
            ("an Authorization: Bearer token", secrets.bearer),
            (f"a {cfg.signature_header} signature", secrets.hmac_key),
        )
        if on
    )
    return f"missing credentials: send {wanted}"
