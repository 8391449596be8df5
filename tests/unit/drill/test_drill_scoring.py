from __future__ import annotations

import random

import pytest

from recoverctl.drill.checks import compare
from recoverctl.drill.scoring import measured_rpo, score
from recoverctl.sources.base import random_time


@pytest.mark.parametrize(
    ("expect", "row", "ok"),
    [
        (">= 1", (5,), True),
        (">= 1", (0,), False),
        ("< 10.5", (10,), True),
        ("== 3", (3,), True),
        ("= 3", (4,), False),
        ("!= 0", (0,), False),
        (3, (3,), True),
        (3, ("3",), True),
        ("abc", ("abc",), True),
        ("abc", ("abd",), False),
        (True, (True,), True),
        (True, (1,), False),
        ([1, "x"], (1, "x"), True),
        ([1, "x"], (1, "y"), False),
        ([1], (1, 2), False),
        (None, (1,), True),
        (">= 1", ("not a number",), False),
    ],
)
def test_compare(expect: object, row: tuple[object, ...], ok: bool) -> None:
    assert compare(expect, row)[0] is ok


def test_compare_names_expected_and_actual() -> None:
    ok, why = compare(">= 1000", (100,))
    assert not ok and why == "got 100, expected >= 1000"
    assert compare(">= 1", None) == (False, "query returned no rows")


def test_rpo_latest_uses_recovered_commit_then_snapshot_time() -> None:
    assert measured_rpo(
        recovery_kind="latest",
        drill_start=1000.0,
        recovered_commit_ts=940.0,
        snapshot_time=900.0,
        last_archived_at=990.0,
    ) == (60.0, "recovered last commit")
    assert measured_rpo(
        recovery_kind="latest",
        drill_start=1000.0,
        recovered_commit_ts=None,
        snapshot_time=900.0,
        last_archived_at=None,
    ) == (100.0, "snapshot time (no commit replayed)")


def test_rpo_targeted_is_archive_exposure() -> None:
    rpo, basis = measured_rpo(
        recovery_kind="time",
        drill_start=1000.0,
        recovered_commit_ts=500.0,
        snapshot_time=900.0,
        last_archived_at=970.0,
    )
    assert (rpo, basis) == (30.0, "archive exposure (last archived WAL)")
    assert measured_rpo(
        recovery_kind="time",
        drill_start=1000.0,
        recovered_commit_ts=None,
        snapshot_time=None,
        last_archived_at=None,
    ) == (None, "unknown")


def test_score_names_value_and_target() -> None:
    ok = [{"name": "c", "ok": True, "output": "fine"}]
    assert score(checks=ok, rto_s=10, rpo_s=10, rto_target_s=7200, rpo_target_s=3600).verdict == "pass"
    s = score(checks=ok, rto_s=9000, rpo_s=5400, rto_target_s=7200, rpo_target_s=3600)
    assert s.verdict == "fail"
    assert "RTO 9000.0s (2h30m) exceeds the target 7200s (2h00m)" in s.reasons
    assert "RPO 5400.0s (1h30m) exceeds the target 3600s (1h00m)" in s.reasons
    bad = [{"name": "rows", "ok": False, "output": "got 0, expected >= 1\nmore"}]
    s = score(checks=bad, rto_s=None, rpo_s=1, rto_target_s=7200, rpo_target_s=3600)
    assert s.reasons[0] == "check 'rows' failed: got 0, expected >= 1"
    s = score(checks=[], rto_s=None, rpo_s=None, rto_target_s=1, rpo_target_s=1, failure="failed at fetch: x")
    assert s.reasons == ["failed at fetch: x"]


def test_random_time_stays_within_window_and_recoverable_range() -> None:
    rng = random.Random(1)
    for _ in range(100):
        v = random_time(100.0, 1000.0, None, rng)
        assert 900.0 <= v <= 1000.0
        assert 950.0 <= random_time(100.0, 1000.0, 950.0, rng) <= 1000.0
    assert random_time(100.0, 1000.0, 2000.0) == 1000.0
