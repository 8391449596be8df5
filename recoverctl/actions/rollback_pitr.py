"""Bring the linked database back to a deploy's restore point: restore beside, swap in, start.

The data directory is restored from the repository into `<data_dir>.pitr-<tag>` while the old
server still runs (so the slow part costs no extra downtime), then the old server is stopped,
its directory renamed to `<data_dir>.before-<tag>` (kept: nothing is deleted) and the restored
one renamed into place and started with its own configuration; it replays WAL to the restore
point and promotes. Each stage checks what the previous run left, so a resumed rollback
continues where it stopped. A step of the rollback use case (`rollback --schema pitr`), built on
the `restore postgres` one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from recoverctl.catalog import Catalog
from recoverctl.config import Config, PostgresSource, repository_password
from recoverctl.errors import ConfigError, RecoverctlError, UsageError, VerificationError

_ARCHIVE_TIMEOUT = 120.0
_RECOVERY_TIMEOUT = 3600.0


def restore_to_point(
    cfg: Config, catalog: Catalog, source: str, restore_point: str, restore_lsn: str, tag: str
) -> dict[str, Any]:
    """Restore the PostgreSQL `source` to `restore_point` in place; return what was done.

    Raise ConfigError (no data_dir / repository password), RecoverctlError (WAL not archived,
    server would not start), VerificationError (recovery stopped before the restore point).
    """
    from recoverctl.actions.restore_postgres import RecoveryTarget, restore_postgres
    from recoverctl.sources.postgres.connection import connect, find_bin_dir, server_major
    from recoverctl.sources.postgres.server import (
        default_os_user,
        log_path,
        postmaster_pid,
        remove_secrets,
        server_failure,
        start_server,
        stop_server,
        wait_for,
    )

    name, src = cfg.source(source, "postgres")
    assert isinstance(src, PostgresSource)
    if not src.data_dir:
        raise ConfigError(
            f"--schema pitr needs sources.{name}.data_dir (the directory to restore in place)",
            hint="set data_dir, or use --schema downgrade / keep",
        )
    password = repository_password(cfg)
    if password is None:
        raise UsageError(
            "--schema pitr needs the repository password",
            hint="set RECOVERCTL_PASSWORD_FILE (or RECOVERCTL_PASSWORD)",
        )
    data_dir = Path(src.data_dir)
    aside = data_dir.with_name(f"{data_dir.name}.before-{tag}")
    fresh = data_dir.with_name(f"{data_dir.name}.pitr-{tag}")
    user = default_os_user(src.os_user)
    out: dict[str, Any] = {"restore_point": restore_point, "data_dir": str(data_dir), "kept": str(aside)}

    if not aside.exists():
        with connect(src, name) as conn:
            bin_dir = find_bin_dir(src, server_major(conn))
            row = conn.execute("select pg_walfile_name(%s::pg_lsn)", (restore_lsn,)).fetchone()
            assert row is not None
            segment = str(row[0])
            # The restore point's record must be in the archive before the server stops.
            conn.execute("select pg_switch_wal()")

            def archived() -> bool:
                r = conn.execute("select coalesce(last_archived_wal, '') from pg_stat_archiver").fetchone()
                return r is not None and str(r[0]) >= segment

            if not wait_for(archived, _ARCHIVE_TIMEOUT, 0.2):
                raise RecoverctlError(
                    f"WAL segment {segment} holding restore point '{restore_point}' was not archived "
                    f"within {_ARCHIVE_TIMEOUT:.0f}s",
                    hint="check archive_command / 'recoverctl status'; nothing was stopped",
                )
        shutil.rmtree(fresh, ignore_errors=True)
        restored = restore_postgres(
            cfg,
            catalog,
            password,
            source=name,
            target_dir=fresh,
            target=RecoveryTarget("name", restore_point),
            target_action="promote",
            os_user=user,
            server_starts=True,
        )
        out["snapshot_id"] = restored.snapshot_id
        stop_server(data_dir, bin_dir, user)
        if postmaster_pid(data_dir) is not None:
            raise RecoverctlError(f"PostgreSQL on '{data_dir}' did not stop", hint="stop it, then --resume")
        data_dir.rename(aside)
    else:
        bin_dir = find_bin_dir(src, int((aside / "PG_VERSION").read_text().split(".")[0]))
    if not data_dir.exists():
        fresh.rename(data_dir)

    began = time.monotonic()
    log = log_path(data_dir)
    if postmaster_pid(data_dir) is None:
        start_server(data_dir, bin_dir, src.port, user)
        # pg_ctl -W returns before the postmaster has written its pid file.
        wait_for(lambda: postmaster_pid(data_dir) is not None, 30.0, 0.05)

    def promoted() -> bool:
        if postmaster_pid(data_dir) is None:
            return True  # the server exited: reported below
        try:
            with connect(src, name, connect_timeout=5) as conn:
                r = conn.execute("select pg_is_in_recovery()").fetchone()
            return r is not None and not r[0]
        except RecoverctlError:
            return False

    recovered = wait_for(promoted, _RECOVERY_TIMEOUT, 0.2)
    remove_secrets(fresh)  # the passphrase file restore_command read, if restore_postgres wrote one
    if not recovered or postmaster_pid(data_dir) is None:
        raise RecoverctlError(
            f"PostgreSQL on '{data_dir}' did not finish recovery: {server_failure(log) or 'timed out'}",
            hint=f"server log: {log}; the previous data directory is kept in '{aside}'",
        )
    text = log.read_text(errors="replace") if log.exists() else ""
    if "recovery stopping" not in text:
        raise VerificationError(
            f"recovery of '{data_dir}' ended without reaching restore point '{restore_point}'",
            hint=f"server log: {log}; the previous data directory is kept in '{aside}'",
        )
    out["recovery_s"] = round(time.monotonic() - began, 3)
    return out
