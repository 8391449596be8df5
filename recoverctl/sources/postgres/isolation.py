"""What keeps a restored copy of production from acting like production.

A restored data directory carries production's configuration (postgresql.conf, its `include`s,
postgresql.auto.conf) and catalogs (subscriptions). Started as is, the copy would stream from the
primary, apply a subscription from the production publisher, archive into production's archive,
overwrite production's external pid file, run production's recovery_end_command, or even serve
the data directory a copied `data_directory` names. `isolation_settings` are passed on the
server's command line, which beats every configuration file and every `include`;
`detach_subscriptions` disables the subscriptions in the copy's catalogs once it is writable.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

from recoverctl.errors import RecoverctlError
from recoverctl.sources.postgres.recovery import TARGET_SETTINGS


def isolation_settings(data_dir: Path) -> dict[str, str]:
    """Return the settings that cut a server on `data_dir` off from everything production uses."""
    return {
        # A copied postgresql.conf naming production's data directory would make -D point there.
        "data_directory": str(data_dir),
        "external_pid_file": "",
        # No walreceiver: archive recovery only, never streaming from production's primary.
        "primary_conninfo": "",
        "primary_slot_name": "",
        # No apply workers: a subscription copied from production must not connect to its
        # publisher (nor advance its slot). The subscriptions themselves are detached later.
        "max_logical_replication_workers": "0",
        # Never push WAL into production's archive.
        "archive_mode": "off",
        "archive_command": "",
        # Shell commands of production's that recovery would otherwise run.
        "recovery_end_command": "",
        "archive_cleanup_command": "",
        # Production's certificates (and ssl_passphrase_command) stay unused: loopback only.
        "ssl": "off",
        # Logs go to the file pg_ctl -l names, not to production's syslog or log directory.
        "log_destination": "stderr",
        "logging_collector": "off",
        # Commits never wait for production's synchronous standbys.
        "synchronous_standby_names": "",
    }


def command_line(settings: Mapping[str, str]) -> str:
    """Return `settings` as `-c name=value` options for `pg_ctl -o` (which runs them via sh)."""
    return " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())


def neutralize_signals(data_dir: Path) -> None:
    """Remove standby.signal: a copy of a standby must not start in standby mode."""
    (data_dir / "standby.signal").unlink(missing_ok=True)


def effective_setting(
    bin_dir: Path,
    data_dir: Path,
    settings: Mapping[str, str],
    name: str,
    as_user: Callable[[list[str]], list[str]],
    env: Mapping[str, str] | None = None,
) -> str:
    """Return the value the server would run `name` with, given its files and `settings` on the
    command line (`postgres -C`, which parses every config file and `include` like the server),
    run with `env` (default: ours).

    Raise RecoverctlError when postgres cannot read the configuration.
    """
    argv = [str(bin_dir / "postgres"), "-D", str(data_dir)]
    for k, v in settings.items():
        argv += ["-c", f"{k}={v}"]
    r = subprocess.run(
        as_user([*argv, "-C", name]), capture_output=True, text=True, env=None if env is None else dict(env)
    )
    if r.returncode != 0:
        raise RecoverctlError(
            f"postgres cannot read the configuration of '{data_dir}': {(r.stderr or r.stdout).strip()}",
            hint="the restored postgresql.conf (or a file it includes) is invalid on this host",
        )
    return r.stdout.rstrip("\n")


def recovery_overrides(recovery: Mapping[str, str]) -> dict[str, str]:
    """Given the recovery settings recoverctl wrote, return those to pass on the command line: the
    target settings (`recovery_settings` writes every kind, empty when unused, so a stale target in
    production's files cannot add a second one). restore_command stays in the file: it is checked
    with `effective_setting`, not repeated in `ps`."""
    # In the written order: the chosen target comes after the emptied ones (see recovery_settings).
    return {k: v for k, v in recovery.items() if k in TARGET_SETTINGS}


def detach_subscriptions(
    connect: Callable[[str, str], psycopg.Connection[Any]], dbname: str, user: str
) -> list[dict[str, str | None]]:
    """Disable every subscription and detach it from its slot; return what was detached.

    `connect(dbname, user)` opens an autocommit connection to the copy. pg_subscription is shared,
    but ALTER SUBSCRIPTION works only in the subscription's own database, and only for its owner or
    a superuser: each database is visited as the bootstrap superuser. Disabling never connects to
    the publisher; slot_name = NONE (allowed once disabled) means that no later DROP SUBSCRIPTION
    on the copy can drop production's slot.
    """
    with connect(dbname, user) as conn:
        superuser = conn.execute("select rolname from pg_roles where oid = 10").fetchone()
        rows = conn.execute(
            "select d.datname, s.subname, s.subslotname from pg_subscription s "
            "join pg_database d on d.oid = s.subdbid order by 1, 2"
        ).fetchall()
    assert superuser is not None
    detached: list[dict[str, str | None]] = []
    for database in sorted({r[0] for r in rows}):
        with connect(database, str(superuser[0])) as conn:
            for _, name, slot in (r for r in rows if r[0] == database):
                ident = pgsql.Identifier(name)
                conn.execute(pgsql.SQL("alter subscription {} disable").format(ident))
                conn.execute(pgsql.SQL("alter subscription {} set (slot_name = none)").format(ident))
                detached.append({"database": database, "subscription": name, "slot_name": slot})
    return detached
