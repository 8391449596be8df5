"""The bench-only virtualenv the benchmark scripts run recoverctl from (a wheel, as users install it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def installed_bin(python: str) -> Path:
    """Return the bin directory of a bench-only venv holding recoverctl as users install it.

    A wheel of this tree, not the source tree: an editable install adds a finder to every Python
    start (~40 ms), and the source tree on PYTHONPATH puts the system interpreter's site-packages
    (and whatever .pth files live there) on the path. The venv and its dependencies (from the
    configured package index) are made once, under $BENCH_VENV or /var/tmp, per set of declared
    dependencies; each run reinstalls only the freshly built recoverctl wheel (~15 s).
    """
    spec = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = Path(os.environ.get("BENCH_VENV", f"/var/tmp/recoverctl-bench-venv-{spec}"))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    wheels = Path(tempfile.mkdtemp(prefix="recoverctl-bench-wheel-"))
    t = time.perf_counter()
    fresh = not (venv / ".complete").exists()
    if fresh:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True, cwd=wheels)
    wheel = next(wheels.glob("recoverctl-*.whl"))
    subprocess.run([*pip, "install", *([] if fresh else ["--no-deps", "--force-reinstall"]), str(wheel)],
                   check=True)  # fmt: skip
    (venv / ".complete").touch()
    shutil.rmtree(wheels, ignore_errors=True)
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    print(f"== recoverctl installed from a wheel into {venv} ({time.perf_counter() - t:.0f}s)", flush=True)
    return venv / "bin"
