"""Console sessions: the login form exchanges a bearer token for a signed, expiring cookie
(HttpOnly, SameSite=Strict), and every POST carries a CSRF token bound to that session.

The signing key is derived from the configured tokens, so sessions survive a restart and die
when the tokens are rotated; a session also dies when its token's name leaves the configuration
or changes role. A cookie holds who (name, role) and until when, never a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets as random
from dataclasses import dataclass

from recoverctl.service.auth import Identity, Secrets

COOKIE = "recoverctl_session"
# Double-submit token of the login form (there is no session to bind it to yet).
LOGIN_COOKIE = "recoverctl_login"


@dataclass(frozen=True)
class Session:
    identity: Identity
    expires_at: float
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies for one set of configured tokens."""

    def __init__(self, secrets: Secrets):
        self.secrets = secrets
        material = b"\0".join(v.encode() for v, _ in secrets.tokens)
        # Without tokens the console is open (like the API): sessions are then only used for
        # CSRF, and a per-process key is enough.
        self._key = hmac.new(
            material or os.urandom(32), b"recoverctl console session v1", hashlib.sha256
        ).digest()

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{data}".encode(), hashlib.sha256).digest())

    def issue(self, identity: Identity, now: float) -> str:
        """Return the cookie value of a new session of `identity`."""
        ttl = self.secrets.settings.session_ttl
        payload = _b64(json.dumps({"n": identity.name, "r": identity.role, "e": now + ttl}).encode())
        return f"{payload}.{self._mac('session', payload)}"

    def read(self, value: str | None, now: float) -> Session | None:
        """Given a cookie value, return its session; None when it is missing, forged, expired or
        names a token that is no longer configured with that role."""
        if not value or "." not in value:
            return None
        payload, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            identity = Identity(str(data["n"]), str(data["r"]))
            expires = float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= now or identity not in {i for _, i in self.secrets.tokens}:
            return None
        return Session(identity, expires, self._mac("csrf", value))

    def check_csrf(self, session: Session, presented: str | None) -> bool:
        """Return True when `presented` is the CSRF token of `session`."""
        return bool(presented) and hmac.compare_digest(str(presented).encode(), session.csrf.encode())


def login_nonce() -> str:
    """Return a fresh value for the login form's double-submit cookie."""
    return random.token_urlsafe(24)
