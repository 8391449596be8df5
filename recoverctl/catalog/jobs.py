"""The one job table: webhook actions queued for workers, and scheduled occurrences.

Both are rows of `jobs` held under a lease (`catalog.leases`: renew, release, reclaim after
expiry, heartbeats). What differs is how a row comes to be held:

- A webhook action is enqueued (state `queued`) and claimed by one `UPDATE ... WHERE
  state='queued'` inside a transaction that on PostgreSQL first locks the candidate row with `FOR
  UPDATE SKIP LOCKED`, and on SQLite already holds the write lock (the catalog begins with BEGIN
  IMMEDIATE) — so two workers never claim the same job. A lease that expires means the worker
  died, and the job is queued again only when its kind can resume safely (attempts <
  max_attempts), else abandoned. A job whose attempt failed on something passing may be queued
  again by its worker with `retry_later`, not to be claimed before its `not_before` time.
  `dedup_key` holds `active:<kind>:<target>` while a job is queued or running and is cleared when
  it finishes: the unique index makes "one active job per kind and target" a database guarantee.
- A scheduled occurrence (kind `schedule`) is created by the claim itself: one row per
  (schedule, due_at), unique in the database, so whichever runner inserts it first owns it, on
  SQLite and PostgreSQL alike. One that overlaps a live run, or is deliberately not run, is
  recorded `skipped` with its reason in `result`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from recoverctl.catalog import Catalog, leases
from recoverctl.catalog import tables as t

ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("succeeded", "failed", "abandoned")
OCCURRENCE_KIND = leases.OCCURRENCE_KIND


@dataclass(frozen=True)
class Job:
    """One row of `jobs`: a webhook action, or a scheduled occurrence (`schedule` and `due_at` set)."""

    id: int
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    dedup_key: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    not_before: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any] | None
    error: str | None
    schedule: str | None = None
    due_at: float | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Job:
        m = row._mapping
        values = {f.name: m[f.name] for f in fields(cls)}
        values["payload"] = values["payload"] or {}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The job as the API has always shown it; an occurrence adds its schedule and due time."""
        d = asdict(self)
        if self.schedule is None:
            del d["schedule"], d["due_at"]
        return d


def active_key(kind: str, target: str) -> str:
    return f"active:{kind}:{target}"


# --- webhook actions: the queue -------------------------------------------------------------------


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    target: str | None = None,
    max_attempts: int = 1,
) -> int:
    """Insert a queued job in the caller's transaction and return its id.

    With `target`, the job holds the active key for (kind, target): a second enqueue for the same
    pair while this one is queued or running raises sqlalchemy IntegrityError.
    """
    return int(
        conn.execute(
            t.jobs.insert().values(
                kind=kind,
                payload=payload,
                state="queued",
                attempts=0,
                max_attempts=max_attempts,
                dedup_key=active_key(kind, target) if target is not None else None,
                created_at=time.time(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def active_job(conn: Connection, kind: str, target: str) -> Job | None:
    """Return the queued or running job for (kind, target), or None."""
    row = conn.execute(sa.select(t.jobs).where(t.jobs.c.dedup_key == active_key(kind, target))).first()
    return Job.from_row(row) if row is not None else None


class JobCount(NamedTuple):
    """How many webhook-action jobs of one kind are in one state."""

    kind: str
    state: str
    jobs: int


def action_job_counts_in(conn: Connection) -> list[JobCount]:
    """Return the number of webhook-action jobs (scheduled occurrences left out) per kind and state."""
    rows = conn.execute(
        sa.select(t.jobs.c.kind, t.jobs.c.state, sa.func.count())
        .where(t.jobs.c.schedule.is_(None))
        .group_by(t.jobs.c.kind, t.jobs.c.state)
    ).all()
    return [JobCount(str(kind), str(state), int(n)) for kind, state, n in rows]


def recent_jobs(conn: Connection, kind: str, since: float) -> list[Job]:
    """Return the jobs of `kind` created at or after `since`, newest first."""
    rows = conn.execute(
        sa.select(t.jobs)
        .where(t.jobs.c.kind == kind, t.jobs.c.created_at >= since)
        .order_by(t.jobs.c.created_at.desc())
    ).all()
    return [Job.from_row(r) for r in rows]


def claim(catalog: Catalog, owner: str, kinds: Iterable[str], lease: float) -> Job | None:
    """Claim the oldest queued job of one of `kinds` for `owner`; return it (state running) or None."""
    kinds = list(kinds)
    with catalog.begin() as conn:
        now = time.time()
        candidate = conn.execute(
            sa.select(t.jobs.c.id)
            .where(
                t.jobs.c.state == "queued",
                t.jobs.c.kind.in_(kinds),
                sa.or_(t.jobs.c.not_before.is_(None), t.jobs.c.not_before <= now),
            )
            .order_by(t.jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar()
        if candidate is None:
            return None
        claimed = conn.execute(
            t.jobs.update()
            .where(t.jobs.c.id == candidate, t.jobs.c.state == "queued")
            .values(**leases.held_values(owner, lease, now), attempts=t.jobs.c.attempts + 1)
        ).rowcount
        if claimed != 1:
            return None
        return Job.from_row(conn.execute(sa.select(t.jobs).where(t.jobs.c.id == candidate)).one())


def finish(
    catalog: Catalog,
    job_id: int,
    owner: str,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome (succeeded/failed/abandoned) of a job or occurrence `owner` holds;
    return False if it lost the lease (another process marked it abandoned meanwhile)."""
    values = {
        "state": state,
        "finished_at": time.time(),
        "result": result,
        "error": error,
        "dedup_key": None,
        "lease_expires_at": None,
    }
    with catalog.begin() as conn:
        return leases.release(conn, job_id, owner, values)


def retry_later(
    catalog: Catalog, job_id: int, owner: str, delay: float, *, result: dict[str, Any], error: str
) -> bool:
    """Queue a job `owner` holds again, not to be claimed for `delay` seconds, marked `resume`
    so its next attempt continues what this one began; return False if it lost the lease.

    The job keeps its active key meanwhile: alerts for its target are absorbed by it, and the
    cap and cooldown see one job, however many attempts it takes.
    """
    with catalog.begin() as conn:
        row = leases.held_row(conn, job_id, owner)
        if row is None:
            return False
        values = {
            "state": "queued",
            "not_before": time.time() + delay,
            "lease_owner": None,
            "lease_expires_at": None,
            "payload": {**(row.payload or {}), "resume": True},
            "result": result,
            "error": error,
        }
        return leases.release(conn, job_id, owner, values)


def recover_expired(catalog: Catalog, pool: leases.Pool = leases.QUEUE) -> list[Job]:
    """Requeue (attempts left) or abandon the running rows of `pool` whose lease expired; return
    them as they are now. An occurrence has one attempt: it is always abandoned."""

    def requeue_or_abandon(row: Row[Any], now: float) -> dict[str, Any]:
        if row.attempts < row.max_attempts:
            return {
                "state": "queued",
                "lease_owner": None,
                "lease_expires_at": None,
                "payload": {**(row.payload or {}), "resume": True},
            }
        return {
            "state": "abandoned",
            "finished_at": now,
            "dedup_key": None,
            "error": f"lease of {row.lease_owner} expired while running (worker died)",
        }

    return [
        replace(Job.from_row(row), **values)
        for row, values in leases.reclaim_expired(catalog, pool, requeue_or_abandon)
    ]


def get_job(catalog: Catalog, job_id: int) -> Job | None:
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
    return Job.from_row(row) if row is not None else None


@dataclass(frozen=True)
class EarlierRollback:
    """The rollback an earlier attempt of a rollback job started, and the release it aimed at."""

    id: int
    state: str
    version: str | None  # of the target release
    status: str | None  # of the target release


def earlier_rollback(catalog: Catalog, service: str, marker: str) -> EarlierRollback | None:
    """Return the newest rollback of `service` whose reason holds `marker` (the job's mark), or None."""
    with catalog.begin() as conn:
        row = conn.execute(
            sa.select(t.rollbacks.c.id, t.rollbacks.c.state, t.releases.c.version, t.releases.c.status)
            .join(t.releases, t.releases.c.id == t.rollbacks.c.to_release, isouter=True)
            .where(t.rollbacks.c.service == service, t.rollbacks.c.reason.contains(marker, autoescape=True))
            .order_by(t.rollbacks.c.id.desc())
        ).first()
    return EarlierRollback(row.id, row.state, row.version, row.status) if row is not None else None


# --- scheduled occurrences ------------------------------------------------------------------------

_occurrences = t.jobs.c.kind == OCCURRENCE_KIND


@dataclass(frozen=True)
class Claim:
    """An occurrence a runner holds: the job row `id` for `schedule` due at `due_at`."""

    id: int
    schedule: str
    due_at: float
    runner: str


@dataclass(frozen=True)
class ClaimResult:
    state: Literal["claimed", "taken", "overlap"]
    claim: Claim | None = None
    detail: str = ""


def _occurrence(schedule: str, due_at: float, now: float, **values: Any) -> dict[str, Any]:
    return {
        "kind": OCCURRENCE_KIND,
        "payload": {},
        "attempts": 1,
        "max_attempts": 1,
        "created_at": now,
        "schedule": schedule,
        "due_at": due_at,
        **values,
    }


def _skipped(schedule: str, due_at: float, runner: str, why: dict[str, Any], now: float) -> Any:
    return t.jobs.insert().values(
        **_occurrence(
            schedule,
            due_at,
            now,
            state="skipped",
            lease_owner=runner,
            started_at=now,
            finished_at=now,
            result=why,
        )
    )


def claim_occurrence(
    catalog: Catalog, schedule: str, due_at: float, runner: str, lease: float
) -> ClaimResult:
    """Try to own one occurrence; return claimed, taken (another runner has it) or overlap (skipped).

    With overlap the occurrence is recorded as skipped, because the previous run still holds a
    live lease.
    """
    now = time.time()
    try:
        with catalog.begin() as conn:
            busy = conn.execute(
                sa.select(t.jobs.c.lease_owner, t.jobs.c.due_at)
                .where(
                    _occurrences,
                    t.jobs.c.schedule == schedule,
                    t.jobs.c.state == "running",
                    t.jobs.c.lease_expires_at >= now,
                )
                .limit(1)
            ).first()
            if busy is not None:
                detail = f"previous run (due {busy.due_at:.0f}) still running on {busy.lease_owner}"
                conn.execute(_skipped(schedule, due_at, runner, {"reason": "overlap", "detail": detail}, now))
                return ClaimResult("overlap", detail=detail)
            held = leases.held_values(runner, lease, now)
            row_id = conn.execute(
                t.jobs.insert().values(**_occurrence(schedule, due_at, now, **held))
            ).inserted_primary_key[0]  # type: ignore[index]
    except sa.exc.IntegrityError:
        return ClaimResult("taken", detail="another runner owns this occurrence")
    return ClaimResult("claimed", Claim(int(row_id), schedule, due_at, runner))


def record_skipped(catalog: Catalog, schedule: str, due_at: float, runner: str, reason: str) -> bool:
    """Record an occurrence deliberately not run; return False when another runner recorded it first."""
    try:
        with catalog.begin() as conn:
            conn.execute(_skipped(schedule, due_at, runner, {"reason": reason}, time.time()))
    except sa.exc.IntegrityError:
        return False
    return True


def last_due(catalog: Catalog, schedule: str) -> float | None:
    """Return the newest recorded due time of `schedule`, or None."""
    with catalog.begin() as conn:
        value = conn.execute(
            sa.select(sa.func.max(t.jobs.c.due_at)).where(_occurrences, t.jobs.c.schedule == schedule)
        ).scalar()
    return float(value) if value is not None else None


def last_occurrence(
    catalog: Catalog, schedule: str, states: Iterable[str], *, before_id: int | None = None
) -> Job | None:
    """Return the occurrence of `schedule` in one of `states` with the latest due time (older than
    job `before_id` when given), or None."""
    query = sa.select(t.jobs).where(
        _occurrences, t.jobs.c.schedule == schedule, t.jobs.c.state.in_(list(states))
    )
    if before_id is not None:
        query = query.where(t.jobs.c.id < before_id)
    with catalog.begin() as conn:
        row = conn.execute(query.order_by(t.jobs.c.due_at.desc()).limit(1)).first()
    return Job.from_row(row) if row is not None else None


def recent_occurrences(catalog: Catalog, limit: int) -> list[Job]:
    """Return the `limit` occurrences with the latest due times, newest first."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.jobs).where(_occurrences).order_by(t.jobs.c.due_at.desc()).limit(limit)
        ).all()
    return [Job.from_row(r) for r in rows]


def occurrence_counts(conn: Connection, since: float | None = None) -> dict[str, dict[str, int]]:
    """Return {schedule: {state: count}} of the occurrences due at or after `since` (all when None),
    in the caller's transaction."""
    query = sa.select(t.jobs.c.schedule, t.jobs.c.state, sa.func.count()).where(_occurrences)
    if since is not None:
        query = query.where(t.jobs.c.due_at >= since)
    counts: dict[str, dict[str, int]] = {}
    for name, state, n in conn.execute(query.group_by(t.jobs.c.schedule, t.jobs.c.state)).all():
        counts.setdefault(str(name), {})[str(state)] = int(n)
    return counts
