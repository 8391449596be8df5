from pathlib import Path

import pytest

from recoverctl.errors import UsageError
from recoverctl.sources.postgres.recovery import (
    RecoveryTarget,
    normalize_target,
    parse_target_time,
    read_recovery_config,
    recovery_settings,
    write_recovery_config,
)


@pytest.mark.parametrize(
    "text",
    ["2026-11-27 01:53:20.123456+00", "2026-11-27T01:53:20Z", "2026-11-27 03:53:20.123456+02:00"],
)
def test_target_time_accepts_iso_and_timestamptz_text(text: str) -> None:
    assert parse_target_time(text).utcoffset() is not None


def test_target_time_without_zone_is_refused() -> None:
    with pytest.raises(UsageError, match="no time zone"):
        parse_target_time("2026-11-27 01:53:20")
    with pytest.raises(UsageError, match="cannot parse"):
        parse_target_time("yesterday")


def test_normalize_checks_values() -> None:
    assert normalize_target(RecoveryTarget("lsn", "0/3000028")).value == "0/3000028"
    with pytest.raises(UsageError):
        normalize_target(RecoveryTarget("lsn", "nope"))
    with pytest.raises(UsageError):
        normalize_target(RecoveryTarget("xid", "12a"))
    with pytest.raises(UsageError):
        RecoveryTarget("sometime", None)
    with pytest.raises(UsageError):
        RecoveryTarget("name", None)


def test_settings_per_target_kind() -> None:
    # Every target setting is written, empty when unused: a stale target in the restored
    # configuration (recovery_target_name left from an earlier PITR) cannot add a second target.
    assert recovery_settings("cmd", RecoveryTarget("latest"), "promote") == {
        "restore_command": "cmd",
        "recovery_target": "",
        "recovery_target_lsn": "",
        "recovery_target_name": "",
        "recovery_target_time": "",
        "recovery_target_xid": "",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
        "recovery_target_inclusive": "on",
    }
    s = recovery_settings("cmd", RecoveryTarget("name", "rel-1"), "pause")
    assert s["recovery_target_name"] == "rel-1" and s["recovery_target_action"] == "pause"
    # PostgreSQL refuses to empty one target kind after another was set: the chosen one goes last.
    assert list(s)[-1] == "recovery_target_name"
    assert recovery_settings("cmd", RecoveryTarget("immediate"), "promote")["recovery_target"] == "immediate"
    with pytest.raises(UsageError):
        recovery_settings("cmd", RecoveryTarget("latest"), "explode")


def test_written_config_replaces_earlier_block(tmp_path: Path) -> None:
    (tmp_path / "postgresql.auto.conf").write_text("work_mem = '8MB'\n")
    write_recovery_config(tmp_path, {"restore_command": "a 'quoted' cmd"})
    write_recovery_config(tmp_path, {"restore_command": "second"})
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert "work_mem = '8MB'" in text
    assert "restore_command = 'second'" in text and "quoted" not in text
    assert (tmp_path / "recovery.signal").exists()
    assert read_recovery_config(tmp_path) == {"restore_command": "second"}
    write_recovery_config(tmp_path, {"restore_command": "it's"})
    assert read_recovery_config(tmp_path) == {"restore_command": "it's"}
