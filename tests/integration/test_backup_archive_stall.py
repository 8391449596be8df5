"""A backup whose stop segment never reaches the archive names the segment and the archiver state."""

from __future__ import annotations

import pytest

from tests.fixtures.net import wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster

pytestmark = pytest.mark.integration


def test_backup_names_the_segment_and_the_failing_archive_command(pg_cli: PgCli) -> None:
    pg = PgCluster()
    try:
        # Looks like our command (the backup's configuration check passes) but always fails.
        failing = f"test -e /nonexistent-recoverctl && {pg_cli.archive_command('main')}"
        pg.initdb(f"archive_mode = on\narchive_command = '{failing}'\n")
        pg_cli.write_config({"main": pg.source_config(wal_wait="3s")})
        pg_cli("init", check=0)
        pg.start()
        pg.psql("select pg_switch_wal()")
        wait_until(
            lambda: int(pg.psql("select failed_count from pg_stat_archiver").strip() or 0) > 0,
            timeout=60,
            what="the archiver to report a failure",
        )
        r = pg_cli("--json", "backup", "postgres", "--type", "full", check=13)
        err = r.error_json()
        segment = err["details"]["segment"]
        assert (
            f"WAL segment {segment} of source 'main' did not reach the repository within 3.0s"
            in err["message"]
        )
        assert "archive_command last failed on 0000000" in err["message"]
        assert "the archiver last archived nothing" in err["message"]
        assert err["details"]["archiver"]["failed_count"] >= 1
        assert err["details"]["archiver"]["queued"] >= 1
        assert "archive_command is failing" in err["hint"]
    finally:
        pg.destroy()
