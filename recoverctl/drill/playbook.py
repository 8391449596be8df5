"""Drill playbooks: YAML files under `playbooks/`, validated like the config (unknown keys are errors).

The minimal form from the issue is accepted as is:

    drill:
      name: main-nightly
      source: main
      recovery_point: latest
      checks:
        - sql: "select count(*) from t"
          expect: ">= 1"
      targets: {rto: 2h, rpo: 1h}
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from recoverctl.config import Config, Duration, Model, _humanize, load_yaml
from recoverctl.errors import ConfigError, UsageError

# ">= 1", "== 3", "< 10.5", "!= 0", "= 2"
COMPARISON_RE = re.compile(r"^\s*(>=|<=|==|!=|=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


def _parse_point(value: object) -> object:
    """Accept `latest`, `random`, `random 7d`, an ISO 8601 time with a zone, or a mapping."""
    if isinstance(value, datetime):
        return {"kind": "time", "time": value}
    if isinstance(value, str):
        text = value.strip()
        if text in ("latest", "immediate"):
            return {"kind": text}
        m = re.fullmatch(r"random(?:\s+(?:within\s+)?(\S+))?", text)
        if m:
            return {"kind": "random", "window": m.group(1) or "7d"}
        return {"kind": "time", "time": text}
    return value


def _parse_time(value: object) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
        except ValueError:
            raise ValueError(
                f"not a recovery point: {value!r} (use latest, random, 'random 7d' or an ISO 8601 time "
                "with a zone such as 2026-11-20T03:00:00+00:00)"
            ) from None
    else:
        raise ValueError(f"not a time: {value!r}")
    if dt.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone: add +00:00 (or Z) so it means one instant")
    return dt.astimezone(UTC)


class RecoveryPoint(Model):
    """Which state to recover: the end of the archive, the backup itself, a random or given time."""

    kind: Literal["latest", "immediate", "random", "time"] = "latest"
    # random: a time picked uniformly within this window before the drill start.
    window: Duration = 7 * 86400.0
    time: Annotated[datetime | None, BeforeValidator(lambda v: None if v is None else _parse_time(v))] = None

    @model_validator(mode="after")
    def _time_given(self) -> RecoveryPoint:
        if self.kind == "time" and self.time is None:
            raise ValueError("recovery_point kind 'time' needs 'time: <ISO 8601 with zone>'")
        return self

    def describe(self) -> str:
        if self.kind == "random":
            return f"random within {int(self.window)}s"
        if self.kind == "time" and self.time is not None:
            return self.time.isoformat()
        return self.kind


class SqlCheck(Model):
    """Run `sql` on the restored server; compare the first row with `expect`.

    expect: a comparison (">= 1", "== 3"), a number, a string, a boolean (first column), or a list
    (the whole first row).
    """

    sql: str
    expect: bool | int | float | str | list[Any] | None = None
    database: str | None = None
    name: str | None = None


class AmcheckCheck(Model):
    """pg_amcheck on every database (heap and B-tree indexes)."""

    amcheck: bool = True
    heapallindexed: bool = False
    name: str | None = None


class FreshnessSpec(Model):
    table: str
    column: str = "created_at"
    tolerance: Duration = 3600.0
    database: str | None = None


class FreshnessCheck(Model):
    """max(column) of table must be ≥ the recovery point - tolerance."""

    freshness: FreshnessSpec
    name: str | None = None


def _tolerance(value: object) -> object:
    if isinstance(value, str) and value.strip().endswith("%"):
        return {"percent": float(value.strip()[:-1])}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"rows": int(value)}
    return value


class Tolerance(Model):
    percent: float | None = None
    rows: int | None = None

    def allows(self, recorded: int, actual: int) -> bool:
        diff = abs(actual - recorded)
        if self.rows is not None and diff <= self.rows:
            return True
        return bool(self.percent is not None and diff <= recorded * self.percent / 100.0)

    def describe(self) -> str:
        parts = []
        if self.percent is not None:
            parts.append(f"{self.percent:g}%")
        if self.rows is not None:
            parts.append(f"{self.rows} rows")
        return " or ".join(parts) or "exact"


class RowCountsSpec(Model):
    # Tables to compare; empty = every table whose count the backup recorded.
    tables: list[str] = Field(default_factory=list)
    tolerance: Annotated[Tolerance, BeforeValidator(_tolerance)] = Field(
        default_factory=lambda: Tolerance(percent=10.0)
    )
    database: str | None = None


class RowCountsCheck(Model):
    """Exact row counts now vs the counts recorded in the snapshot metadata at backup time."""

    row_counts: RowCountsSpec
    name: str | None = None


def _check_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("sql", "amcheck", "freshness", "row_counts"):
            if key in value:
                return key
    elif isinstance(value, SqlCheck | AmcheckCheck | FreshnessCheck | RowCountsCheck):
        return {SqlCheck: "sql", AmcheckCheck: "amcheck", FreshnessCheck: "freshness"}.get(
            type(value), "row_counts"
        )
    return "invalid"


Check = Annotated[
    Union[  # noqa: UP007
        Annotated[SqlCheck, Tag("sql")],
        Annotated[AmcheckCheck, Tag("amcheck")],
        Annotated[FreshnessCheck, Tag("freshness")],
        Annotated[RowCountsCheck, Tag("row_counts")],
    ],
    Discriminator(_check_kind),
]


def _row_counts_shorthand(value: object) -> object:
    # `row_counts: 5%` and `row_counts: true` are accepted for the common case.
    if isinstance(value, dict) and "row_counts" in value:
        spec = value["row_counts"]
        if spec is True:
            value = {**value, "row_counts": {}}
        elif isinstance(spec, str | int | float) and not isinstance(spec, bool):
            value = {**value, "row_counts": {"tolerance": spec}}
    return value


class PlaybookTargets(Model):
    rto: Duration | None = None
    rpo: Duration | None = None


class Where(Model):
    """Where the scratch cluster runs: always this host, a temp dir, a free loopback port."""

    type: Literal["scratch"] = "scratch"
    # Parent of the drill's temp dir (default: $TMPDIR); must not be inside the source's data dir.
    temp_dir: str | None = None
    # A fixed port (default: a free loopback port chosen at run time).
    port: int | None = None
    # Refuse to start when the parent has less free space than this (besides the snapshot size).
    min_free: Annotated[int, BeforeValidator(lambda v: _parse_size(v))] = 0
    os_user: str | None = None
    # Give up waiting for recovery + startup after this long (default: twice the RTO target).
    timeout: Duration | None = None


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def _parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "b").lower()[0]
            mult = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
            return int(float(m.group(1)) * mult)
    raise ValueError(f"not a size: {value!r} (use e.g. 500MiB, 2GiB)")


class SnapshotFilter(Model):
    """Narrow a files/volume drill to one snapshot set: snapshots matching every given filter."""

    # A snapshot id or unique prefix: drill exactly that snapshot (recovery_point is then ignored).
    id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    # The snapshot's backed-up paths, exactly (as `snapshots` lists them).
    paths: list[str] | None = None


class Drill(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)]
    # A source from the config: postgres (physical backups) or files / volume (snapshot drills).
    source: str
    description: str | None = None
    # files/volume sources only: which snapshots of the source qualify.
    snapshot: SnapshotFilter | None = None
    recovery_point: Annotated[RecoveryPoint, BeforeValidator(_parse_point)] = Field(
        default_factory=RecoveryPoint
    )
    # pg_amcheck on all databases runs unless this is false or an explicit amcheck check is listed.
    amcheck: bool = True
    checks: list[Annotated[Check, BeforeValidator(_row_counts_shorthand)]] = Field(default_factory=list)
    targets: PlaybookTargets = Field(default_factory=PlaybookTargets)
    where: Where = Field(default_factory=Where)

    @field_validator("checks", mode="before")
    @classmethod
    def _known_checks(cls, value: object) -> object:
        if isinstance(value, list):
            for i, item in enumerate(value):
                if _check_kind(item) == "invalid":
                    raise ValueError(
                        f"check [{i}] must have one of the keys sql, amcheck, freshness, row_counts "
                        f"(got {item!r})"
                    )
        return value

    def effective_checks(self) -> list[Any]:
        """Return the checks to run, with pg_amcheck first unless disabled or listed explicitly."""
        listed = list(self.checks)
        if self.amcheck and not any(isinstance(c, AmcheckCheck) for c in listed):
            listed.insert(0, AmcheckCheck())
        return [c for c in listed if not (isinstance(c, AmcheckCheck) and not c.amcheck)]


class Playbook(Model):
    drill: Drill
    path: Path | None = Field(default=None, exclude=True)


def parse_playbook(data: Any, path: Path | None = None) -> Playbook:
    """Given the YAML document, return a Playbook; raise ConfigError naming the file and key."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"playbook '{path}' must be a mapping with a top-level 'drill:' key",
            hint="see playbooks/ for examples",
        )
    try:
        pb = Playbook.model_validate(data)
    except ValidationError as e:
        err = _humanize(e, path, Playbook)
        errors = err.details.get("errors")
        lines = "\n  ".join(str(x) for x in errors) if isinstance(errors, list) else err.message
        raise ConfigError(
            f"invalid playbook{f' {str(path)!r}' if path else ''}:\n  {lines}",
            hint="fix the keys named above; see docs/drills.md for the playbook format",
            details=err.details,
        ) from None
    pb.path = path
    return pb


def load_playbook(path: str | Path) -> Playbook:
    """Read and validate one playbook file; raise ConfigError when missing or invalid."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read playbook '{p}': {e.strerror}", hint="check the path") from None
    return parse_playbook(load_yaml(text, f"playbook '{p}'"), p)


def validate_against_config(pb: Playbook, cfg: Config) -> None:
    """Raise ConfigError when the playbook names a source the config lacks, or uses keys its
    source type cannot honour (SQL checks on a files source, a snapshot filter on postgres)."""
    name = pb.drill.source
    where = f"playbook '{pb.path or pb.drill.name}'"
    if name not in cfg.sources:
        raise ConfigError(
            f"{where}: unknown source '{name}'",
            hint=f"configured sources: {', '.join(sorted(cfg.sources)) or '(none)'}",
        )
    kind = cfg.sources[name].type
    if kind == "postgres":
        if pb.drill.snapshot is not None:
            raise ConfigError(
                f"{where}: 'snapshot:' selects file or volume snapshots; source '{name}' is postgres",
                hint="remove 'snapshot:'; postgres drills choose the backup from recovery_point",
            )
        return
    if pb.drill.checks:
        raise ConfigError(
            f"{where}: source '{name}' is of type '{kind}': its drill re-hashes every restored file "
            "against the snapshot; sql/amcheck/freshness/row_counts checks need a postgres source",
            hint="remove 'checks:' from the playbook",
        )
    if pb.drill.where.port is not None or pb.drill.where.os_user is not None:
        raise ConfigError(
            f"{where}: where.port and where.os_user apply to postgres drills only (source '{name}' "
            f"is of type '{kind}')",
            hint="remove them; a files drill only needs where.temp_dir and where.min_free",
        )


def _packaged_playbooks_dir() -> Path:
    """Return the example playbooks' directory: package data in an installed wheel (put there by
    build_hooks.py), else `playbooks/` at the top of the source checkout."""
    packaged = Path(__file__).parent / "playbooks"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "playbooks"


PACKAGED_PLAYBOOKS = _packaged_playbooks_dir()


def packaged_playbook_names() -> list[str]:
    """Return the names (file stems) of the example playbooks shipped with recoverctl."""
    if not PACKAGED_PLAYBOOKS.is_dir():
        return []
    return sorted(p.stem for p in PACKAGED_PLAYBOOKS.iterdir() if p.suffix in (".yaml", ".yml"))


def _locate(argument: str) -> Path:
    """Given a PLAYBOOK argument, return the path it names: the file or directory when it exists,
    else the shipped example it names (`main-nightly`, `main-nightly.yaml` or the documented
    `playbooks/main-nightly.yaml`), so the examples run from an installed wheel with no checkout."""
    path = Path(argument)
    if path.exists() or path.parent not in (Path("."), Path("playbooks")):
        return path
    for name in (path.name, f"{path.name}.yaml", f"{path.name}.yml"):
        if (PACKAGED_PLAYBOOKS / name).is_file():
            return PACKAGED_PLAYBOOKS / name
    return path


def discover_playbooks(cfg: Config, paths: list[str]) -> list[Playbook]:
    """Given PLAYBOOK arguments (files, dirs or the name of a shipped example; none = ./playbooks
    and <config dir>/playbooks), return the validated drill playbooks; raise ConfigError naming
    the file and key."""
    roots = [_locate(p) for p in paths]
    if not roots:
        roots = [Path("playbooks")]
        if cfg.path is not None:
            roots.append(cfg.path.parent / "playbooks")
    # (path, strict): a file named on the command line must be a drill playbook; a directory
    # may also hold rollback playbooks, so only its files with a top-level `drill:` count.
    candidates: list[tuple[Path, bool]] = []
    for root in roots:
        if root.is_dir():
            candidates += [(p, False) for p in sorted(root.iterdir()) if p.suffix in (".yaml", ".yml")]
        elif paths:
            candidates.append((root, True))
    seen: set[Path] = set()
    books: list[Playbook] = []
    for path, strict in candidates:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if not strict and not _is_drill_file(path):
            continue
        pb = load_playbook(path)
        validate_against_config(pb, cfg)
        books.append(pb)
    if not books:
        raise UsageError(
            f"no drill playbooks found in {', '.join(str(r) for r in roots)}",
            hint="pass a playbook file, or the name of a shipped example ("
            + ", ".join(packaged_playbook_names())
            + "): recoverctl drill run main-nightly",
        )
    names = [b.drill.name for b in books]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"drill names must be unique; repeated: {', '.join(dupes)}")
    return books


def _is_drill_file(path: Path) -> bool:
    try:
        data = load_yaml(path.read_text(), f"'{path}'")
    except (OSError, ConfigError):
        return False
    return isinstance(data, dict) and "drill" in data
