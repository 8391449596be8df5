"""Where a physical restore puts tablespaces: the map PostgreSQL reads, remapping, refusals."""

from __future__ import annotations

import pytest

from recoverctl.errors import UsageError
from recoverctl.repo import Snapshot
from recoverctl.sources.postgres.layout import escape_map_path, parse_tablespace_map, tablespace_plan


def _snap(spcmap: str, tablespaces: list[dict[str, object]]) -> Snapshot:
    return Snapshot(time=0.0, kind="postgres", tree="00", paths=["/d"],
                    metadata={"tablespace_map": spcmap, "tablespaces": tablespaces})  # fmt: skip


def test_map_round_trips_escaped_paths() -> None:
    odd = "/srv/a b\\c\nd"
    text = f"16384 /srv/fast\n16385 {escape_map_path(odd)}\n"
    assert parse_tablespace_map(text) == [("16384", "/srv/fast"), ("16385", odd)]


def test_plan_remaps_by_name_or_oid_and_refuses_unknown_and_shared_dirs() -> None:
    snap = _snap(
        "16384 /srv/fast\n16385 /srv/slow\n",
        [
            {"oid": 16384, "name": "fast", "location": "/srv/fast"},
            {"oid": 16385, "name": "slow", "location": "/srv/slow"},
        ],
    )
    plan = tablespace_plan(snap, {"fast": "/new/fast", "16385": "/new/slow"})
    assert [(t["oid"], t["name"], t["location"], t["original"]) for t in plan] == [
        (16384, "fast", "/new/fast", "/srv/fast"),
        (16385, "slow", "/new/slow", "/srv/slow"),
    ]
    assert [t["location"] for t in tablespace_plan(snap, None)] == ["/srv/fast", "/srv/slow"]
    with pytest.raises(UsageError, match=r"'nope'.*not a tablespace"):
        tablespace_plan(snap, {"nope": "/x"})
    with pytest.raises(UsageError, match="both be restored"):
        tablespace_plan(snap, {"fast": "/srv/slow"})
    with pytest.raises(UsageError, match="absolute"):
        tablespace_plan(snap, {"fast": "rel/dir"})
