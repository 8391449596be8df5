"""Starting and stopping a restored data directory's server as its OS user."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from recoverctl.errors import RecoverctlError
from recoverctl.sources.postgres.isolation import command_line

LOG_NAME = "recoverctl-restore.log"
SECRETS_NAME = "recoverctl-secrets"
PASSPHRASE_FILE = "passphrase"

# The only variables of ours a restored server starts with. Its superusers can read the
# postmaster's environment (COPY ... FROM PROGRAM 'env'), and a restored copy's superusers are
# production's: recoverctl's passphrase, catalog URL, cloud keys and PG* variables stay out.
# restore_command carries on its own command line what it needs (paths and secret-free values).
_SERVER_VARS = ("PATH", "LANG", "LANGUAGE", "TZ")


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


def server_env(os_user: str | None) -> dict[str, str]:
    """Return the environment a server started as `os_user` (None: us) gets: PATH, locale and
    time zone from ours, HOME/USER/LOGNAME of that user, nothing else."""
    env = {k: v for k, v in os.environ.items() if k in _SERVER_VARS or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    try:
        pw = pwd.getpwnam(os_user) if os_user else pwd.getpwuid(os.geteuid())
    except KeyError:
        return env
    return env | {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}


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


def secrets_dir(data_dir: Path) -> Path:
    """Return the private directory beside `data_dir` holding what its restore_command reads
    while recovery needs it (see `write_passphrase_file`)."""
    return data_dir.parent / f"{data_dir.name}.{SECRETS_NAME}"


def write_passphrase_file(data_dir: Path, password: str, os_user: str | None) -> Path:
    """Write the repository passphrase for `data_dir`'s restore_command into a fresh 0700
    directory beside it, as a 0600 file owned by `os_user`; return the file's path.

    For a passphrase that came from a variable or a prompt: the server never gets it in its
    environment, its restore_command gets this path. Remove it with `remove_secrets` as soon as
    recovery has ended. Raise RecoverctlError when it cannot be written.
    """
    folder = secrets_dir(data_dir)
    remove_secrets(data_dir)
    path = folder / PASSPHRASE_FILE
    try:
        os.mkdir(folder, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        chown_tree(folder, os_user)
    except OSError as e:
        raise RecoverctlError(
            f"cannot write the passphrase file for the restored server's restore_command '{path}': "
            f"{e.strerror}",
            hint="check the directory holding the restore target is writable, or set "
            "repository.password_file (a file the server's OS user can read)",
        ) from None
    return path


def remove_secrets(data_dir: Path) -> None:
    """Remove what `write_passphrase_file` wrote for `data_dir` (no-op when nothing is there)."""
    shutil.rmtree(secrets_dir(data_dir), ignore_errors=True)


def start_server(
    data_dir: Path,
    bin_dir: Path,
    port: int,
    os_user: str | None,
    settings: Mapping[str, str] | None = None,
) -> Path:
    """Start postgres on `data_dir` listening on 127.0.0.1:`port`, with `settings` on its command
    line (they beat every configuration file) and only `server_env` as its environment; return
    its log file.

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
        env=server_env(os_user),
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
        env=server_env(os_user),
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
