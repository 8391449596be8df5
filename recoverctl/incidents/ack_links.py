"""Acknowledgement links: `<public_url>/incidents/<id>/ack?token=...`, the token an HMAC-SHA256
over the incident id and an expiry, with a key from the config's secrets. Opening a link shows a
confirmation page; only its POST acknowledges (mail scanners and chat unfurlers follow links)."""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from recoverctl.config import Config, read_secret_file

_PURPOSE = b"recoverctl incident acknowledgement v1"


def _secret(cfg: Config) -> str | None:
    inc, auth = cfg.incidents, cfg.serve.auth
    if inc.ack_secret is not None:
        return inc.ack_secret.get_secret_value()
    for file, env, what in (
        (inc.ack_secret_file, inc.ack_secret_env, "incidents.ack_secret"),
        (auth.bearer_token_file, auth.bearer_token_env, "serve.auth bearer token"),
        (auth.hmac_secret_file, auth.hmac_secret_env, "serve.auth HMAC secret"),
    ):
        if file:
            return read_secret_file(file, what)
        if env and os.environ.get(env):
            return os.environ[env]
    return None


def ack_key(cfg: Config) -> bytes | None:
    """Return the key that signs acknowledgement links, or None when the config holds no secret
    (then notifications carry no link)."""
    secret = _secret(cfg)
    if not secret:
        return None
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _signature(key: bytes, incident_id: int, expires: int) -> str:
    return hmac.new(key, f"{incident_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def make_token(key: bytes, incident_id: int, ttl: float, now: float | None = None) -> str:
    """Return a token acknowledging incident `incident_id` until `ttl` seconds from `now`."""
    expires = int((now or time.time()) + ttl)
    return f"{expires}.{_signature(key, incident_id, expires)}"


def token_problem(key: bytes, incident_id: int, token: str, now: float | None = None) -> str | None:
    """Return None when `token` acknowledges incident `incident_id` now, else why not."""
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or not signature:
        return "malformed link"
    if not hmac.compare_digest(signature, _signature(key, incident_id, int(expires_text))):
        return "this link was not issued for this incident"
    if int(expires_text) < (now or time.time()):
        return "this link has expired; acknowledge with: recoverctl incidents ack " + str(incident_id)
    return None


def public_url(cfg: Config) -> str:
    """Return the base URL people reach `recoverctl serve` at."""
    return cfg.incidents.public_url or f"http://{cfg.serve.host}:{cfg.serve.port}"


def ack_link(cfg: Config, incident_id: int, now: float | None = None) -> str | None:
    """Return the acknowledgement link of incident `incident_id`, or None without a key."""
    key = ack_key(cfg)
    if key is None:
        return None
    token = make_token(key, incident_id, cfg.incidents.ack_link_ttl, now)
    return f"{public_url(cfg)}/incidents/{incident_id}/ack?token={token}"
