"""Docker volumes as a backup source, through the Docker SDK on the local engine.

How a volume is read: recoverctl asks the engine (DOCKER_HOST or the default socket) for the
volume's `Mountpoint` and reads that directory directly, so it must run on the Docker host with
permission to read the engine's data root (normally root). No helper container is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from recoverctl.errors import NotFoundError, RecoverctlError
from recoverctl.progress import Progress
from recoverctl.repo import BackupResult, Repository, backup_tree
from recoverctl.sources.files import FilesSource, SnapshotChoice


@dataclass
class VolumeInfo:
    name: str
    mountpoint: str
    driver: str


class DockerVolumes:
    """The few engine operations a volume backup needs."""

    def __init__(self, base_url: str | None = None):
        import docker

        self._docker = docker
        try:
            self.client = (
                docker.DockerClient(base_url=base_url, timeout=60)
                if base_url
                else docker.from_env(timeout=60)
            )
            self.client.ping()
        except docker.errors.DockerException as e:
            raise RecoverctlError(
                f"cannot reach the Docker engine ({os.environ.get('DOCKER_HOST') or 'default socket'}): {e}",
                hint="start dockerd or set DOCKER_HOST",
            ) from None

    def get(self, name: str, create: bool = False) -> VolumeInfo:
        """Return the volume; raise NotFoundError (or create it with `create`)."""
        try:
            v = self.client.volumes.get(name)
        except self._docker.errors.NotFound:
            if not create:
                raise NotFoundError(
                    f"Docker volume '{name}' does not exist", hint="list them with 'docker volume ls'"
                ) from None
            v = self.client.volumes.create(name)
        attrs: dict[str, Any] = v.attrs
        mountpoint = str(attrs.get("Mountpoint") or "")
        if not mountpoint or not os.path.isdir(mountpoint):
            raise RecoverctlError(
                f"the mountpoint of Docker volume '{name}' ({mountpoint or 'none'}) is not readable here",
                hint="run recoverctl on the Docker host as root; remote engines are not supported",
            )
        return VolumeInfo(name, mountpoint, str(attrs.get("Driver", "local")))

    def running_users(self, name: str) -> list[tuple[str, str]]:
        """Return (id, name) of running containers that mount the volume."""
        return [(c.id, c.name) for c in self.client.containers.list(filters={"volume": name})]

    def stop(self, container_id: str) -> None:
        self.client.containers.get(container_id).stop(timeout=30)

    def start(self, container_id: str) -> None:
        self.client.containers.get(container_id).start()

    def close(self) -> None:
        self.client.close()


class VolumeSource(FilesSource):
    """A Docker volume (a `volume` source): its snapshots carry the volume's name as source, and a
    drill restores one into a plain directory like a files snapshot."""

    kind = "volume"

    def __init__(self, name: str, volume: str, snapshot_filter: SnapshotChoice | None = None):
        super().__init__(name, snapshot_filter, snapshot_source=volume)
        self.volume = volume

    def backup(self, repo: Repository, progress: Progress, **options: Any) -> BackupResult:
        """Back up the volume's mountpoint `options['mountpoint']` (with backup_tree's options and
        the volume's newest snapshot as parent); return the result."""
        mountpoint = options.pop("mountpoint")
        parents = repo.find_snapshots(kind=self.kind, source=self.volume)
        return backup_tree(
            repo, mountpoint, kind=self.kind, source=self.volume, paths=[f"volume:{self.volume}"],
            parent=parents[-1] if parents else None, progress=progress, **options,
        )  # fmt: skip
