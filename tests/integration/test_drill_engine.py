"""Drills against real PostgreSQL recoveries (pg_basebackup + archived WAL), without the repository."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from recoverctl.drill import engine
from recoverctl.drill.playbook import parse_playbook
from tests.conftest import ROOT
from tests.fixtures.drill_sources import (
    ArchivedSource,
    BaseBackupRestorer,
    DrillSourceState,
    drill_leftovers,
)
from tests.fixtures.net import wait_until

pytestmark = pytest.mark.integration


def _playbook(parent: Path, **drill: Any) -> Any:
    body: dict[str, Any] = {
        "name": "main-nightly",
        "source": "main",
        "recovery_point": "latest",
        "checks": [{"sql": "select count(*) from t", "expect": ">= 1"}],
        "targets": {"rto": "2h", "rpo": "1h"},
        "where": {"temp_dir": str(parent)},
    }
    body.update(drill)
    return parse_playbook({"drill": body})


def _assert_clean(parent: Path) -> None:
    assert list(parent.iterdir()) == [], f"drill left files behind: {list(parent.iterdir())}"
    assert drill_leftovers(str(parent)) == []


def _run(
    src: ArchivedSource, parent: Path, tmp_path: Path, restorer: Any = None, **drill: Any
) -> dict[str, Any]:
    cfg = parse_config(src.config())
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    pb = _playbook(parent, **drill)
    return engine.execute(cfg, catalog, pb, restorer)


def test_drill_passes_with_measured_rto_rpo_and_cleans_up(
    backed_up_source: DrillSourceState, drill_parent: Path, tmp_path: Path
) -> None:
    src, backup, last_commit = backed_up_source.source, backed_up_source.backup, backed_up_source.last_commit
    restorer = BaseBackupRestorer(backup, src.archive)
    result = _run(
        src,
        drill_parent,
        tmp_path,
        restorer,
        checks=[
            {"sql": "select count(*) from t", "expect": "== 150"},
            {"sql": "select 1, 'x'", "expect": [1, "x"]},
            {"freshness": {"table": "t", "column": "created_at", "tolerance": "5m"}},
            {"row_counts": {"tables": ["t"], "tolerance": "60%"}},
        ],
    )
    assert result["verdict"] == "pass", result["reason"]
    assert list(result["phases"]) == ["select", "fetch", "recovery", "startup", "checks"]
    assert all(v >= 0 for v in result["phases"].values())
    # RTO covers every phase: it cannot be shorter than their sum.
    assert result["rto_s"] >= sum(result["phases"].values()) - 0.01
    assert result["rto_target_s"] == 7200 and result["rpo_target_s"] == 3600
    # The recovered point is the post-backup insert's commit (replayed from the archive).
    assert result["recovered_commit_ts"] == pytest.approx(last_commit, abs=2)
    assert result["rpo_s"] == pytest.approx(result["started_at"] - result["recovered_commit_ts"], abs=0.01)
    assert result["rpo_basis"] == "recovered last commit"
    kinds = [c["kind"] for c in result["checks"]]
    assert kinds == ["amcheck", "sql", "sql", "freshness", "row_counts"]
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    assert "t: 150 rows, 100 at backup" in result["checks"][-1]["output"]
    _assert_clean(drill_parent)
    # The production cluster is untouched and still serving.
    assert src.cluster.psql("select count(*) from t") == "150"
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.drills)).one()
        assert row.verdict == "pass" and row.rto_s == result["rto_s"]
        # The pin lives only for the drill's duration.
        assert conn.execute(sa.select(sa.func.count()).select_from(t.pins)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(t.events)).scalar_one() == 0


def test_failing_assertion_and_tight_rpo_fail_with_reasons_and_event(
    backed_up_source: DrillSourceState, drill_parent: Path, tmp_path: Path
) -> None:
    src, backup = backed_up_source.source, backed_up_source.backup
    result = _run(
        src,
        drill_parent,
        tmp_path,
        BaseBackupRestorer(backup, src.archive),
        amcheck=False,
        checks=[{"sql": "select count(*) from t", "expect": ">= 1000"}],
        targets={"rto": "2h", "rpo": "1ms"},
    )
    assert result["verdict"] == "fail"
    check = result["checks"][0]
    assert not check["ok"] and check["expected"] == ">= 1000" and check["actual"] == 150
    assert "got 150, expected >= 1000" in result["reason"]
    # RPO names the measured value and the target.
    assert f"RPO {result['rpo_s']:.1f}s" in result["reason"] and "target 0s" in result["reason"]
    assert result["rto_s"] is None  # checks did not all pass: no recovery time was achieved
    _assert_clean(drill_parent)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    with catalog.begin() as conn:
        ev = conn.execute(sa.select(t.events)).one()
    assert (ev.kind, ev.severity, ev.subject) == ("drill.failed", "critical", "main")
    assert "got 150, expected >= 1000" in ev.summary


def test_production_port_is_refused(
    backed_up_source: DrillSourceState, drill_parent: Path, tmp_path: Path
) -> None:
    src, backup = backed_up_source.source, backed_up_source.backup
    result = _run(
        src,
        drill_parent,
        tmp_path,
        BaseBackupRestorer(backup, src.archive),
        where={"temp_dir": str(drill_parent), "port": src.cluster.port},
    )
    assert result["verdict"] == "fail" and "is the production port" in result["reason"]
    _assert_clean(drill_parent)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Any:
    mnt = Path(os.environ.get("TMPDIR", "/tmp")) / f"recoverctl-tmpfs-{os.getpid()}-{tmp_path.name}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
    mnt.rmdir()


def test_no_space_precheck_and_enospc_during_fetch(
    backed_up_source: DrillSourceState, small_tmpfs: Path, tmp_path: Path
) -> None:
    src, backup = backed_up_source.source, backed_up_source.backup
    # The snapshot's size is known: refused before writing anything.
    result = _run(
        src,
        small_tmpfs,
        tmp_path,
        BaseBackupRestorer(backup, src.archive),
        where={"temp_dir": str(small_tmpfs)},
    )
    assert result["verdict"] == "fail" and result["failed_phase"] == "fetch"
    assert "not enough free space for the scratch restore" in result["reason"]
    _assert_clean(small_tmpfs)
    # Size unknown: the copy itself hits ENOSPC, reported as such, and the partial copy is removed.
    result = _run(
        src,
        small_tmpfs,
        tmp_path,
        BaseBackupRestorer(backup, src.archive, report_size=False),
        where={"temp_dir": str(small_tmpfs)},
    )
    assert result["verdict"] == "fail" and result["failed_phase"] == "fetch"
    assert "no space left in" in result["reason"]
    _assert_clean(small_tmpfs)


def test_missing_wal_for_target_fails_naming_the_server_error(
    backed_up_source: DrillSourceState, drill_parent: Path, tmp_path: Path
) -> None:
    src, backup = backed_up_source.source, backed_up_source.backup
    # A target time past the end of the archive: PostgreSQL refuses to promote short of it.
    result = _run(
        src,
        drill_parent,
        tmp_path,
        BaseBackupRestorer(backup, src.archive),
        recovery_point="2999-01-01T00:00:00+00:00",
    )
    assert result["verdict"] == "fail" and result["failed_phase"] == "recovery"
    assert "recovery ended before configured recovery target was reached" in result["reason"]
    _assert_clean(drill_parent)


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import sys, pickle
    from pathlib import Path
    from recoverctl.catalog import Catalog
    from recoverctl.config import parse_config
    from recoverctl.drill import engine
    from recoverctl.drill.playbook import parse_playbook
    from recoverctl.errors import CancelledError
    from tests.fixtures.drill_sources import BaseBackup, BaseBackupRestorer

    args = pickle.loads(bytes.fromhex(sys.argv[1]))
    restorer = BaseBackupRestorer(BaseBackup(Path(args["backup"]), 0.0, {}), Path(args["archive"]),
                                  restore_command=args["restore_command"])
    try:
        engine.execute(parse_config(args["config"]), Catalog(args["catalog"]),
                       parse_playbook({"drill": args["drill"]}), restorer)
    except CancelledError as e:
        print("cancelled:", e, flush=True)
        sys.exit(130)
    sys.exit(0)
    """
)


def test_sigterm_mid_recovery_leaves_no_process_and_no_dir(
    backed_up_source: DrillSourceState, drill_parent: Path, tmp_path: Path
) -> None:
    # SIGINT is covered end to end in tests/e2e/test_drill_story.py; both share one handler.
    import pickle

    src, backup = backed_up_source.source, backed_up_source.backup
    marker = f"{drill_parent}/never-there"
    # Recovery blocks in restore_command: the server is mid-recovery when the signal arrives.
    args = {
        "backup": str(backup.path),
        "archive": str(src.archive),
        "restore_command": f"sleep 600 || test -f {marker}",
        "config": src.config(),
        "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
        "drill": {"name": "sig", "source": "main", "where": {"temp_dir": str(drill_parent)}},
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT, pickle.dumps(args).hex()],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: drill_leftovers(marker), timeout=60, what="recovery to block in restore_command")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out.decode()
    assert b"cancelled: drill cancelled by SIGTERM" in out
    _assert_clean(drill_parent)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.drills)).one()
        assert row.verdict == "cancelled" and "recovery" in row.reason
        assert conn.execute(sa.select(sa.func.count()).select_from(t.pins)).scalar_one() == 0


def test_keep_leaves_the_stopped_data_dir_for_inspection(
    backed_up_source: DrillSourceState, drill_parent: Path, tmp_path: Path
) -> None:
    src, backup = backed_up_source.source, backed_up_source.backup
    cfg = parse_config(src.config())
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    pb = _playbook(drill_parent, amcheck=False)
    result = engine.execute(cfg, catalog, pb, BaseBackupRestorer(backup, src.archive), keep=True)
    assert result["verdict"] == "pass", result["reason"]
    kept = result["details"]["kept"]
    data_dir = Path(kept["data_dir"])
    assert (data_dir / "PG_VERSION").exists() and not (data_dir / "postmaster.pid").exists()
    assert "pg_ctl -D" in kept["start"]
    # Kept means the files, never a running server.
    assert drill_leftovers(str(drill_parent)) == []
