"""The archive_command / restore_command lines PostgreSQL runs to call this recoverctl."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from recoverctl.config import ENV_CATALOG, ENV_PASSWORD_FILE, Config
from recoverctl.sources.postgres.recovery import shell_join

# Passed through to the server's commands: where the config, passphrase file and catalog are.
# RECOVERCTL_PASSWORD itself never goes into a PostgreSQL setting (it would be readable there).
_PASS_THROUGH = (ENV_PASSWORD_FILE, ENV_CATALOG, "PYTHONPATH")


def self_argv() -> list[str]:
    """Return the argv that runs this recoverctl by absolute path (script or `python -m`)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "recoverctl" and argv0.exists():
        return [str(argv0.resolve())]
    return [sys.executable, "-m", "recoverctl"]


def wal_argv() -> list[str]:
    """Return the argv of the light WAL entry point (`recoverctl-wal`) by absolute path."""
    full = self_argv()
    if len(full) == 1:
        light = Path(full[0]).with_name("recoverctl-wal")
        if light.exists():
            return [str(light)]
    return [sys.executable, "-m", "recoverctl.cli.wal_entry"]


def recoverctl_command(
    cfg: Config, args: list[str], env: Mapping[str, str] | None = None, argv: list[str] | None = None
) -> str:
    """Return a shell command line running `recoverctl <args>` with this config and environment."""
    env = os.environ if env is None else env
    prefix = [f"{k}={env[k]}" for k in _PASS_THROUGH if env.get(k)]
    argv = list(argv or self_argv())
    if cfg.path is not None:
        argv += ["--config", str(Path(cfg.path).resolve())]
    parts = [*(["env", *prefix] if prefix else []), *argv, *args]
    return shell_join(parts)


def archive_command(cfg: Config, source: str) -> str:
    return recoverctl_command(cfg, ["push", "--source", source, "%p"], argv=wal_argv())


def fetch_argv() -> list[str]:
    """Return the argv of restore_command's entry point: this interpreter with -S -P running
    `recoverctl/cli/wal_fetch_entry.py` by path.

    Most restore_command calls only rename a file the fetcher spooled, so start-up is the cost:
    without `site` (and an editable install's import hooks) and without `-m` (runpy) a served
    call takes ~20 ms of CPU instead of ~90. -P keeps the data directory (the server's working
    directory) off sys.path; the package comes from PYTHONPATH (see `restore_command`), and the
    entry point loads `site` itself when it has to do more than the spool.
    """
    from recoverctl.cli import wal_fetch_entry

    return [sys.executable, "-S", "-P", str(Path(wal_fetch_entry.__file__).resolve())]


def restore_command(cfg: Config, source: str) -> str:
    import recoverctl

    package_root = str(Path(recoverctl.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    return recoverctl_command(cfg, ["fetch", "--source", source, "%f", "%p"], env=env, argv=fetch_argv())
