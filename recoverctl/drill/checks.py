"""Checks run against the restored server. Each returns a CheckResult; none raises on a failed check.

A check that cannot even run (bad SQL, missing table) is a failed check with the error as output:
the drill verdict must reflect it, not crash on it.
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql as pgsql

from recoverctl.drill.playbook import (
    COMPARISON_RE,
    AmcheckCheck,
    FreshnessCheck,
    RowCountsCheck,
    SqlCheck,
)
from recoverctl.drill.scratch import ScratchCluster
from recoverctl.units import human_duration

OUTPUT_LIMIT = 4000


@dataclass
class CheckResult:
    name: str
    kind: str
    ok: bool
    output: str
    expected: Any = None
    actual: Any = None
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckContext:
    """What checks need to know: where the server is and what was recovered."""

    cluster: ScratchCluster
    user: str
    dbname: str
    # The instant the restored data should be current to (recovered commit time or target time).
    recovery_point_ts: float | None
    # Counts recorded at backup time (snapshot metadata), by table name.
    recorded_counts: dict[str, int] = field(default_factory=dict)
    recorded_counts_basis: str = "row_counts"


def _truncate(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else text[: OUTPUT_LIMIT - 20] + "\n... (truncated)"


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)


def _connect(ctx: CheckContext, dbname: str | None) -> psycopg.Connection[Any]:
    conn = psycopg.connect(**ctx.cluster.connect_kwargs(dbname or ctx.dbname, ctx.user), autocommit=True)  # type: ignore[arg-type]
    return conn


def compare(expect: Any, row: tuple[Any, ...] | None) -> tuple[bool, str]:
    """Given `expect` from a playbook and the first result row, return (ok, why)."""
    if row is None:
        return (expect is None, "query returned no rows")
    first = _jsonable(row[0]) if row else None
    if expect is None:
        return True, "query ran"
    if isinstance(expect, list):
        actual = [_jsonable(v) for v in row]
        ok = len(actual) == len(expect) and all(_equal(a, e) for a, e in zip(actual, expect, strict=False))
        return ok, f"row {actual} {'==' if ok else '!='} expected {expect}"
    if isinstance(expect, str):
        m = COMPARISON_RE.match(expect)
        if m:
            op, num = m.group(1), float(m.group(2))
            try:
                value = float(first)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False, f"got {first!r}, not a number to compare with '{expect}'"
            ok = {
                ">=": value >= num,
                "<=": value <= num,
                ">": value > num,
                "<": value < num,
                "==": math.isclose(value, num),
                "=": math.isclose(value, num),
                "!=": not math.isclose(value, num),
            }[op]
            return ok, f"got {_fmt(first)}, expected {expect.strip()}"
    ok = _equal(first, expect)
    return ok, f"got {_fmt(first)}, expected {_fmt(expect)}"


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return bool(actual) == bool(expected) and type(actual) is type(expected)
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(float(actual), float(expected))
    return str(actual) == str(expected)


def run_sql(check: SqlCheck, ctx: CheckContext) -> CheckResult:
    name = check.name or check.sql.strip().splitlines()[0][:80]
    try:
        with _connect(ctx, check.database) as conn:
            cur = conn.execute(check.sql.encode())
            row = cur.fetchone() if cur.description else None
    except psycopg.Error as e:
        return CheckResult(name, "sql", False, f"query failed: {str(e).strip()}", expected=check.expect)
    ok, why = compare(check.expect, row)
    actual = [_jsonable(v) for v in row] if row is not None else None
    if actual is not None and len(actual) == 1 and not isinstance(check.expect, list):
        actual = actual[0]
    return CheckResult(name, "sql", ok, why, expected=check.expect, actual=actual)


def run_amcheck(check: AmcheckCheck, ctx: CheckContext) -> CheckResult:
    cmd = [
        str(ctx.cluster.bin_dir / "pg_amcheck"),
        "--all",
        "--install-missing",
        "--no-password",
        "-h",
        str(ctx.cluster.socket_dir),
        "-p",
        str(ctx.cluster.port),
        "-U",
        ctx.user,
    ]
    if check.heapallindexed:
        cmd.append("--heapallindexed")
    r = subprocess.run(cmd, capture_output=True, text=True)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    output = "\n".join(problems).strip() or "no corruption found in any database"
    ok = r.returncode == 0
    if not ok and not problems:
        output = f"pg_amcheck exited {r.returncode}"
    return CheckResult(
        check.name or "pg_amcheck (all databases)",
        "amcheck",
        ok,
        _truncate(output),
        expected="no corruption",
        actual="no corruption" if ok else f"exit {r.returncode}",
    )


def run_freshness(check: FreshnessCheck, ctx: CheckContext) -> CheckResult:
    spec = check.freshness
    name = check.name or f"freshness of {spec.table}.{spec.column}"
    if ctx.recovery_point_ts is None:
        return CheckResult(name, "freshness", False, "the recovery point's time is unknown: cannot judge")
    floor = ctx.recovery_point_ts - spec.tolerance
    query = pgsql.SQL("select max({col}) from {tbl}").format(
        col=pgsql.Identifier(spec.column), tbl=pgsql.Identifier(*spec.table.split(".", 1))
    )
    try:
        with _connect(ctx, spec.database) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error as e:
        return CheckResult(name, "freshness", False, f"query failed: {str(e).strip()}")
    newest = row[0] if row else None
    expected = f">= {_iso(floor)}"
    if newest is None:
        return CheckResult(name, "freshness", False, f"{spec.table} is empty", expected=expected)
    if isinstance(newest, datetime):
        if newest.tzinfo is None:
            newest = newest.replace(tzinfo=UTC)
        newest_ts = newest.timestamp()
    else:
        try:
            newest_ts = float(newest)
        except (TypeError, ValueError):
            return CheckResult(name, "freshness", False, f"max({spec.column}) is not a time: {newest!r}")
    ok = newest_ts >= floor
    behind = ctx.recovery_point_ts - newest_ts
    return CheckResult(
        name,
        "freshness",
        ok,
        f"newest row {_iso(newest_ts)} is {human_duration(behind)} before the recovery point "
        f"(tolerance {human_duration(spec.tolerance)})",
        expected=expected,
        actual=_iso(newest_ts),
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def run_row_counts(check: RowCountsCheck, ctx: CheckContext) -> CheckResult:
    spec = check.row_counts
    name = check.name or "row counts vs backup"
    tables = spec.tables or sorted(ctx.recorded_counts)
    if not tables:
        return CheckResult(
            name,
            "row_counts",
            False,
            "the snapshot recorded no row counts: list tables in the source's count_tables",
        )
    missing = [t for t in tables if t not in ctx.recorded_counts]
    if missing:
        return CheckResult(
            name, "row_counts", False, f"the snapshot recorded no count for: {', '.join(missing)}"
        )
    actual: dict[str, int | None] = {}
    lines: list[str] = []
    ok = True
    try:
        with _connect(ctx, spec.database) as conn:
            for table in tables:
                q = pgsql.SQL("select count(*) from {}").format(pgsql.Identifier(*table.split(".", 1)))
                try:
                    row = conn.execute(q).fetchone()
                    n = int(row[0]) if row else 0
                except psycopg.Error as e:
                    actual[table] = None
                    ok = False
                    lines.append(f"{table}: {str(e).strip()}")
                    continue
                actual[table] = n
                recorded = ctx.recorded_counts[table]
                within = spec.tolerance.allows(recorded, n)
                ok = ok and within
                lines.append(
                    f"{table}: {n} rows, {recorded} at backup ({'within' if within else 'OUTSIDE'} "
                    f"{spec.tolerance.describe()})"
                )
    except psycopg.Error as e:
        return CheckResult(name, "row_counts", False, f"cannot connect: {str(e).strip()}")
    return CheckResult(
        name,
        "row_counts",
        ok,
        "\n".join(lines),
        expected={t: ctx.recorded_counts[t] for t in tables},
        actual=actual,
        details={"basis": ctx.recorded_counts_basis, "tolerance": spec.tolerance.describe()},
    )


def run_check(check: Any, ctx: CheckContext) -> CheckResult:
    """Run one playbook check and return its result with the time it took."""
    start = time.monotonic()
    if isinstance(check, SqlCheck):
        result = run_sql(check, ctx)
    elif isinstance(check, AmcheckCheck):
        result = run_amcheck(check, ctx)
    elif isinstance(check, FreshnessCheck):
        result = run_freshness(check, ctx)
    elif isinstance(check, RowCountsCheck):
        result = run_row_counts(check, ctx)
    else:  # pragma: no cover - the playbook model admits no other kinds
        raise TypeError(f"unknown check {check!r}")
    result.duration_s = round(time.monotonic() - start, 3)
    return result
