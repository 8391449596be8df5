"""Bearer and HMAC authentication of webhook bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.datastructures import Headers

from recoverctl.config import ServeAuth
from recoverctl.errors import ConfigError
from recoverctl.service.auth import SeenSignatures, authenticate, load_secrets, sign

TOKEN = "t" * 32
KEY = "k" * 32
BODY = b'{"alerts": []}'


def _secrets(tmp_path: Path, **kw: object) -> object:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "key").write_text(KEY)
    return load_secrets(
        ServeAuth(bearer_token_file=str(tmp_path / "token"), hmac_secret_file=str(tmp_path / "key"), **kw)
    )


def test_bearer_token(tmp_path: Path) -> None:
    s = _secrets(tmp_path)
    assert authenticate(s, Headers({"Authorization": f"Bearer {TOKEN}"}), BODY) is None
    assert authenticate(s, Headers({"authorization": f"bearer {TOKEN}"}), BODY) is None
    assert authenticate(s, Headers({"Authorization": "Bearer nope"}), BODY) == "bearer token does not match"
    assert authenticate(s, Headers({}), BODY).startswith("missing credentials")


def test_hmac_signature_with_and_without_timestamp(tmp_path: Path) -> None:
    s = _secrets(tmp_path, require_timestamp=False)
    good = sign(KEY.encode(), BODY)
    assert authenticate(s, Headers({"X-Grafana-Alerting-Signature": good}), BODY) is None
    assert authenticate(s, Headers({"X-Grafana-Alerting-Signature": good}), BODY + b" ") is not None
    now = 1_800_000_000.0
    ts = str(int(now))
    signed = {
        "X-Grafana-Alerting-Signature": sign(KEY.encode(), BODY, ts),
        "X-Grafana-Alerting-Signature-Timestamp": ts,
    }
    assert authenticate(s, Headers(signed), BODY, now=now + 10) is None
    assert "stale" in authenticate(s, Headers(signed), BODY, now=now + 301)
    # The timestamp is part of what is signed: changing it breaks the signature.
    moved = {**signed, "X-Grafana-Alerting-Signature-Timestamp": str(int(now) + 1)}
    assert authenticate(s, Headers(moved), BODY, now=now) == "signature does not match the body"


def _signed(ts: str, body: bytes = BODY) -> Headers:
    return Headers(
        {
            "X-Grafana-Alerting-Signature": sign(KEY.encode(), body, ts),
            "X-Grafana-Alerting-Signature-Timestamp": ts,
        }
    )


def test_signed_requests_need_a_fresh_timestamp_and_are_never_replayed(tmp_path: Path) -> None:
    s = _secrets(tmp_path)  # require_timestamp is the default
    good = sign(KEY.encode(), BODY)
    assert "without" in authenticate(s, Headers({"X-Grafana-Alerting-Signature": good}), BODY)
    now = 1_800_000_000.0
    assert "stale" in authenticate(s, _signed(str(int(now) - 301)), BODY, now=now)
    for junk in ("nan", "inf", "-inf", "soon"):
        assert "not Unix seconds" in authenticate(s, _signed(junk), BODY, now=now)
    fresh = _signed(str(int(now) - 5))
    assert authenticate(s, fresh, BODY, now=now) is None
    assert "replayed" in authenticate(s, fresh, BODY, now=now + 1)
    assert "replayed" in authenticate(s, fresh, BODY, now=now + 290)
    # Once out of the window the timestamp check refuses it: it is no longer remembered.
    assert "stale" in authenticate(s, fresh, BODY, now=now + 400)
    # Same body, new timestamp: a new request.
    assert authenticate(s, _signed(str(int(now) + 1)), BODY, now=now + 1) is None


def test_remembered_signatures_expire_and_are_bounded() -> None:
    seen = SeenSignatures(capacity=3)
    assert seen.first_use("a", 10.0, 0.0) and not seen.first_use("a", 10.0, 5.0)
    assert seen.first_use("a", 30.0, 11.0)  # expired, forgotten, so accepted again
    for sig in ("b", "c", "d"):
        assert seen.first_use(sig, 40.0, 12.0)
    assert len(seen._expires) <= 3


def test_no_auth_configured_accepts_everything() -> None:
    assert authenticate(load_secrets(ServeAuth()), Headers({}), BODY) is None


def test_weak_or_missing_secret_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_secrets(ServeAuth(bearer_token_file=str(tmp_path / "short")))
    with pytest.raises(ConfigError, match="not set"):
        load_secrets(ServeAuth(hmac_secret_env="RECOVERCTL_TEST_UNSET_SECRET"), environ={})
