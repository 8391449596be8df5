import os
from pathlib import Path

from recoverctl.sources.postgres.files import walk_data_dir


def test_documented_exclusions(tmp_path: Path) -> None:
    d = tmp_path / "data"
    for sub in (
        "base/5",
        "global",
        "pg_wal/archive_status",
        "pg_replslot/slot1",
        "pg_stat_tmp",
        "pg_subtrans",
        "pg_notify",
        "base/pgsql_tmp",
        "pg_tblspc",
    ):
        (d / sub).mkdir(parents=True)
    files = {
        "PG_VERSION": "15", "postgresql.conf": "", "postmaster.pid": "1", "postmaster.opts": "",
        "backup_label": "", "recovery.signal": "", "pg_wal/000000010000000000000001": "x",
        "pg_replslot/slot1/state": "x", "pg_stat_tmp/db.stat": "x", "pg_subtrans/0000": "x",
        "base/5/1259": "x", "base/5/1259_fsm": "x", "base/5/16384": "x", "base/5/16384.1": "x",
        "base/5/16384_fsm": "x", "base/5/16384_init": "x", "base/5/t3_16400": "x",
        "base/5/pg_internal.init": "x", "base/pgsql_tmp/pgsql_tmp123.0": "x", "global/pg_control": "x",
    }  # fmt: skip
    for name, body in files.items():
        (d / name).write_text(body)
    ts = tmp_path / "ts"
    (ts / "PG_15_1/5").mkdir(parents=True)
    (ts / "PG_15_1/5/20000").write_text("x")
    os.symlink(ts, d / "pg_tblspc/20001")

    got = {f.path: f for f in walk_data_dir(d)}
    for kept in (
        "PG_VERSION",
        "base/5/1259",
        "base/5/1259_fsm",
        "base/5/16384_init",
        "global/pg_control",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_replslot",
        "pg_stat_tmp",
        "pg_tblspc/20001/PG_15_1/5/20000",
    ):
        assert kept in got, kept
    for dropped in (
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "recovery.signal",
        "pg_wal/000000010000000000000001",
        "pg_replslot/slot1",
        "pg_stat_tmp/db.stat",
        "pg_subtrans/0000",
        "base/5/16384",
        "base/5/16384.1",
        "base/5/16384_fsm",
        "base/5/t3_16400",
        "base/5/pg_internal.init",
        "base/pgsql_tmp",
    ):
        assert dropped not in got, dropped
    assert got["pg_tblspc/20001"].link_target == str(ts)
    assert got["base/5/1259"].is_relation and not got["PG_VERSION"].is_relation
    assert got["pg_tblspc/20001/PG_15_1/5/20000"].is_relation


def test_archiver_stores_tablespace_contents_with_the_same_exclusions(tmp_path: Path) -> None:
    from recoverctl.repo import Repository, backup_tree
    from recoverctl.repo.reader import walk
    from recoverctl.sources.postgres.backup import _is_tablespace_link
    from recoverctl.sources.postgres.files import Exclusions
    from recoverctl.storage.local import LocalStorage

    d = tmp_path / "data"
    (d / "pg_tblspc").mkdir(parents=True)
    (d / "PG_VERSION").write_text("15")
    ts = tmp_path / "ts"
    (ts / "PG_15_1/5/pgsql_tmp").mkdir(parents=True)
    for name in ("20000", "20000_fsm", "30000", "30000_init", "t3_16400", "pgsql_tmp/pgsql_tmp1.0"):
        (ts / "PG_15_1/5" / name).write_text("x")
    os.symlink(ts, d / "pg_tblspc/20001")
    repo = Repository.init(
        LocalStorage(tmp_path / "repo"), "pw", kdf={"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
    )
    result = backup_tree(repo, d, exclude=Exclusions(d), follow_symlinks=_is_tablespace_link)
    snap = repo.load_snapshot(str(result.snapshot_id))
    stored = {path.lstrip("/"): node["type"] for path, node in walk(repo, snap.tree)}
    assert stored["pg_tblspc/20001"] == "dir"
    assert {p for p in stored if p.startswith("pg_tblspc/20001/PG_15_1/5/")} == {
        "pg_tblspc/20001/PG_15_1/5/20000",
        "pg_tblspc/20001/PG_15_1/5/20000_fsm",
        "pg_tblspc/20001/PG_15_1/5/30000_init",
    }
