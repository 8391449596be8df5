"""recoverctl's own state: runs, jobs, releases, drills, alerts, events, notifications, audit log.

SQLite by default (in the XDG data dir), PostgreSQL (`postgresql+psycopg://...`) for shared or
HA setups. The schema is migrated with alembic automatically on first use.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recoverctl.catalog import tables as t
from recoverctl.config import ENV_CATALOG, Config, redact, redact_url
from recoverctl.errors import CatalogError
from recoverctl.interrupts import uninterruptible

if TYPE_CHECKING:
    from recoverctl.repo import Snapshot

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The PostgreSQL advisory lock serialising migrations ("recm"); intake uses another one.
_MIGRATE_LOCK_ID = 0x7265636D
# How long a thread waits for another thread's SQLite transaction before falling back to SQLite's
# own busy handler (which then waits up to its 30 s timeout): a safety valve, never reached normally.
LOCAL_WRITER_WAIT = 30.0


class FifoLock:
    """A reentrant lock granted in arrival order.

    threading.RLock lets the releasing thread take it straight back, so a thread running several
    transactions in a row (a worker: claim, run, finish, deliver) starves one that waits.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting: deque[object] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, timeout: float) -> bool:
        """Return True once this thread holds the lock, False after `timeout` seconds."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            ticket = object()
            self._waiting.append(ticket)
            if not self._cond.wait_for(lambda: self._owner is None and self._waiting[0] is ticket, timeout):
                self._waiting.remove(ticket)
                self._cond.notify_all()
                return False
            self._waiting.popleft()
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()


def file_head_revision() -> str | None:
    """Return the single head revision named by the migration files, read as text; None when the
    files do not show exactly one head (alembic decides then)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for f in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = f.read_text()
        rev = re.search(r"^revision\b[^=]*=\s*[\"']([^\"']+)[\"']", text, re.M)
        down = re.search(r"^down_revision\b[^=]*=(.*)$", text, re.M)
        if rev is None or down is None:
            return None
        revisions.add(rev.group(1))
        parents.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def default_url(env: dict[str, str] | None = None) -> str:
    """Return the SQLite URL in the XDG data dir (created if needed)."""
    env = dict(os.environ) if env is None else env
    base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "recoverctl"
    private_dir(base)
    return f"sqlite:///{base / 'catalog.db'}"


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) as 0700: the catalog holds who did what, when, and
    where backups live. An existing directory keeps its mode (an operator may share it on purpose)."""
    for d in reversed([p for p in (path, *path.parents) if not p.is_dir()]):
        d.mkdir(mode=0o700, exist_ok=True)


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its -wal/-shm companions, which inherit its mode) as 0600
    before SQLite does with the umask's mode; an existing file keeps its mode."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def normalize_url(url: str) -> str:
    """Accept a bare path or postgresql:// and return a SQLAlchemy URL."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().absolute()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def actor() -> str:
    """Return who is acting: the invoking user (through sudo) at this host."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def now() -> float:
    return time.time()


Record = TypeVar("Record")


def as_record(cls: type[Record], row: Any) -> Record:
    """Given a dataclass `cls` whose fields are named like columns and a result row, return the
    record: the one way the per-concern modules turn rows into typed values."""
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


class Catalog:
    """A handle on the catalog database. Cheap to create; connections are pooled."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = normalize_url(url)
        self.display_url = redact_url(self.url)
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                private_dir(Path(path).parent)
                _private_file(Path(path))
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = sa.create_engine(self.url, **kwargs)
        except Exception as e:
            raise CatalogError(f"invalid catalog URL '{self.display_url}': {e}") from None
        # SQLite admits one writer; its busy handler retries with sleeps growing to 100 ms, so a
        # thread that collides with another thread of this process (a worker claiming a job while
        # the server commits a batch of webhooks) loses hundreds of milliseconds. Threads of one
        # process queue on this lock instead, in turn, each starting when the previous one ends.
        self._local_writer: FifoLock | None = None
        if self.url.startswith("sqlite"):
            self._local_writer = FifoLock()
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            # SQLite's default deferred transactions deadlock writers that first read; take the
            # write lock at BEGIN so concurrent processes queue instead of failing.
            sa.event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        if migrate:
            self.migrate()

    @classmethod
    def from_config(cls, cfg: Config, *, migrate: bool = True) -> Catalog:
        return cls(cfg.catalog or os.environ.get(ENV_CATALOG) or default_url(), migrate=migrate)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def _alembic_config(self, conn: Connection) -> Any:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        return cfg

    def migrate(self) -> None:
        """Bring the schema to the newest revision; raise CatalogError when unreachable."""
        # Importing alembic costs ~0.3 s CPU on every command; an up-to-date catalog does not need it.
        head = file_head_revision()
        if head is not None and self._stored_revisions() == [head]:
            return
        from alembic import command

        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Replicas started together (serve pods, workers) all find an empty or old
                    # catalog: one migrates, the others wait here, then find it at head.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATE_LOCK_ID})
                if self.current_revision(conn) == self.head_revision():
                    return
                command.upgrade(self._alembic_config(conn), "head")
        except sa.exc.OperationalError as e:
            raise CatalogError(f"unable to open catalog '{self.display_url}': {e.orig}") from None

    def _stored_revisions(self) -> list[str] | None:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.text("select version_num from alembic_version")).scalars().all()
        except sa.exc.DBAPIError:
            return None  # no catalog yet, or not reachable: the full path reports it
        return [str(r) for r in rows]

    def head_revision(self) -> str | None:
        from alembic.config import Config as AlembicConfig
        from alembic.script import ScriptDirectory

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        return ScriptDirectory.from_config(cfg).get_current_head()

    def current_revision(self, conn: Connection | None = None) -> str | None:
        from alembic.runtime.migration import MigrationContext

        if conn is None:
            with self.engine.connect() as c:
                return MigrationContext.configure(c).get_current_revision()
        return MigrationContext.configure(conn).get_current_revision()

    def info(self) -> dict[str, Any]:
        """Return the URL (redacted), revisions and row counts per table."""
        try:
            with self.engine.connect() as conn:
                counts = {
                    name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                    for name, table in t.metadata.tables.items()
                }
                current = self.current_revision(conn)
        except sa.exc.OperationalError as e:
            raise CatalogError(f"unable to read catalog '{self.display_url}': {e.orig}") from None
        return {
            "url": self.display_url,
            "dialect": self.engine.dialect.name,
            "revision": current,
            "head": self.head_revision(),
            "tables": counts,
        }

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """Yield a connection inside one transaction; raise CatalogError when unreachable.

        The transaction is uninterruptible: a Ctrl-C (or a drill's SIGTERM) arriving inside
        SQLAlchemy would leave the connection, the pool or the writer lock broken for the
        cleanup that records the cancel; it is raised when the transaction has ended.
        """
        with uninterruptible():
            lock = self._local_writer
            locked = lock.acquire(timeout=LOCAL_WRITER_WAIT) if lock is not None else False
            try:
                with self.engine.begin() as conn:
                    yield conn
            except sa.exc.OperationalError as e:
                raise CatalogError(f"catalog '{self.display_url}' is unavailable: {e.orig}") from None
            finally:
                if locked:
                    lock.release()  # type: ignore[union-attr]

    # --- small shared writes -----------------------------------------------------------------------

    def start_run(self, kind: str, source: str | None = None, repository: str | None = None) -> int:
        with self.begin() as conn:
            return int(
                conn.execute(
                    t.runs.insert().values(
                        kind=kind, source=source, repository=repository, started_at=now(), status="running"
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )

    def finish_run(self, run_id: int, status: str, **fields: Any) -> None:
        """Close run `run_id` with `status` and `fields` (an error text, a summary), URL
        passwords redacted."""
        fields = redact(fields)
        with self.begin() as conn:
            conn.execute(
                t.runs.update()
                .where(t.runs.c.id == run_id)
                .values(status=status, finished_at=now(), **fields)
            )

    def record_snapshot(self, repository: str, snap: Snapshot) -> None:
        """Insert or replace the row of snapshot `snap` of the repository at URL `repository`."""
        row = {
            "repository": repository,
            "time": snap.time,
            "kind": snap.kind,
            "source": snap.source,
            "paths": snap.paths,
            "tags": snap.tags,
            "parent": snap.parent,
            "summary": snap.summary,
        }
        with self.begin() as conn:
            conn.execute(t.snapshots.delete().where(t.snapshots.c.id == snap.id))
            conn.execute(t.snapshots.insert().values(id=snap.id, **row))

    def audit(
        self,
        action: str,
        target: str | None,
        outcome: str,
        details: dict[str, Any] | None = None,
        who: str | None = None,
    ) -> None:
        """Append one entry to the audit log (rows are never updated or deleted); URL passwords
        in `details` are redacted."""
        details = redact(details)
        with self.begin() as conn:
            conn.execute(
                t.audit_log.insert().values(
                    at=now(),
                    actor=who or actor(),
                    action=action,
                    target=target,
                    outcome=outcome,
                    details=details,
                )
            )

    def emit_event(
        self,
        kind: str,
        severity: str,
        subject: str | None,
        summary: str,
        details: dict[str, Any] | None = None,
        dedup_key: str | None = None,
    ) -> int:
        """Record an event for the notification layer, and on its incident; return its id. URL
        passwords in `summary` and `details` are redacted."""
        with self.begin() as conn:
            return insert_event_in(conn, now(), kind, severity, subject, summary, details, dedup_key)

    def close(self) -> None:
        self.engine.dispose()


def insert_event_in(
    conn: Connection,
    at: float,
    kind: str,
    severity: str,
    subject: str | None,
    summary: str,
    details: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> int:
    """Record an event in the caller's transaction, and on its incident; return its id. URL
    passwords in `summary` and `details` are redacted. The one way an event is written."""
    from recoverctl.catalog import incidents

    summary, details = redact(summary), redact(details)
    event_id = int(
        conn.execute(
            t.events.insert().values(
                at=at,
                kind=kind,
                severity=severity,
                subject=subject,
                summary=summary,
                details=details,
                dedup_key=dedup_key,
                delivered=False,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )
    # A failure opens its incident (or joins the one open about its subject) in the same
    # transaction as the event: no event is ever without the incident it belongs to.
    incidents.record_event_in(conn, event_id, at, kind, severity, subject, summary, details)
    return event_id


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Python's sqlite3 opens its own implicit transactions; let SQLAlchemy's BEGIN do it.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
