"""Plan and run an application's alembic migrations with recoverctl's own alembic environment.

A downgrade runs the *newer* release's scripts (the older release does not contain the
downgrade functions of migrations it never had) down to the revision recorded for the older
release, in ONE transaction: PostgreSQL DDL is transactional, so a raising script leaves the
database exactly at the revision it started from.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from recoverctl.config import Config, DatabaseLink, PostgresSource, redact_url, secret_value
from recoverctl.errors import ConfigError, NotFoundError, RecoverctlError


def _rollback_env_dir() -> Path:
    """Return the alembic environment directory: package data in an installed wheel (put there by
    build_hooks.py), else `migrations_rollback/` at the top of the source checkout."""
    packaged = Path(__file__).parent / "migrations_rollback"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "migrations_rollback"


ENV_DIR = _rollback_env_dir()

_DROP_TABLE = re.compile(r"DROP TABLE (?:IF EXISTS )?(\"?[\w.]+\"?)", re.IGNORECASE)
_DROP_COLUMN = re.compile(r"ALTER TABLE (\"?[\w.]+\"?) DROP COLUMN (?:IF EXISTS )?(\"?\w+\"?)", re.IGNORECASE)


def database_url(cfg: Config, service: str, link: DatabaseLink) -> str:
    """Given a service's database link, return a SQLAlchemy URL (psycopg); raise ConfigError."""
    if link.url is not None:
        url = link.url.get_secret_value()
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    name, source = cfg.source(link.source, "postgres")
    assert isinstance(source, PostgresSource)
    password = secret_value(source.password, source.password_file, f"the password of source '{name}'")
    query: dict[str, str] = {}
    host: str | None = source.host
    if source.host.startswith("/"):
        query["host"] = source.host
        host = None
    built = sa.engine.URL.create(
        "postgresql+psycopg",
        username=source.user,
        password=password,
        host=host,
        port=source.port,
        database=link.dbname or source.dbname,
        query=query,
    )
    return built.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """Return the SQLAlchemy URL as a libpq/psycopg connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def resolve_script_location(link: DatabaseLink, version: str, service: str) -> str:
    """Return the link's script_location with `{version}` filled in; raise ConfigError if unset."""
    if not link.script_location:
        raise ConfigError(
            f"service '{service}' has a database link but no script_location",
            hint=f"set services.{service}.database.script_location (may contain {{version}})",
        )
    return link.script_location.replace("{version}", version)


def _alembic_config(script_location: str, url: str | None = None) -> AlembicConfig:
    scripts = Path(script_location)
    versions = scripts / "versions" if (scripts / "versions").is_dir() else scripts
    if not versions.is_dir():
        raise NotFoundError(
            f"migration scripts '{script_location}' do not exist",
            hint="check database.script_location of the service (the newer release's scripts are needed)",
        )
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(ENV_DIR))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(script_location: str) -> str | None:
    """Return the single head revision of the scripts; raise ConfigError when there are several."""
    heads = ScriptDirectory.from_config(_alembic_config(script_location)).get_heads()
    if len(heads) > 1:
        raise ConfigError(f"migration scripts '{script_location}' have several heads: {', '.join(heads)}")
    return heads[0] if heads else None


@contextmanager
def _connect(url: str) -> Iterator[Connection]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    except sa.exc.OperationalError as e:
        raise RecoverctlError(
            f"cannot connect to the application database '{redact_url(url)}': {e.orig}",
            hint="check the service's database link and that PostgreSQL is running",
        ) from None
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """Return the database's alembic revision (None when alembic never ran there)."""
    with _connect(url) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, script_location: str, target: str = "head") -> dict[str, Any]:
    """Upgrade the database to `target` in one transaction; return {from_revision, to_revision}.

    Raise RecoverctlError (transaction rolled back) when a script fails.
    """
    cfg = _alembic_config(script_location, url)
    with _connect(url) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()  # end the read's implicit transaction: the migration gets a fresh one
        trans = conn.begin()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, target)
            trans.commit()
        except Exception as e:
            trans.rollback()
            raise RecoverctlError(
                f"schema upgrade of '{redact_url(url)}' to {target} failed: {type(e).__name__}: {e}",
                hint=f"the transaction was rolled back: the database is still at revision {before}",
                details={"revision": before},
            ) from e
        after = MigrationContext.configure(conn).get_current_revision()
    return {"from_revision": before, "to_revision": after}


def plan_downgrade(url: str, script_location: str, target: str | None) -> dict[str, Any]:
    """Return what downgrading the database to `target` would run and drop, without changing it.

    The plan lists the migrations (newest first), the SQL, the tables and columns it drops and
    the rows now in those tables. Raise NotFoundError when a revision is unknown to the scripts.
    """
    cfg = _alembic_config(script_location, url)
    scripts = ScriptDirectory.from_config(cfg)
    current = current_revision(url)
    plan: dict[str, Any] = {
        "script_location": script_location,
        "from_revision": current,
        "to_revision": target,
        "migrations": [],
        "drops": {"tables": [], "columns": []},
        "rows_lost": {},
        "sql": "",
    }
    if current == target:
        return plan
    try:
        revs = list(scripts.iterate_revisions(current, target or "base"))
    except Exception as e:
        raise NotFoundError(
            f"cannot plan a downgrade from {current} to {target} "
            f"with the scripts in '{script_location}': {e}",
            hint="the newer release's scripts must contain both revisions",
        ) from None
    plan["migrations"] = [
        {"revision": r.revision, "down_revision": r.down_revision, "doc": r.doc} for r in revs
    ]
    buf = io.StringIO()
    cfg.attributes["output_buffer"] = buf
    try:
        command.downgrade(cfg, f"{current}:{target or 'base'}", sql=True)
    except Exception as e:
        # Scripts that read the database or raise cannot be rendered offline; the plan says so.
        plan["sql_error"] = f"{type(e).__name__}: {e}"
    sql = buf.getvalue()
    plan["sql"] = sql
    tables = sorted({m.strip('"') for m in _DROP_TABLE.findall(sql)})
    columns = sorted({f"{tbl.strip(chr(34))}.{col.strip(chr(34))}" for tbl, col in _DROP_COLUMN.findall(sql)})
    plan["drops"] = {"tables": tables, "columns": columns}
    with _connect(url) as conn:
        for table in tables:
            try:
                plan["rows_lost"][table] = conn.execute(
                    sa.text(f"SELECT count(*) FROM {conn.dialect.identifier_preparer.quote(table)}")
                ).scalar_one()
            except sa.exc.DBAPIError:
                conn.rollback()
    return plan


def downgrade(url: str, script_location: str, target: str | None) -> dict[str, Any]:
    """Downgrade the database to `target` with the scripts in one transaction; return the revisions.

    Idempotent: a database already at `target` is left alone. Raise RecoverctlError (exit 1)
    naming the failed migration when a script raises; the transaction is then rolled back.
    """
    cfg = _alembic_config(script_location, url)
    with _connect(url) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        if before == target:
            return {"from_revision": before, "to_revision": target, "ran": False}
        conn.rollback()  # end the read's implicit transaction: the migration gets a fresh one
        trans = conn.begin()
        try:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, target or "base")
            trans.commit()
        except Exception as e:
            trans.rollback()
            raise RecoverctlError(
                f"schema downgrade of '{redact_url(url)}' from {before} to {target} failed: "
                f"{type(e).__name__}: {e}",
                hint=f"the transaction was rolled back: the database is still at revision {before}",
                details={"revision": before},
            ) from e
        after = MigrationContext.configure(conn).get_current_revision()
    return {"from_revision": before, "to_revision": after, "ran": True}


def create_restore_point(url: str, name: str) -> dict[str, Any]:
    """Create a named restore point (pg_create_restore_point) and return {name, lsn, timeline}.

    Raise RecoverctlError when the database refuses (e.g. wal_level minimal, no privilege).
    """
    import psycopg

    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT pg_create_restore_point(%s)::text, (SELECT timeline_id FROM pg_control_checkpoint())",
                (name,),
            ).fetchone()
    except psycopg.Error as e:
        raise RecoverctlError(
            f"cannot create restore point '{name}' on '{redact_url(url)}': {e}",
            hint="the deploy user needs superuser (or EXECUTE on pg_create_restore_point) "
            "and wal_level replica",
        ) from None
    assert row is not None
    return {"name": name, "lsn": row[0], "timeline": row[1]}


def wal_since(url: str, lsn: str) -> dict[str, Any]:
    """Return {current_lsn, bytes_after}: how much WAL the database wrote after `lsn`."""
    import psycopg

    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT pg_current_wal_lsn()::text, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint",
                (lsn,),
            ).fetchone()
    except psycopg.Error as e:
        raise RecoverctlError(f"cannot read the WAL position of '{redact_url(url)}': {e}") from None
    assert row is not None
    return {"current_lsn": row[0], "bytes_after": int(row[1])}
