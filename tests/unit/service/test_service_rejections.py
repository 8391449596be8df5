"""Refused hook requests: tallied per group, throttled per address, written as one row per group."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import RejectionLimits
from recoverctl.service import rejections
from recoverctl.service.rejections import RejectionLog


def test_tallies_throttle_and_one_row_per_group(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    log = RejectionLog(catalog, RejectionLimits(flush_every=3600, burst=5, per_second=0.001))
    answers = [log.refuse("generic", "unauthorized", "bad", "10.0.0.1", throttle=True) for _ in range(300)]
    assert answers.count(False) == 5 and answers.count(True) == 295
    # Another address has its own allowance; refusals after authentication never spend it.
    assert not log.refuse("generic", "unauthorized", "bad", "10.0.0.2", throttle=True)
    assert not any(log.refuse("generic", "invalid", "schema", "10.0.0.1", throttle=False) for _ in range(50))
    assert log.flush() == 4 and log.flush() == 0
    with catalog.begin() as conn:
        audit = conn.execute(sa.select(t.audit_log)).all()
        rejected = conn.execute(sa.select(t.alerts).where(t.alerts.c.decision == "rejected")).all()
    counts = {(a.outcome, a.details["peer"]): a.details["count"] for a in audit}
    assert counts == {
        ("unauthorized", "10.0.0.1"): 5,
        ("rate_limited", "10.0.0.1"): 295,
        ("unauthorized", "10.0.0.2"): 1,
        ("invalid", "10.0.0.1"): 50,
    }
    assert len(rejected) == 4 and sum(int(r.labels["count"]) for r in rejected) == 351
    log.close()
    catalog.close()


def test_many_groups_fold_into_one_and_an_outage_keeps_the_tallies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rejections, "MAX_GROUPS", 10)
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    log = RejectionLog(catalog, RejectionLimits(flush_every=3600))
    for i in range(1000):
        log.refuse("alertmanager", "too_large", "big", f"10.0.{i // 256}.{i % 256}", throttle=False)
    assert len(log._pending) == 11  # 10 groups, then the overflow group
    catalog.close()
    broken = Catalog(f"sqlite:///{tmp_path / 'missing' / 'c.db'}", migrate=False)
    log.catalog = broken
    assert log.flush() == 0 and sum(x.count for x in log._pending.values()) == 1000
    log.catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert log.flush() == 11
    log.close()
    log.catalog.close()
