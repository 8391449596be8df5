"""The command-line settings that seal a restored copy survive pg_ctl's trip through sh intact."""

from __future__ import annotations

import shlex
from pathlib import Path

from recoverctl.sources.postgres.isolation import command_line, isolation_settings


def test_command_line_reaches_postgres_as_one_argument_per_setting() -> None:
    settings = {
        "primary_conninfo": "",
        "unix_socket_directories": "/tmp/a dir/with 'quotes'",
        "restore_command": 'env A=$HOME `x` "%p"',
    }
    # pg_ctl runs `postgres <options>` with /bin/sh: each value must come out verbatim.
    assert shlex.split(command_line(settings)) == [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]


def test_the_copy_never_streams_applies_or_archives() -> None:
    s = isolation_settings(Path("/scratch/data"))
    assert s["data_directory"] == "/scratch/data"
    assert (s["primary_conninfo"], s["primary_slot_name"], s["max_logical_replication_workers"]) == (
        "",
        "",
        "0",
    )
    assert (s["archive_mode"], s["recovery_end_command"], s["external_pid_file"]) == ("off", "", "")
