"""Docker target: one container per service, images are tags of the service's image repository."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from recoverctl.config import DockerService
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome, TargetUnreachable
from recoverctl.deploy.version import check_version
from recoverctl.errors import ConfigError, NotFoundError

P = ParamSpec("P")
R = TypeVar("R")

# What dockerd answers with a 5xx while it (or its containerd) restarts, as opposed to a 5xx
# that will come back every time (a bad command, a port in use).
_RESTARTING = ("containerd", "connection refused", "connection reset", "transport", "dial unix", "EOF")


def engine_fault(e: BaseException) -> bool:
    """Return True when `e` says the engine is not answering (yet): connection refused or
    dropped, the socket missing, or a 5xx about its containerd. Image not found, conflicts and
    other API answers are final."""
    if isinstance(e, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError):
        return True
    if isinstance(e, docker.errors.APIError):
        status = e.status_code or 0
        text = str(e.explanation or e)
        return status in (502, 503, 504) or (status >= 500 and any(s in text for s in _RESTARTING))
    if isinstance(e, docker.errors.DockerException):
        return "Error while fetching server API version" in str(e)
    return False


def _engine_faults(
    method: Callable[Concatenate[DockerTarget, P], R],
) -> Callable[Concatenate[DockerTarget, P], R]:
    """Turn an engine that does not answer into TargetUnreachable, dropping the client so the
    next attempt connects anew."""

    @functools.wraps(method)
    def wrapper(self: DockerTarget, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except TargetUnreachable:
            self.close()
            raise
        except Exception as e:
            if not engine_fault(e):
                raise
            self.close()
            raise TargetUnreachable(
                f"Docker engine at '{self.where}' is unreachable: {e}",
                where=f"docker host {self.where}",
                hint="start dockerd, or set 'docker_host' for the service (or DOCKER_HOST)",
            ) from None

    return wrapper


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
            except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                self._client = None
                raise TargetUnreachable(
                    f"Docker engine at '{self.where}' is unreachable: {e}",
                    where=f"docker host {self.where}",
                    hint="start dockerd, or set 'docker_host' for the service (or DOCKER_HOST)",
                ) from None
        return self._client

    def ref(self, version: str) -> str:
        return f"{self.cfg.image}:{check_version(version)}"

    # --- Target ---------------------------------------------------------------------------------

    @_engine_faults
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

    @_engine_faults
    def available_versions(self) -> list[str]:
        versions = []
        for image in self.client.images.list(name=self.cfg.image):
            for tag in image.tags:
                repo, _, version = tag.rpartition(":")
                if repo == self.cfg.image:
                    versions.append(version)
        return sorted(set(versions))

    @_engine_faults
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

    @_engine_faults
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

    @_engine_faults
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
            if engine_fault(e):
                raise
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

    @_engine_faults
    def running_version(self) -> str | None:
        c = self._container()
        if c is None or c.status != "running":
            return None
        return c.labels.get(LABEL_VERSION)

    @_engine_faults
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
            except docker.errors.APIError as e:
                if engine_fault(e):
                    raise
                # still used by a container (ours or someone else's): keep it
        return removed

    def describe(self) -> dict[str, Any]:
        return {"target": "docker", "engine": self.where, "container": self.cfg.container}

    def only(self, hosts: list[str]) -> DockerTarget:
        return self  # one engine, one container: nothing to narrow

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
