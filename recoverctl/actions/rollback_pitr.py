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
from pathlib import Path
from typing import Any

from recoverctl.catalog import Catalog
from recoverctl.config import Config, PostgresSource, repository_password
from recoverctl.errors import ConfigError, UsageError


def restore_to_point(
    cfg: Config, catalog: Catalog, source: str, restore_point: str, restore_lsn: str, tag: str
) -> dict[str, Any]:
    """Restore the PostgreSQL `source` to `restore_point` in place; return what was done.

    Raise ConfigError (no data_dir / repository password), RecoverctlError (WAL not archived,
    server would not start), VerificationError (recovery stopped before the restore point).
    """
    from recoverctl.actions.restore_postgres import RecoveryTarget, restore_postgres
    from recoverctl.sources.postgres.inplace import (
        archive_restore_point,
        bin_dir_of,
        move_aside,
        start_restored,
    )
    from recoverctl.sources.postgres.server import default_os_user

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
        bin_dir = archive_restore_point(src, name, restore_point, restore_lsn)
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
        move_aside(data_dir, aside, bin_dir, user)
    else:
        bin_dir = bin_dir_of(src, aside)
    if not data_dir.exists():
        fresh.rename(data_dir)
    recovery_s = start_restored(src, name, data_dir, fresh, aside, bin_dir, user, restore_point)
    out["recovery_s"] = round(recovery_s, 3)
    return out
