"""`backup volume` and `restore --target-volume`: Docker volumes in and out of the repository."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.errors import (
    CancelledError,
    PartialError,
    RecoverctlError,
    UsageError,
    VerificationError,
    cleanup_after,
)
from recoverctl.progress import Progress
from recoverctl.repo import BackupResult, RestoreResult
from recoverctl.sources.files import restore_tree
from recoverctl.sources.volume import DockerVolumes, VolumeSource


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception so `finally` blocks (restarting containers) still run."""

    def handler(_sig: int, _frame: Any) -> None:
        raise CancelledError("interrupted by SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _restart(docker: DockerVolumes, stopped: list[tuple[str, str]], name: str) -> None:
    """Start every stopped container (all are tried); raise RecoverctlError naming those that failed."""
    errors = []
    for cid, cname in stopped:
        try:
            docker.start(cid)
        except Exception as e:
            errors.append(f"{cname}: {e}")
    if errors:
        raise RecoverctlError(
            f"could not restart containers after backing up volume '{name}': {'; '.join(errors)}",
            hint="start them by hand with 'docker start'",
        )


@dataclass
class VolumeBackup:
    """A volume backup's result and the containers stopped (and started again) for it."""

    result: BackupResult
    stopped_containers: list[str]


def backup_volume(
    cfg: Config,
    catalog: Catalog,
    password: str,
    name: str,
    *,
    stop_containers: bool = False,
    tags: dict[str, str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> VolumeBackup:
    """Back up Docker volume `name`; with `stop_containers`, stop its running users for the copy and
    always start them again (also on failure or SIGTERM). Return the result and the stopped names."""
    docker = DockerVolumes()
    stopped: list[tuple[str, str]] = []
    try:
        with operation(
            cfg, password, "backup", recorder=None if dry_run else catalog, source=f"volume:{name}"
        ) as op:
            info = docker.get(name)
            with _sigterm_raises(), op.repo.lock(operation="backup volume"):
                if not dry_run:
                    op.repo.index_orphan_packs()
                try:
                    if stop_containers:
                        for cid, cname in docker.running_users(name):
                            docker.stop(cid)
                            stopped.append((cid, cname))
                    metadata = {
                        "volume": name,
                        "driver": info.driver,
                        "stopped_containers": [n for _, n in stopped],
                    }
                    result: BackupResult = VolumeSource(name, name).backup(
                        op.repo, progress or Progress(), mountpoint=info.mountpoint, tags=tags,
                        dry_run=dry_run, metadata=metadata,
                    )  # fmt: skip
                except BaseException as e:
                    # The backup's own error is the one to report; a failed restart is a note on it.
                    with cleanup_after(e, "restarting the stopped containers"):
                        _restart(docker, stopped, name)
                    raise
                _restart(docker, stopped, name)
            if op.run_id is not None and result.snapshot is not None:
                catalog.record_snapshot(op.repo.url, result.snapshot)
                op.finish(
                    "partial" if result.partial else "succeeded",
                    bytes_read=result.summary["bytes_read"],
                    bytes_added=result.summary["bytes_added"],
                    snapshot_id=result.snapshot_id,
                    details={"summary": result.summary, "stopped_containers": [n for _, n in stopped]},
                )
    finally:
        docker.close()
    return VolumeBackup(result, [n for _, n in stopped])


@dataclass
class VolumeRestoreResult:
    """A snapshot restored into a Docker volume."""

    snapshot: str
    volume: str
    mountpoint: str
    result: RestoreResult

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "volume": self.volume,
            "mountpoint": self.mountpoint,
            **self.result.to_dict(),
        }


def restore_volume(
    cfg: Config,
    catalog: Catalog,
    password: str,
    ref: str,
    volume: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> VolumeRestoreResult:
    """Restore snapshot `ref` into Docker volume `volume` (created when missing).

    A non-empty volume is refused without `force` (UsageError); with it, the volume is made equal to
    the snapshot (files not in it are removed). Raise VerificationError for damaged files.
    """
    docker = DockerVolumes()
    try:
        with operation(cfg, password, "restore", recorder=catalog, source=f"volume:{volume}") as op:
            info = docker.get(volume, create=True)
            if os.listdir(info.mountpoint) and not force:
                raise UsageError(
                    f"Docker volume '{volume}' is not empty",
                    hint="restore into a new volume, or pass --force to replace its content",
                )
            with op.repo.lock(operation="restore volume", reader=True):
                snap, result = restore_tree(op.repo, ref, info.mountpoint, delta=force, progress=progress)
            restored = VolumeRestoreResult(snap.id, volume, info.mountpoint, result)
            out = restored.to_json()
            op.finish("partial" if result.errors else "succeeded", snapshot_id=snap.id, details=out)
    finally:
        docker.close()
    if result.errors:
        cls = VerificationError if any(e["damaged"] == "yes" for e in result.errors) else PartialError
        raise cls(
            f"restore of snapshot {snap.id[:8]} into volume '{volume}': {len(result.errors)} file(s) failed",
            details=out,
        )
    return restored
