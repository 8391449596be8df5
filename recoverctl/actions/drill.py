"""Use cases: run restore drills from playbooks, list their history, render a report."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from recoverctl.catalog import Catalog, drills
from recoverctl.catalog.drills import DrillRecord
from recoverctl.config import Config
from recoverctl.drill import engine, snapshot_drill
from recoverctl.drill.playbook import Playbook, discover_playbooks
from recoverctl.drill.report import RENDERERS
from recoverctl.errors import NotFoundError, UsageError
from recoverctl.progress import Progress
from recoverctl.sources.base import DrillFlow

if TYPE_CHECKING:
    from recoverctl.actions.drill_restore import SourceRestorer


class DrillFlowRunner(Protocol):
    """One drill flow of drill/: run a playbook's drill with a restorer; return the result fields."""

    def __call__(
        self,
        cfg: Config,
        catalog: Catalog,
        pb: Playbook,
        restorer: SourceRestorer,
        *,
        keep: bool = False,
        cold: bool = False,
        on_phase: Callable[[str], None] | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DrillResult:
    """One drill's outcome as `drill run` reports it: the flow's result (drill/engine.py `finish`),
    typed. `details` holds what the flow measured on the way (space, workspace, re-hash counts)."""

    id: int | None
    name: str
    source: str | None
    verdict: str  # pass / fail / cancelled
    rto_s: float | None
    rpo_s: float | None
    rto_target_s: float
    rpo_target_s: float
    rpo_basis: str
    phases: dict[str, float]
    checks: list[dict[str, Any]]
    reason: str | None
    failed_phase: str | None
    hint: str | None
    snapshot_id: str | None
    snapshot_time: float | None
    recovery_point: str
    recovery_target: dict[str, Any] | None
    recovered_commit_ts: float | None
    recovered_lsn: str | None
    bytes: int | None
    cold: bool
    started_at: float
    finished_at: float
    details: dict[str, Any]


# The drill flow for each way a Source says its restores are proven (sources/base.py DrillFlow).
FLOWS: dict[DrillFlow, DrillFlowRunner] = {
    "scratch_server": engine.execute,
    "rehash": snapshot_drill.execute,
}


def run_drills(
    cfg: Config,
    catalog: Catalog,
    playbooks: list[Playbook],
    restorer_for: Callable[[Playbook], SourceRestorer],
    *,
    keep: bool = False,
    cold: bool = False,
    on_phase: Callable[[str, str], None] | None = None,
) -> list[DrillResult]:
    """Run each playbook's drill in turn, in the flow its source asks for; return the results (a
    failed drill is a result). Raise DrillInterrupted (exit 130) after cleanup on SIGINT/SIGTERM.
    """
    results = []
    for pb in playbooks:
        announce: Callable[[str], None] | None = None
        if on_phase is not None:
            announce = functools.partial(on_phase, pb.drill.name)
        restorer = restorer_for(pb)
        flow = FLOWS[restorer.source.drill_flow]
        results.append(
            DrillResult(**flow(cfg, catalog, pb, restorer, keep=keep, cold=cold, on_phase=announce))
        )
    return results


@contextlib.contextmanager
def _cold_cache() -> Iterator[None]:
    """Point XDG_CACHE_HOME (inherited by the scratch server and its restore_command) at an empty dir."""
    previous = os.environ.get("XDG_CACHE_HOME")
    empty = tempfile.mkdtemp(prefix="recoverctl-cold-cache-")
    os.chmod(empty, 0o755)
    os.environ["XDG_CACHE_HOME"] = empty
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous
        shutil.rmtree(empty, ignore_errors=True)


def drill_run(
    cfg: Config,
    catalog: Catalog,
    password: Callable[[], str],
    paths: list[str],
    *,
    keep: bool = False,
    cold: bool = False,
    on_phase: Callable[[str, str], None] | None = None,
    progress: Callable[[str], Progress] | None = None,
) -> list[DrillResult]:
    """Given playbook paths (none = the default dirs), run their drills against the repository.

    `password` is asked for only once the playbooks are valid; `progress(label)` gives the display
    of each fetch (the restore's bar or lines).
    Return one result per drill; raise ConfigError for bad playbooks, DrillInterrupted (exit 130)
    after cleanup on SIGINT/SIGTERM.
    """
    books = discover_playbooks(cfg, paths)
    # The restore stack is imported here so history/report/status start without it.
    from recoverctl.actions.drill_restore import SourceRestorer
    from recoverctl.sources.registry import source_for

    secret = password()

    def factory(pb: Playbook) -> SourceRestorer:
        source = source_for(cfg, pb.drill.source, catalog, secret, pb.drill.snapshot)
        return SourceRestorer(cfg, catalog, secret, source, progress)

    with _cold_cache() if cold else contextlib.nullcontext():
        return run_drills(cfg, catalog, books, factory, keep=keep, cold=cold, on_phase=on_phase)


@dataclass(frozen=True)
class DrillHistoryEntry:
    """One past drill as `drill history` lists it, with its margins to target."""

    id: int
    name: str
    source: str | None
    started_at: float
    finished_at: float | None
    verdict: str | None
    snapshot_id: str | None
    recovery_point: str | None
    rto_s: float | None
    rto_target_s: float | None
    rto_margin_s: float | None
    rpo_s: float | None
    rpo_target_s: float | None
    rpo_margin_s: float | None
    phases: dict[str, float]
    bytes: int | None
    reason: str | None

    @classmethod
    def of(cls, d: DrillRecord) -> DrillHistoryEntry:
        return cls(
            id=d.id,
            name=d.name,
            source=d.source,
            started_at=d.started_at,
            finished_at=d.finished_at,
            verdict=d.verdict,
            snapshot_id=d.snapshot_id,
            recovery_point=d.recovery_point,
            rto_s=d.rto_s,
            rto_target_s=d.rto_target_s,
            rto_margin_s=_margin(d.rto_s, d.rto_target_s),
            rpo_s=d.rpo_s,
            rpo_target_s=d.rpo_target_s,
            rpo_margin_s=_margin(d.rpo_s, d.rpo_target_s),
            phases=d.phases or {},
            bytes=d.bytes,
            reason=d.reason,
        )


def drill_history(
    catalog: Catalog, *, name: str | None = None, source: str | None = None, limit: int = 50
) -> list[DrillHistoryEntry]:
    """Return drills oldest first (the newest `limit`), each with RTO/RPO margins to target."""
    newest = drills.newest_drills(catalog, name=name, source=source, limit=limit)
    return [DrillHistoryEntry.of(d) for d in reversed(newest)]


def _margin(value: float | None, target: float | None) -> float | None:
    return None if value is None or target is None else round(target - value, 3)


def get_drill(catalog: Catalog, drill_id: int) -> DrillRecord:
    """Return one drill with everything recorded; raise NotFoundError naming the id."""
    record = drills.drill_record(catalog, drill_id)
    if record is None:
        raise NotFoundError(
            f"no drill #{drill_id} in the catalog", hint="list drills with 'recoverctl drill history'"
        )
    return record


def _report_data(record: DrillRecord) -> dict[str, Any]:
    """Return the drill as its report renderers read it: every column, and the details a report
    shows at the top level."""
    data = asdict(record)
    details = record.details or {}
    for key in drills.DETAIL_KEYS:
        data.setdefault(key, details.get(key))
    return data


def drill_report(catalog: Catalog, drill_id: int, fmt: str, history_limit: int = 30) -> str:
    """Return the report for drill `drill_id` in md, html or json, with the trend of its playbook."""
    if fmt not in RENDERERS:
        raise UsageError(f"unknown report format '{fmt}'", hint="use md, html or json")
    drill = get_drill(catalog, drill_id)
    history = [
        asdict(h)
        for h in drill_history(catalog, name=drill.name, source=drill.source, limit=10_000)
        if h.id <= drill_id
    ][-history_limit:]
    return RENDERERS[fmt](_report_data(drill), history)
