"""The scratch cluster: a restored data dir in a private temp dir, served on a free loopback port.

It never touches the production data dir or port: the workspace is a fresh `mkdtemp`, the port is
refused when it equals the source's, and the server starts sealed (`sources.postgres.isolation`):
command-line settings that beat the restored config files switch off streaming, subscriptions,
archiving and production's commands, and the only restore_command is the one recoverctl wrote.
`cleanup()` stops the server (immediate shutdown, then SIGKILL of its whole session so
restore_command children go too) and removes the workspace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from recoverctl.errors import RecoverctlError
from recoverctl.sources.postgres.isolation import (
    command_line,
    detach_subscriptions,
    effective_setting,
    isolation_settings,
    neutralize_signals,
    recovery_overrides,
)
from recoverctl.sources.postgres.recovery import read_recovery_config
from recoverctl.sources.postgres.server import default_os_user, remove_secrets, server_env
from recoverctl.sources.postgres.server import postmaster_pid as running_postmaster_pid
from recoverctl.sources.postgres.wal_fetcher import stop_fetchers

log = logging.getLogger(__name__)

DRILL_PREFIX = "recoverctl-drill-"
# How long a launched server may take to write postmaster.pid before we call it dead.
STARTUP_GRACE_S = 30.0
# How long cleanup keeps stopping late WAL fetchers and removing the workspace before it gives up
# (and reports the workspace as not removed).
WORKSPACE_REMOVAL_S = 15.0


_CONNECTION_REFUSALS = (
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
)


class DrillError(RecoverctlError):
    """A drill could not run to its verdict (environment, restore or server failure)."""


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Return True when binding 127.0.0.1:port fails because something holds it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def is_within(path: Path, parent: Path) -> bool:
    """Return whether `path` is `parent` or lies below it (symlinks resolved)."""
    try:
        path.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def create_workspace(parent_dir: Path) -> Path:
    """Given a parent dir (made if missing), return a fresh private drill temp dir in it; raise DrillError."""
    try:
        parent_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=DRILL_PREFIX, dir=parent_dir))
    except OSError as e:
        raise DrillError(
            f"cannot create the drill temp dir under '{parent_dir}': {e.strerror}",
            hint="check where.temp_dir exists, is writable and has free space",
        ) from None


@dataclass
class ServerState:
    pid: int | None = None
    started_at: float | None = None
    seen_pid: bool = False
    # Set before pg_ctl runs: a Ctrl-C that interrupts pg_ctl itself still leaves the postmaster
    # it forked, and the stop must then look for it although start() never returned.
    launching: bool = False


@dataclass
class ScratchCluster:
    """One throwaway server. Create with `ScratchCluster.create(...)`; always call `cleanup()`."""

    bin_dir: Path
    workspace: Path
    port: int
    os_user: str | None
    keep: bool = False
    state: ServerState = field(default_factory=ServerState)

    @property
    def data_dir(self) -> Path:
        return self.workspace / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workspace / "sock"

    @property
    def log_file(self) -> Path:
        return self.workspace / "server.log"

    @property
    def hba_file(self) -> Path:
        return self.workspace / "pg_hba.conf"

    @property
    def ident_file(self) -> Path:
        return self.workspace / "pg_ident.conf"

    @classmethod
    def create(
        cls,
        bin_dir: Path,
        *,
        os_user: str | None,
        parent: str | Path | None = None,
        port: int | None = None,
        production_port: int | None = None,
        production_data_dir: str | None = None,
        keep: bool = False,
    ) -> ScratchCluster:
        """Given where to put it, return a prepared (empty, not started) scratch cluster.

        Raise DrillError when the parent lies inside the production data dir, the port is the
        production port, or the port is already in use.
        """
        parent_dir = Path(parent or tempfile.gettempdir())
        if production_data_dir and is_within(parent_dir, Path(production_data_dir)):
            raise DrillError(
                f"drill temp dir '{parent_dir}' is inside the production data dir '{production_data_dir}'",
                hint="set where.temp_dir in the playbook to a directory outside the data dir",
            )
        if port is not None:
            if production_port is not None and port == production_port:
                raise DrillError(
                    f"drill port {port} is the production port of the source",
                    hint="remove where.port from the playbook (a free port is chosen) or pick another",
                )
            if port_in_use(port):
                raise DrillError(
                    f"drill port {port} on 127.0.0.1 is in use",
                    hint="stop what listens there, or remove where.port so a free port is chosen",
                )
        else:
            port = free_loopback_port()
            while port == production_port:
                port = free_loopback_port()
        workspace = create_workspace(parent_dir)
        cluster = cls(bin_dir=bin_dir, workspace=workspace, port=port, os_user=os_user, keep=keep)
        try:
            cluster._prepare()
        except BaseException:
            cluster.cleanup(force=True)
            raise
        return cluster

    def _prepare(self) -> None:
        os.chmod(self.workspace, 0o700)
        self.data_dir.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        # Checks connect over the private socket; TCP on loopback keeps password auth so the
        # restored copy of production data is not open to every local user.
        self.hba_file.write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 reject\n"
        )
        self.ident_file.write_text("")
        self.chown()

    def chown(self) -> None:
        """Give the workspace to the unprivileged server user (when running as root)."""
        uid_gid = self._uid_gid()
        if uid_gid is None:
            return
        uid, gid = uid_gid
        for root, dirs, files in os.walk(self.workspace):
            os.chown(root, uid, gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)

    def _uid_gid(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        user = self.os_user or "postgres"
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise DrillError(
                f"OS user '{user}' for the scratch cluster does not exist",
                hint="PostgreSQL refuses to run as root: set where.os_user or the source's os_user",
            ) from None
        return pw.pw_uid, pw.pw_gid

    def _as_user(self, cmd: list[str]) -> list[str]:
        if os.geteuid() == 0:
            # -m keeps the environment the caller passes: `server_env`, never ours.
            return ["runuser", "-m", "-u", self.os_user or "postgres", "--", *cmd]
        return cmd

    def env(self) -> dict[str, str]:
        """Return the environment of every server program run here (`server_env`), never ours:
        checks run SQL as a superuser of the copy, which can read the postmaster's environment;
        restore_command brings what it needs on its command line."""
        return server_env(default_os_user(self.os_user))

    def settings(self) -> dict[str, str]:
        """Return the command-line settings that seal the copy off, overriding its config files.

        Command-line settings beat postgresql.conf, postgresql.auto.conf and every `include`.
        """
        recovery = read_recovery_config(self.data_dir) or {}
        return (
            isolation_settings(self.data_dir)
            | {
                "port": str(self.port),
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(self.socket_dir),
                "hba_file": str(self.hba_file),
                "ident_file": str(self.ident_file),
                # max_wal_senders & co. stay as restored: hot standby refuses values below the primary's.
                "hot_standby": "on",
                "log_timezone": "UTC",
                "cluster_name": "recoverctl-drill",
            }
            | recovery_overrides(recovery)
        )

    def server_options(self) -> list[str]:
        """Return `settings()` as pg_ctl -o options."""
        return [command_line({k: v}) for k, v in self.settings().items()]

    def seal(self) -> None:
        """Make sure the server can only recover from recoverctl's archive, never stream.

        Raise DrillError when the data dir has no recovery configuration from recoverctl, or when
        the configuration the server would run with names another restore_command.
        """
        neutralize_signals(self.data_dir)
        recovery = read_recovery_config(self.data_dir)
        if recovery is None or not recovery.get("restore_command"):
            raise DrillError(
                f"the restored data dir '{self.data_dir}' has no recovery configuration from recoverctl",
                hint="this is a bug in the drill's restorer: it must call write_recovery_config",
            )
        try:
            actual = effective_setting(
                self.bin_dir, self.data_dir, self.settings(), "restore_command", self._as_user, self.env()
            )
        except RecoverctlError as e:
            raise DrillError(e.message, hint=e.hint) from None
        if actual != recovery["restore_command"]:
            # Something after recoverctl's block (a hand-written include in postgresql.auto.conf)
            # would make the copy fetch WAL from elsewhere, e.g. production's archive. The value
            # itself is not repeated: production's command may carry credentials.
            raise DrillError(
                f"the restored configuration in '{self.data_dir}' replaces recoverctl's restore_command "
                "with another one: the copy could fetch WAL from production's archive, the drill does "
                "not start it",
                hint="recoverctl's recovery block must come last in postgresql.auto.conf: rerun with "
                "--keep and read what follows it there",
            )

    def start(self) -> None:
        """Launch the sealed server without waiting (phases are timed by the caller's polling)."""
        self.chown()
        self.seal()
        cmd = [
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(self.server_options()),
            "-W",
            "start",
        ]
        self.state.launching = True
        r = subprocess.run(self._as_user(cmd), capture_output=True, text=True, env=self.env())
        if r.returncode != 0:
            raise DrillError(
                f"cannot start the scratch server on port {self.port}: {(r.stderr or r.stdout).strip()}",
                hint=f"read {self.log_file} (kept with --keep)",
            )
        self.state.started_at = time.monotonic()

    def postmaster_pid(self) -> int | None:
        """Return the running postmaster's pid from postmaster.pid, or None."""
        try:
            pid = running_postmaster_pid(self.data_dir)
        except OSError:
            return None
        if pid is not None:
            self.state.pid = pid
        return pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fatal_from_log(self) -> str | None:
        """Return the last FATAL/PANIC line of the server log, if any."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return None
        bad = [ln for ln in text.splitlines() if "FATAL:" in ln or "PANIC:" in ln]
        # Our own probe connections are refused with FATALs while the server is not ready; they
        # can be logged after the server's real reason for dying, so they only count when alone.
        real = [ln for ln in bad if not any(m in ln for m in _CONNECTION_REFUSALS)]
        chosen = real or bad
        return chosen[-1].strip() if chosen else None

    def connect_kwargs(self, dbname: str, user: str) -> dict[str, object]:
        return {
            "host": str(self.socket_dir),
            "port": self.port,
            "dbname": dbname,
            "user": user,
            "connect_timeout": 5,
            "application_name": "recoverctl-drill",
        }

    def detach_subscriptions(self, user: str, dbname: str) -> list[dict[str, str | None]]:
        """Disable the copy's logical-replication subscriptions and detach them from production's
        slots, before any check runs; return what was detached. Raise DrillError when it fails."""

        def connect(db: str, role: str) -> psycopg.Connection[Any]:
            return psycopg.connect(**self.connect_kwargs(db, role), autocommit=True)  # type: ignore[arg-type]

        try:
            return detach_subscriptions(connect, dbname, user)
        except psycopg.Error as e:
            raise DrillError(
                f"cannot disable the subscriptions of the scratch copy on port {self.port}: {str(e).strip()}",
                hint="the drill stops here so the copy never applies changes from production's publisher",
            ) from None

    def wait(
        self, predicate: Callable[[], bool], *, deadline: float, what: str, interval: float = 0.1
    ) -> None:
        """Poll `predicate` until true; raise DrillError when the server died or the deadline passed."""
        while True:
            if predicate():
                return
            if self._died():
                # The log is only complete once the postmaster has exited.
                reason = self.fatal_from_log() or self.log_tail(5) or "no log output"
                raise DrillError(
                    f"scratch server on port {self.port} exited while waiting for {what}: {reason}",
                    hint="the server log is in the drill report; rerun with --keep to inspect the data dir",
                    details={"log_tail": self.log_tail(30)},
                )
            if time.monotonic() >= deadline:
                raise DrillError(
                    f"timed out waiting for {what} on the scratch server (port {self.port})",
                    hint="raise where.timeout in the playbook if the restore is just slow",
                    details={"log_tail": self.log_tail(30)},
                )
            time.sleep(interval)

    def _died(self) -> bool:
        """Return True when the launched server is gone (pg_ctl -W returns before postmaster.pid exists)."""
        if self.state.started_at is None:
            return False
        if self.postmaster_pid() is not None:
            self.state.seen_pid = True
            return False
        if self.state.seen_pid or self.fatal_from_log():
            return True
        return time.monotonic() - self.state.started_at > STARTUP_GRACE_S

    def _launched(self) -> list[int]:
        """Return the pids of live processes started on this data dir (`-D <data_dir>` is on the
        postmaster's command line from its exec, before it writes postmaster.pid)."""
        needle = str(self.data_dir).encode()
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if needle in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Stop the server now (immediate mode) and kill anything left in its session, including a
        postmaster that was launched but has not written postmaster.pid yet."""
        try:
            self._stop_by_pid_file()
        finally:
            if self.state.launching:
                # pg_ctl -W returns before the postmaster writes postmaster.pid: a stop in that
                # window (a Ctrl-C just after the launch) would otherwise leave it running.
                # Scan again until none is left: a process caught mid-exec can outlive its signal.
                deadline = time.monotonic() + 10
                while (launched := self._launched()) and time.monotonic() < deadline:
                    for pid in launched:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL)
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(0.05)

    def _stop_by_pid_file(self) -> None:
        pid = self.postmaster_pid()
        if pid is None and not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            self._as_user(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]
            ),
            capture_output=True,
            env=self.env(),
        )
        if pid is not None:
            # pg_ctl starts the postmaster in its own session: this also reaps restore_command children.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        self.state.pid = None

    def cleanup(self, *, force: bool = False) -> bool:
        """Stop the server and remove the workspace unless keeping it; return True when removed."""
        if self.keep and not force:
            self.stop()
            stop_fetchers(self.data_dir, remove_spools=True)
            remove_secrets(self.data_dir)  # a kept copy is for inspection: no passphrase in it
            return False
        try:
            self.stop()
        finally:
            # The WAL fetcher also exits when its spool vanishes; stopping it first keeps it from
            # writing into the tree while it is being removed. One that restore_command spawned
            # just before the stop can write its pid file only after stop_fetchers has looked,
            # and then keeps its spool alive: look again until the tree is gone.
            deadline = time.monotonic() + WORKSPACE_REMOVAL_S
            while True:
                stop_fetchers(self.data_dir)
                shutil.rmtree(self.workspace, ignore_errors=True)
                if not self.workspace.exists() or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        return not self.workspace.exists()
