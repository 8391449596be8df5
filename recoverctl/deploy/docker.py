"""Docker target: one container per service, images are tags of the service's image repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from recoverctl.config import DockerService
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome
from recoverctl.errors import ConfigError, NotFoundError, RecoverctlError

LABEL_SERVICE = "recoverctl.service"
LABEL_VERSION = "recoverctl.version"


def _read_env_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    try:
        text = Path(path).expanduser().read_text()
    except OSError as e:
        raise ConfigError(f"cannot read env file '{path}': {e.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env


class DockerTarget:
    kind = "docker"

    def __init__(self, service: str, cfg: DockerService):
        self.service = service
        self.cfg = cfg
        self._client: docker.DockerClient | None = None

    @property
    def where(self) -> str:
        return self.cfg.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                if self.cfg.docker_host:
                    self._client = docker.DockerClient(base_url=self.cfg.docker_host, timeout=60)
                else:
                    self._client = docker.from_env(timeout=60)
                self._client.ping()
            except docker.errors.DockerException as e:
                self._client = None
                raise RecoverctlError(
                    f"Docker engine at '{self.where}' is unreachable: {e}",
                    hint="start dockerd, or set 'docker_host' for the service (or DOCKER_HOST)",
                ) from None
        return self._client

    def ref(self, version: str) -> str:
        return f"{self.cfg.image}:{version}"

    # --- Target ---------------------------------------------------------------------------------

    def preflight(self, version: str | None) -> None:
        client = self.client
        if version is None:
            return
        try:
            client.images.get(self.ref(version))
        except docker.errors.ImageNotFound:
            have = self.available_versions()
            raise NotFoundError(
                f"image '{self.ref(version)}' for service '{self.service}' is not in the Docker engine",
                hint=f"images present: {', '.join(self.ref(v) for v in have) or '(none)'}",
                details={"available": have},
            ) from None

    def available_versions(self) -> list[str]:
        versions = []
        for image in self.client.images.list(name=self.cfg.image):
            for tag in image.tags:
                repo, _, version = tag.rpartition(":")
                if repo == self.cfg.image:
                    versions.append(version)
        return sorted(set(versions))

    def prepare(self, version: str, image: str | None = None) -> Artifact:
        ref = image or self.ref(version)
        try:
            img = self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            repository, _, tag = ref.rpartition(":")
            try:
                img = self.client.images.pull(repository, tag=tag or "latest")
            except docker.errors.APIError as e:
                raise NotFoundError(
                    f"image '{ref}' is not in the Docker engine and pulling it failed: {e.explanation or e}",
                    hint="build or load the image on this engine, or check the registry is reachable",
                    details={"available": self.available_versions()},
                ) from None
        digests = img.attrs.get("RepoDigests") or []
        return Artifact(version=version, image=ref, digest=digests[0] if digests else img.id)

    def _container(self) -> Container | None:
        try:
            return self.client.containers.get(self.cfg.container)
        except docker.errors.NotFound:
            return None

    def stop(self) -> list[HostOutcome]:
        c = self._container()
        if c is None:
            return [HostOutcome(self.cfg.container, output={"stopped": None})]
        version = c.labels.get(LABEL_VERSION)
        # Removed, not just stopped: host networking means the next version needs the same ports
        # and the same container name; the image stays, so the old version can start again.
        c.stop(timeout=int(self.cfg.stop_timeout))
        c.remove(force=True)
        return [HostOutcome(self.cfg.container, output={"stopped": version})]

    def start(self, artifact: Artifact) -> list[HostOutcome]:
        c = self._container()
        if c is not None:
            if c.labels.get(LABEL_VERSION) == artifact.version and c.status == "running":
                return [
                    HostOutcome(self.cfg.container, output={"started": artifact.version, "already": True})
                ]
            c.remove(force=True)
        env: dict[str, str] = {}
        for f in self.cfg.env_files:
            env.update(_read_env_file(f))
        env.update(self.cfg.env)
        kwargs: dict[str, Any] = {
            "name": self.cfg.container,
            "detach": True,
            "environment": env,
            "labels": {**self.cfg.labels, LABEL_SERVICE: self.service, LABEL_VERSION: artifact.version},
        }
        if self.cfg.network_mode:
            kwargs["network_mode"] = self.cfg.network_mode
        if self.cfg.ports and self.cfg.network_mode != "host":
            kwargs["ports"] = dict(self.cfg.ports)
        if self.cfg.volumes:
            kwargs["volumes"] = list(self.cfg.volumes)
        if self.cfg.command is not None:
            kwargs["command"] = self.cfg.command
        if self.cfg.restart_policy:
            kwargs["restart_policy"] = {"Name": self.cfg.restart_policy}
        try:
            c = self.client.containers.run(artifact.image or self.ref(artifact.version), **kwargs)
        except docker.errors.APIError as e:
            return [HostOutcome(self.cfg.container, error=f"docker run failed: {e.explanation or e}")]
        return [HostOutcome(self.cfg.container, output={"started": artifact.version, "id": c.short_id})]

    def endpoints(self) -> list[Endpoint]:
        health = self.cfg.health
        if health.url:
            return [Endpoint(self.cfg.container, health.url)]
        for host_port in self.cfg.ports.values():
            return [Endpoint(self.cfg.container, f"http://127.0.0.1:{host_port}{health.path}")]
        raise ConfigError(
            f"service '{self.service}' has no health URL",
            hint=f"set services.{self.service}.health.url (e.g. http://127.0.0.1:8080/health)",
        )

    def running_version(self) -> str | None:
        c = self._container()
        if c is None or c.status != "running":
            return None
        return c.labels.get(LABEL_VERSION)

    def retire(self, versions: list[str]) -> list[str]:
        removed = []
        running = self.running_version()
        present = set(self.available_versions())
        for version in versions:
            if version == running or version not in present:
                continue
            try:
                self.client.images.remove(self.ref(version))
                removed.append(self.ref(version))
            except docker.errors.APIError:
                pass  # still used by a container (ours or someone else's): keep it
        return removed

    def describe(self) -> dict[str, Any]:
        return {"target": "docker", "engine": self.where, "container": self.cfg.container}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
