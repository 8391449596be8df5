"""WAL outages (catalog/wal.py): opened by a failed archive attempt, extended by the next ones,
closed by the next success after their start; read back as the timeline's WAL gaps, the status's
RPO item and the failure counter /metrics exports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recoverctl.actions.incidents import show_incident
from recoverctl.actions.status import status
from recoverctl.catalog import Catalog, incidents
from recoverctl.catalog.timeline import TimelineQuery, timeline
from recoverctl.catalog.wal import failures_totals, outages, record_archived, record_failed
from recoverctl.config import parse_config
from recoverctl.console.views import incident_page
from recoverctl.service.annotations import annotation
from recoverctl.service.metrics import CatalogCollector

SEG = "0000000100000000000000{:02X}"
T0 = 1_000_000.0


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    yield c
    c.close()


def test_an_outage_opens_on_failure_extends_and_closes_on_the_next_success(catalog: Catalog) -> None:
    record_archived(catalog, "main", SEG.format(1), T0)
    record_failed(catalog, "main", SEG.format(2), T0 + 10, "unable to write 'wal/main/x': Permission denied")
    record_failed(catalog, "main", SEG.format(2), T0 + 20)
    record_failed(catalog, "main", SEG.format(3), T0 + 30, "still denied")
    (open_,) = outages(catalog)
    assert open_.ongoing and open_.duration(T0 + 40) == 30.0
    assert (open_.last_good_segment, open_.first_failed_segment, open_.last_failed_segment) == (
        SEG.format(1),
        SEG.format(2),
        SEG.format(3),
    )
    assert (open_.failures, open_.error, open_.last_failed_at) == (3, "still denied", T0 + 30)
    # A success dated before the outage began (a receiver's safe point lagging) does not end it.
    record_archived(catalog, "main", SEG.format(1), T0 + 5)
    assert outages(catalog)[0].ongoing
    record_archived(catalog, "main", SEG.format(3), T0 + 50, count=2)
    (closed,) = outages(catalog)
    assert (closed.ended_at, closed.resumed_segment, closed.failures) == (T0 + 50, SEG.format(3), 3)
    # The next failure opens a second outage; a source that never archived gets one too.
    record_failed(catalog, "main", SEG.format(4), T0 + 60, "again")
    record_failed(catalog, "other", SEG.format(1), T0 + 70)
    assert [(o.source, o.ongoing) for o in outages(catalog)] == [
        ("other", True),
        ("main", True),
        ("main", False),
    ]
    assert failures_totals(catalog) == {"main": 4, "other": 1}
    assert [o.id for o in outages(catalog, sources=["main"], overlapping=(T0 + 55, T0 + 58))] == []
    assert len(outages(catalog, sources=["main"], overlapping=(T0 + 45, None))) == 2
    # Outages are no events: the incident about failing archiving is the escalation pass's.
    assert incidents.list_incidents(catalog) == []


def test_wal_gaps_on_the_timeline_the_status_and_annotations(catalog: Catalog) -> None:
    record_archived(catalog, "main", SEG.format(1), T0)
    record_failed(catalog, "main", SEG.format(2), T0 + 10, "denied")
    record_archived(catalog, "main", SEG.format(2), T0 + 70)
    record_failed(catalog, "main", SEG.format(3), T0 + 100, "https://u:hunter2secret@s3.example/b refused")

    gaps = timeline(catalog, TimelineQuery(kinds=["wal"])).entries
    assert [(g.at, g.until, g.status) for g in gaps] == [
        (T0 + 100, None, "ongoing"),
        (T0 + 10, T0 + 70, "ended"),
    ]
    assert gaps[1].details["duration_s"] == 60.0 and gaps[1].details["first_failed_segment"] == SEG.format(2)
    assert "WAL gap: archiving failed 1 time" in gaps[1].summary and "denied" in gaps[1].summary
    assert "hunter2secret" not in gaps[0].summary
    # A gap begun before the range but lasting into it is in the range; one ended before is not.
    assert [g.at for g in timeline(catalog, TimelineQuery(kinds=["wal"], since=T0 + 50)).entries] == [
        T0 + 100,
        T0 + 10,
    ]
    assert [g.at for g in timeline(catalog, TimelineQuery(kinds=["wal"], since=T0 + 80)).entries] == [
        T0 + 100
    ]
    assert timeline(catalog, TimelineQuery(kinds=["wal"], subject="other")).entries == []

    region = annotation(gaps[1])
    assert (region["time"], region["timeEnd"], region["isRegion"]) == (
        int((T0 + 10) * 1000),
        int((T0 + 70) * 1000),
        True,
    )
    assert annotation(gaps[0], now=T0 + 130)["timeEnd"] == int((T0 + 130) * 1000)

    cfg = parse_config({"sources": {"main": {"type": "postgres", "tier": "critical"}}}, env={})
    rpo = status(cfg, catalog, now=T0 + 160).sources[0].items["rpo"]
    assert rpo.status == "amber" and rpo.values["wal_gap"]["started_at"] == T0 + 100
    assert f"WAL archiving failing since segment {SEG.format(3)} (1 failed attempt over 1m00s" in rpo.reason

    families = {m.name: m for m in CatalogCollector(cfg, catalog).collect()}
    failures = families["recoverctl_wal_push_failures"]
    assert [(s.name, s.labels, s.value) for s in failures.samples] == [
        ("recoverctl_wal_push_failures_total", {"source": "main"}, 2.0)
    ]


def test_an_incident_about_the_source_shows_the_gaps_overlapping_it(catalog: Catalog) -> None:
    record_archived(catalog, "main", SEG.format(1), T0 - 100)
    record_failed(catalog, "main", SEG.format(1), T0 - 90, "long over")  # ends before the incident
    record_archived(catalog, "main", SEG.format(1), T0 - 80)
    record_failed(catalog, "main", SEG.format(2), time.time() - 5, "denied")
    found, _ = incidents.open_for_subject(
        catalog, "wal.archive_failed", "critical", "main", "source", "WAL archiving of 'main' fails", {}
    )
    record_archived(catalog, "main", SEG.format(2), time.time() + 1)
    shown = show_incident(catalog, found)
    kinds = [item.kind for item in shown.timeline]
    assert kinds.count("wal.gap.started") == 1 and kinds.count("wal.gap.ended") == 1
    started = next(i for i in shown.timeline if i.kind == "wal.gap.started")
    assert "denied" in started.summary and started.offset_s < 0  # it began before the incident opened
    page = [e.kind for e in incident_page(catalog, found).timeline]
    assert page.index("wal.gap.started") < page.index("wal.gap.ended")
