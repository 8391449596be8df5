"""Starting and stopping a restored data directory's server as its OS user."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from recoverctl.errors import RecoverctlError
from recoverctl.sources.postgres.isolation import command_line

LOG_NAME = "recoverctl-restore.log"


def default_os_user(os_user: str | None) -> str | None:
    """Return the user the server runs as: the given one, 'postgres' when we are root, else us."""
    if os_user:
        return os_user
    return "postgres" if os.geteuid() == 0 else None


def as_user(cmd: list[str], os_user: str | None) -> list[str]:
    """Wrap `cmd` to run as `os_user` (root only; otherwise the caller already is that user)."""
    if os_user and os.geteuid() == 0 and pwd.getpwnam(os_user).pw_uid != 0:
        return ["runuser", "-m", "-u", os_user, "--", *cmd]
    return cmd


def chown_tree(path: Path, os_user: str | None) -> None:
    """Give `path` and everything below it to `os_user` (when we are root)."""
    if not os_user or os.geteuid() != 0:
        return
    pw = pwd.getpwnam(os_user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def log_path(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.{LOG_NAME}"


def start_server(
    data_dir: Path,
    bin_dir: Path,
    port: int,
    os_user: str | None,
    env: Mapping[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
) -> Path:
    """Start postgres on `data_dir` listening on 127.0.0.1:`port`, with `settings` on its command
    line (they beat every configuration file); return its log file.

    Does not wait: archive recovery can take long, the caller polls. Raise RecoverctlError when
    pg_ctl cannot even launch it.
    """
    log = log_path(data_dir)
    log.touch()
    chown_tree(log, os_user)
    r = subprocess.run(
        as_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(log),
                "-o",
                " ".join([f"-p {port}", command_line(settings or {})]).strip(),
                "-W",
                "start",
            ],
            os_user,
        ),
        capture_output=True,
        text=True,
        env=dict(env or os.environ),
    )
    if r.returncode != 0:
        raise RecoverctlError(
            f"pg_ctl could not start the restored server in '{data_dir}': "
            f"{r.stderr.strip() or r.stdout.strip()}",
            hint=f"see {log}",
        )
    return log


def postmaster_pid(data_dir: Path) -> int | None:
    """Return the postmaster's pid while it runs, else None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def postmaster_status(data_dir: Path) -> str | None:
    """Return the status line of postmaster.pid ('starting', 'standby', 'ready', 'stopping')."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines[7].strip() if len(lines) > 7 else None


def stop_server(data_dir: Path, bin_dir: Path, os_user: str | None, mode: str = "fast") -> None:
    """Stop the server on `data_dir` and wait for it to exit (no-op when it is not running)."""
    if postmaster_pid(data_dir) is None:
        return
    subprocess.run(
        as_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", mode, "-w", "-t", "120", "stop"], os_user
        ),
        capture_output=True,
    )


_FATAL_RE = re.compile(r"^.*(FATAL|PANIC):\s+(.*)$", re.M)


def server_failure(log: Path) -> str | None:
    """Return the last FATAL/PANIC message from the server log, or None."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return None
    found = _FATAL_RE.findall(text)
    return found[-1][1].strip() if found else None


def wait_for(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate()` until true or `timeout` seconds; return whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
