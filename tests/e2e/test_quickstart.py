"""`./scripts/quickstart` runs without manual steps and leaves a working demo setup behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def _start(tmp_path: Path, name: str) -> tuple[Path, subprocess.Popen[str]]:
    home = tmp_path / name
    home.mkdir()
    demo = home / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVERCTL_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), RECOVERCTL_DEMO_DIR=str(demo))
    # The Docker deploy/rollback demo takes ~2 minutes on a busy machine; the deploy e2e tests
    # cover that path, so here the engine is made unreachable on purpose.
    env["DOCKER_HOST"] = f"unix://{home / 'no-docker.sock'}"
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "quickstart")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return demo, proc


def test_two_quickstarts_at_once_both_end_green(tmp_path: Path) -> None:
    # Two demo dirs at the same time on one host: the PostgreSQL demo's cluster (under /var/tmp
    # when the server's user cannot enter the demo dir), its ports and names must not collide.
    runs = [_start(tmp_path, "first"), _start(tmp_path, "second")]
    try:
        _check(runs)
    finally:
        # The per-demo-dir clusters and code mirrors the script left in /var/tmp (as root).
        for demo, _ in runs:
            demo_id = hashlib.sha256(str(demo).encode()).hexdigest()[:10]
            for kind in ("pg", "py"):
                shutil.rmtree(f"/var/tmp/recoverctl-quickstart-{kind}-{demo_id}", ignore_errors=True)


def _check(runs: list[tuple[Path, subprocess.Popen[str]]]) -> None:
    for demo, proc in runs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"quickstart failed:\nstdout:\n{out}\nstderr:\n{err}"
        assert f"file://{demo / 'repo'}: ok" in out
        assert (demo / "catalog.db").is_file()
        assert "skipping the deploy/rollback demo" in out
        # The PostgreSQL demo's repository is verified (every pack read), and its drill passes.
        # Its repository sits in demo/pg/ or, when postgres may not enter the demo dir, /var/tmp.
        verified = [line for line in out.splitlines() if "repo: ok" in line and "packs read" in line]
        assert len(verified) == 2, out
        assert f"file://{demo / 'repo'}: ok" in verified[0]
        assert "pg" in verified[1].split(":", 2)[1], verified
        assert "drill demo-nightly: PASS" in out
        # The last lines say how to put recoverctl on PATH.
        last = out.rstrip().splitlines()[-2:]
        assert "put it on your PATH" in last[0]
        assert f'export PATH="{ROOT}/.venv/bin:$PATH"' in last[1]
