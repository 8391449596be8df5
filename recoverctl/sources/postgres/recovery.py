"""Recovery targets and the recovery configuration a restored data directory starts with."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from recoverctl.errors import UsageError
from recoverctl.repo.confined import read_file, write_file
from recoverctl.sources.postgres.walnames import format_lsn, parse_lsn

TARGET_KINDS = ("latest", "immediate", "time", "lsn", "name", "xid")
TARGET_ACTIONS = ("promote", "pause", "shutdown")
_BLOCK_START = "# --- recovery settings written by recoverctl restore ---"
# Every setting that says where recovery stops. All are written (empty when unused): a target left
# in production's configuration would otherwise add a second target to ours.
TARGET_SETTINGS = (
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_timeline",
    "recovery_target_action",
    "recovery_target_inclusive",
)


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: kind in latest/immediate/time/lsn/name/xid, value for the last four."""

    kind: str = "latest"
    value: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise UsageError(
                f"unknown recovery target kind '{self.kind}'", hint=f"use one of: {', '.join(TARGET_KINDS)}"
            )
        if self.kind in ("time", "lsn", "name", "xid") and not self.value:
            raise UsageError(f"recovery target '{self.kind}' needs a value")

    def describe(self) -> str:
        return self.kind if self.value is None else f"{self.kind} {self.value}"


def parse_target_time(text: str) -> datetime:
    """Given ISO 8601 or PostgreSQL timestamptz text ('2026-11-27 01:53:20.12+00'), return an aware
    datetime; raise UsageError for other text or a time without a zone (ambiguous across hosts)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"cannot parse target time '{text}'",
            hint="use ISO 8601 with a zone, e.g. 2026-11-27T01:53:20Z or '2026-11-27 01:53:20.12+00'",
        ) from None
    if value.tzinfo is None:
        raise UsageError(
            f"target time '{text}' has no time zone",
            hint="add the zone (Z, +00, +02:00): a bare time means different moments on different hosts",
        )
    return value


def normalize_target(target: RecoveryTarget) -> RecoveryTarget:
    """Validate the target's value and return it in the form PostgreSQL accepts; raise UsageError."""
    if target.kind == "time":
        assert target.value is not None
        return RecoveryTarget("time", parse_target_time(target.value).isoformat(sep=" "))
    if target.kind == "lsn":
        assert target.value is not None
        try:
            return RecoveryTarget("lsn", format_lsn(parse_lsn(target.value)))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if target.kind == "xid":
        assert target.value is not None
        if not target.value.isdigit():
            raise UsageError(f"transaction id '{target.value}' is not a number")
    return target


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def recovery_settings(restore_command: str, target: RecoveryTarget, target_action: str) -> dict[str, str]:
    """Return the postgresql.conf settings for archive recovery to `target`."""
    if target_action not in TARGET_ACTIONS:
        raise UsageError(
            f"unknown target action '{target_action}'", hint=f"use one of: {', '.join(TARGET_ACTIONS)}"
        )
    settings = {"restore_command": restore_command} | {k: "" for k in TARGET_SETTINGS}
    settings |= {"recovery_target_timeline": "latest", "recovery_target_inclusive": "on"}
    settings["recovery_target_action"] = target_action
    # The chosen target goes last: PostgreSQL refuses emptying another kind once one is set.
    if target.kind == "immediate":
        del settings["recovery_target"]
        settings["recovery_target"] = "immediate"
    elif target.kind != "latest":
        assert target.value is not None
        del settings[f"recovery_target_{target.kind}"]
        settings[f"recovery_target_{target.kind}"] = target.value
    return settings


def write_recovery_config(data_dir: Path, settings: dict[str, str]) -> None:
    """Append `settings` to postgresql.auto.conf (replacing an earlier recoverctl block) and create
    recovery.signal, so the server starts in archive recovery.

    Both are written inside `data_dir` even when a restored snapshot put symlinks at their names:
    a symlink is replaced, never followed, and its target is not read."""
    text = (read_file(data_dir, "postgresql.auto.conf") or b"").decode()
    if _BLOCK_START in text:
        text = text[: text.index(_BLOCK_START)]
    lines = [_BLOCK_START, *(f"{k} = {_quote(v)}" for k, v in settings.items())]
    write_file(
        data_dir, "postgresql.auto.conf", (text.rstrip("\n") + "\n" + "\n".join(lines) + "\n").encode()
    )
    write_file(data_dir, "recovery.signal", b"")


def read_recovery_config(data_dir: Path) -> dict[str, str] | None:
    """Return the settings of the block `write_recovery_config` wrote, or None when there is none."""
    auto = data_dir / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    if _BLOCK_START not in text:
        return None
    out: dict[str, str] = {}
    for line in text[text.index(_BLOCK_START) :].splitlines()[1:]:
        name, sep, value = line.partition(" = ")
        if sep and value.startswith("'") and value.endswith("'"):
            out[name.strip()] = value[1:-1].replace("''", "'")
    return out


def shell_join(argv: list[str]) -> str:
    """Join argv into one shell command line; PostgreSQL runs restore/archive commands via sh -c."""
    return " ".join(a if a in ("%f", "%p", '"%p"') else shlex.quote(a) for a in argv)
