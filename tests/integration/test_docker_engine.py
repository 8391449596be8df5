"""The Docker engine fixture: containers start on host networking and the demo images behave."""

from __future__ import annotations

import os

import httpx

from tests.fixtures.docker_engine import DockerEngine, container_state
from tests.fixtures.net import free_port, wait_until


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return None


def test_demo_images_serve_healthy_and_broken(
    docker_engine: DockerEngine, demo_web_images: dict[str, str]
) -> None:
    assert os.environ["DOCKER_HOST"] == docker_engine.base_url
    client = docker_engine.client()
    ports = {"v1": free_port(), "v2": free_port()}
    names = {v: f"rc-test-fixture-{v}-{ports[v]}" for v in ports}
    try:
        for version, ref in demo_web_images.items():
            client.containers.run(
                ref,
                name=names[version],
                detach=True,
                network_mode="host",
                environment={"PORT": str(ports[version])},
            )
        base1 = f"http://127.0.0.1:{ports['v1']}"
        wait_until(lambda: _status(f"{base1}/health") == 200, timeout=20, what="v1 /health")
        assert httpx.get(f"{base1}/version").text.strip() == "v1"
        wait_until(
            lambda: _status(f"http://127.0.0.1:{ports['v2']}/health") == 500, timeout=20, what="v2 500"
        )
        state = container_state(docker_engine, names["v2"])
        assert state is not None and state["Running"]
    finally:
        docker_engine.remove_containers(*names.values())
    assert container_state(docker_engine, names["v1"]) is None
