"""Webhook authentication: bearer token or HMAC-SHA256 signature over the raw body.

The signature follows Grafana's webhook scheme: lowercase hex HMAC-SHA256 of
`<timestamp>:<body>` (Unix seconds in the timestamp header). A signed request is refused when
its timestamp is missing (unless `require_timestamp: false`), outside ±`max_skew`, or when the
same signature was already accepted within that window (a replay). Every comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from recoverctl.config import ServeAuth, read_secret_file
from recoverctl.errors import ConfigError

log = logging.getLogger(__name__)

# Signatures remembered at most: far above any alert sender's rate (this many signed requests in
# one max_skew window); past it the soonest-expiring are forgotten, with a warning.
MAX_REMEMBERED_SIGNATURES = 200_000


class SeenSignatures:
    """Signatures accepted recently, each kept until its timestamp leaves the ±max_skew window
    (after that the timestamp check refuses it anyway), so memory follows the accepted rate."""

    def __init__(self, capacity: int = MAX_REMEMBERED_SIGNATURES):
        self.capacity = capacity
        self._expires: dict[str, float] = {}
        self._order: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def first_use(self, signature: str, expires_at: float, now: float) -> bool:
        """Remember `signature` until `expires_at`; return False when it is already remembered."""
        with self._lock:
            while self._order and (self._order[0][0] <= now or len(self._order) >= self.capacity):
                at, old = heapq.heappop(self._order)
                if at > now:
                    log.warning(
                        "more than %d signed requests in the replay window: forgetting the oldest",
                        self.capacity,
                    )
                self._expires.pop(old, None)
            if signature in self._expires:
                return False
            self._expires[signature] = expires_at
            heapq.heappush(self._order, (expires_at, signature))
            return True


ROLES = ("viewer", "operator")
# The single `bearer_token_file`/`_env` token of older configs: an operator.
LEGACY_TOKEN_NAME = "bearer"


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to and what it may do."""

    name: str
    role: str  # viewer / operator

    def may(self, role: str) -> bool:
        """Return True when this identity holds `role` or a stronger one."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Secrets:
    bearer: str | None
    hmac_key: bytes | None
    settings: ServeAuth
    seen: SeenSignatures = field(default_factory=SeenSignatures, compare=False, repr=False)
    # Named tokens (value, identity), the legacy bearer token among them as an operator.
    tokens: tuple[tuple[str, Identity], ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.bearer or self.hmac_key or self.tokens)

    def identify(self, token: str) -> Identity | None:
        """Given a presented token, return whose it is, None when it matches none. Every
        configured token is compared (constant time each), so timing tells nothing."""
        found = None
        for value, identity in self.tokens:
            if hmac.compare_digest(token.encode(), value.encode()):
                found = identity
        return found


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
    tokens: list[tuple[str, Identity]] = []
    if bearer:
        tokens.append((bearer, Identity(LEGACY_TOKEN_NAME, "operator")))
    names = set()
    for named in auth.tokens:
        if named.name in names:
            raise ConfigError(f"serve.auth.tokens: the name '{named.name}' is used twice")
        names.add(named.name)
        value = _load(named.token_file, None, f"serve.auth token '{named.name}'", environ)
        assert value is not None
        if any(hmac.compare_digest(value.encode(), v.encode()) for v, _ in tokens):
            raise ConfigError(
                f"serve.auth token '{named.name}' is the same as another token: give each its own"
            )
        tokens.append((value, Identity(named.name, named.role)))
    return Secrets(bearer=bearer, hmac_key=key.encode() if key else None, settings=auth, tokens=tuple(tokens))


def sign(key: bytes, body: bytes, timestamp: str | None = None) -> str:
    """Return the hex signature a sender puts in the signature header."""
    message = f"{timestamp}:".encode() + body if timestamp is not None else body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def bearer_identity(secrets: Secrets, headers: Mapping[str, str]) -> Identity | None:
    """Return whose `Authorization: Bearer` token the request carries, None when none matches."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return secrets.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None


def authenticate(
    secrets: Secrets,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    role: str = "operator",
) -> str | None:
    """Return None when the request is authentic and may act as `role`, else the reason it is
    not (for a 401). A valid HMAC signature counts as an operator.

    An accepted signature is remembered until its timestamp expires: the same request sent again
    is refused as a replay. `headers` must be case-insensitive (Starlette's Headers are).
    """
    if not secrets.configured:
        return None
    cfg = secrets.settings
    authorization = headers.get("authorization")
    signature = headers.get(cfg.signature_header)
    if secrets.tokens and authorization:
        identity = bearer_identity(secrets, headers)
        if identity is not None and identity.may(role):
            return None
        if not (secrets.hmac_key and signature):
            if identity is not None:
                return f"token '{identity.name}' has the {identity.role} role: this needs {role}"
            return "bearer token does not match"
    if secrets.hmac_key and signature:
        return _check_signature(secrets, headers, signature, body, time.time() if now is None else now)
    wanted = " or ".join(
        w
        for w, on in (
            ("an Authorization: Bearer token", secrets.tokens),
            (f"a {cfg.signature_header} signature", secrets.hmac_key),
        )
        if on
    )
    return f"missing credentials: send {wanted}"


def _check_signature(
    secrets: Secrets, headers: Mapping[str, str], signature: str, body: bytes, now: float
) -> str | None:
    cfg = secrets.settings
    assert secrets.hmac_key is not None
    timestamp = headers.get(cfg.timestamp_header)
    if timestamp is None and cfg.require_timestamp:
        return (
            f"signature without the {cfg.timestamp_header} header: sign '<unix seconds>:<body>' "
            "and send the timestamp"
        )
    ts = 0.0
    if timestamp is not None:
        try:
            ts = float(timestamp)
        except ValueError:
            ts = math.nan
        if not math.isfinite(ts):
            return f"{cfg.timestamp_header} is not Unix seconds"
        if abs(now - ts) > cfg.max_skew:
            return f"timestamp outside ±{cfg.max_skew:.0f}s (stale or replayed request)"
    expected = sign(secrets.hmac_key, body, timestamp)
    if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        return "signature does not match the body"
    if timestamp is not None and not secrets.seen.first_use(expected, ts + cfg.max_skew, now):
        return "replayed request: this signature was already accepted (send a fresh timestamp)"
    return None
