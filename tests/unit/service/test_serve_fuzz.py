"""Property test: whatever a sender posts, the webhook server answers 2xx/4xx — never 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recoverctl.catalog import Catalog
from recoverctl.config import parse_config
from recoverctl.service.app import create_app
from recoverctl.service.payloads import nesting_depth
from recoverctl.service.server import build_state

TOKEN = "fuzz-token-0123456789abcdef"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
labels = st.dictionaries(
    st.sampled_from(["alertname", "service", "severity", "env", "x"]),
    st.sampled_from(["HighErrorRate", "web", "api", "critical", "", "ü"]) | st.text(max_size=8),
    max_size=5,
)
alert = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved", "pending"]) | json_values,
        "labels": labels | json_values,
    },
    optional={
        "annotations": st.dictionaries(st.text(max_size=8), st.text(max_size=8)) | json_values,
        "startsAt": st.sampled_from(["2026-01-01T00:00:00Z", "garbage", ""]) | json_values,
        "fingerprint": st.text(max_size=30) | json_values,
        "values": st.dictionaries(st.text(max_size=4), st.floats(allow_nan=False) | st.none()) | json_values,
    },
)
payload = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]) | json_values, "alerts": st.lists(alert, max_size=3)},
    optional={
        "groupKey": st.text(max_size=20) | json_values,
        "version": st.sampled_from(["4", "1"]),
        "truncatedAlerts": st.integers() | json_values,
        "alertname": st.text(max_size=20) | json_values,
        "labels": labels,
        "id": st.text(max_size=20),
    },
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("fuzz")
    (home / "token").write_text(TOKEN)
    cfg = parse_config(
        {
            "serve": {
                "auth": {"bearer_token_file": str(home / "token")},
                "max_body_bytes": 4096,
                "rejections": {"delay": 0},
            },
            "services": {"web": {"target": "docker", "image": "demo-web", "container": "web"}},
            "policies": [
                {
                    "name": "n",
                    "match": {"alertname": "HighErrorRate"},
                    "action": "notify",
                    "service_from_label": "service",
                },
                {
                    "name": "r",
                    "match": {"service": "web"},
                    "action": "rollback",
                    "service": "web",
                    "mode": "dry-run",
                    "conditions": [{"value_from": "error_rate", "threshold": 0.05}],
                },
            ],
        },
        env={},
    )
    catalog = Catalog(f"sqlite:///{home / 'catalog.db'}")
    state = build_state(cfg, catalog, workers=0, dry_run=False, host="127.0.0.1")
    with TestClient(create_app(state), raise_server_exceptions=False) as c:
        yield c
    catalog.close()


def test_openapi_documents_the_hooks(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 401
    spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    for hook in ("/hooks/alertmanager", "/hooks/grafana", "/hooks/generic"):
        assert "requestBody" in spec["paths"][hook]["post"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hook=st.sampled_from(["alertmanager", "grafana", "generic"]),
    body=payload | json_values,
    raw=st.one_of(st.none(), st.binary(max_size=64), st.just(b"x" * 5000)),
    auth=st.sampled_from(["good", "bad", "none"]),
)
def test_no_input_makes_the_server_fail(
    client: TestClient, hook: str, body: Any, raw: bytes | None, auth: str
) -> None:
    headers = {
        "good": {"Authorization": f"Bearer {TOKEN}"},
        "bad": {"Authorization": "Bearer x"},
        "none": {},
    }[auth]
    content = raw if raw is not None else json.dumps(body).encode()
    r = client.post(
        f"/hooks/{hook}", content=content, headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code in (202, 400, 401, 413, 422, 429), (r.status_code, r.text)
    if auth != "good":
        # 429 once this address has had its burst of refusals; an authenticated sender never gets one.
        assert r.status_code in (401, 413, 429)
    else:
        assert r.status_code != 429


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 4000,  # under the fixture's 4096-byte body limit
        b'{"":' * 800 + b"1" + b"}" * 800,
        json.dumps({"status": "firing", "alerts": [], "groupKey": "g", "x": _nested(40)}).encode(),
    ],
    ids=["arrays-4000", "objects-800", "arrays-40-in-a-field"],
)
def test_deeply_nested_json_is_a_400(client: TestClient, content: bytes) -> None:
    r = client.post(
        "/hooks/alertmanager",
        content=content,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.json()["error"] == "malformed"


def test_strings_do_not_count_as_nesting(client: TestClient) -> None:
    assert nesting_depth(r'["x\\",[[1]]]') == 3 and nesting_depth(r'{"a":"[\"[{"}') == 1
    assert nesting_depth('"' + "\\" * 10_000) == 0  # unterminated: linear scan, no overflow
    labels = {"alertname": "x", "service": "web", "note": "[" * 40 + "{" * 20}
    body = {"groupKey": "g", "status": "firing", "alerts": [{"status": "firing", "labels": labels}]}
    r = client.post("/hooks/alertmanager", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202, r.text
