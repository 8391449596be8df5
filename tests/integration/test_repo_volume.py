"""Docker volumes on the real engine: backup with containers stopped and restarted, restore into a volume."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import Cli
from tests.fixtures.docker_engine import DockerEngine
from tests.inproc_cli import InProcessCli
from tests.repo_trees import digest

SLEEPER = ["/busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do /busybox sleep 0.2; done"]


def summary(stdout: str) -> dict[str, Any]:
    return [json.loads(x) for x in stdout.splitlines() if '"summary"' in x][-1]


def test_volume_backup_stop_containers_and_restore(
    cli: Cli, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    client = docker_engine.client()
    docker_engine.build_image("rc-volume-sleeper:1", SLEEPER)
    name = f"rc-vol-{uuid.uuid4().hex[:8]}"
    restored_name = f"{name}-restored"
    vol = client.volumes.create(name)
    box = client.containers.run(
        "rc-volume-sleeper:1",
        name=name,
        detach=True,
        network_mode="host",
        volumes={name: {"bind": "/data", "mode": "rw"}},
    )
    try:
        mp = Path(vol.attrs["Mountpoint"])
        (mp / "uploads").mkdir()
        (mp / "uploads" / "a.jpg").write_bytes(os.urandom(200_000))
        (mp / "db.sqlite").write_text("rows\n" * 1000)
        os.symlink("uploads/a.jpg", mp / "latest.jpg")
        cli.env.update(RECOVERCTL_REPOSITORY=str(tmp_path / "repo"), RECOVERCTL_PASSWORD="pw")
        rc = InProcessCli(cli)
        rc("init", check=0)
        started = client.containers.get(name).attrs["State"]["StartedAt"]
        s = summary(rc("backup", "volume", name, "--stop-containers", "--json", check=0).stdout)
        assert s["stopped_containers"] == [name] and s["files_new"] == 2
        box.reload()
        assert box.status == "running" and box.attrs["State"]["StartedAt"] != started
        snaps = rc("snapshots", "--kind", "volume", "--json", check=0).json()
        assert snaps[0]["metadata"]["stopped_containers"] == [name] and snaps[0]["paths"] == [
            f"volume:{name}"
        ]

        # A failing backup still starts the containers again, and writes no snapshot.
        rc(
            "backup",
            "volume",
            name,
            "--stop-containers",
            env={"RECOVERCTL_FAULTS": "put:error:*@snapshots/"},
            check=1,
        )
        box.reload()
        assert box.status == "running"
        assert len(rc("snapshots", "--json", check=0).json()) == 1

        rc("restore", "latest", "--target-volume", restored_name, check=0)
        target = Path(client.volumes.get(restored_name).attrs["Mountpoint"])
        assert digest(target) == digest(mp)
        r = rc("restore", "latest", "--target-volume", restored_name, "--json", check=2)
        assert "not empty" in r.error_json()["message"]
        (target / "stray").write_text("x")
        rc("restore", "latest", "--target-volume", restored_name, "--force", check=0)
        assert not (target / "stray").exists() and digest(target) == digest(mp)
        rc("backup", "volume", "no-such-volume-here", check=10)
    finally:
        box.remove(force=True)
        for v in (name, restored_name):
            with contextlib.suppress(Exception):
                client.volumes.get(v).remove(force=True)
