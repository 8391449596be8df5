"""The bench-only virtualenv the benchmark scripts run recoverctl from (a wheel, as users install it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def base_python() -> str:
    """Return the interpreter the venv is made from: the system one when present, because every OS
    user can run it (bench_postgres runs recoverctl as the postgres user, and an interpreter
    under /root is out of its reach); else this one."""
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for exe in (f"/usr/bin/{minor}", f"/usr/local/bin/{minor}"):
        if os.access(exe, os.X_OK):
            return exe
    return sys.executable


def installed_bin() -> Path:
    """Return the bin directory of a bench-only venv holding recoverctl as users install it.

    A wheel of this tree, not the source tree: an editable install adds a finder to every Python
    start (~40 ms), and the source tree on PYTHONPATH puts the system interpreter's site-packages
    (and whatever .pth files live there) on the path. The venv and its dependencies (from the
    configured package index) are made once, under $BENCH_VENV or /var/tmp, per set of declared
    dependencies and base interpreter; each run reinstalls only the freshly built recoverctl
    wheel (~15 s).
    """
    python = base_python()
    spec = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + python.encode()).hexdigest()[:12]
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
