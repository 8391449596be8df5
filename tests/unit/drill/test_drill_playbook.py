from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
import yaml

from recoverctl.config import parse_config
from recoverctl.drill.playbook import (
    AmcheckCheck,
    FreshnessCheck,
    RowCountsCheck,
    SqlCheck,
    load_playbook,
    parse_playbook,
    validate_against_config,
)
from recoverctl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]

MINIMAL = """
drill:
  name: main-nightly
  source: main            # a postgres source from the config
  recovery_point: latest
  checks:
    - sql: "select count(*) from t"
      expect: ">= 1"
  targets:
    rto: 2h
    rpo: 1h
"""


def test_the_issue_minimal_playbook_is_accepted_as_is() -> None:
    pb = parse_playbook(yaml.safe_load(MINIMAL))
    d = pb.drill
    assert (d.name, d.source, d.recovery_point.kind) == ("main-nightly", "main", "latest")
    assert d.targets.rto == 7200 and d.targets.rpo == 3600
    assert isinstance(d.checks[0], SqlCheck) and d.checks[0].expect == ">= 1"
    # pg_amcheck is on by default and runs first.
    kinds = [type(c) for c in d.effective_checks()]
    assert kinds == [AmcheckCheck, SqlCheck]


@pytest.mark.parametrize("path", sorted((ROOT / "playbooks").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_playbooks_validate(path: Path) -> None:
    pb = load_playbook(path)
    sources = {
        "main": {"type": "postgres"},
        "uploads": {"type": "files", "paths": ["/srv/uploads"]},
    }
    validate_against_config(pb, parse_config({"sources": sources}, env={}))


def test_check_kinds_and_shorthands() -> None:
    pb = parse_playbook(
        {
            "drill": {
                "name": "x",
                "source": "main",
                "amcheck": False,
                "recovery_point": "random 3d",
                "checks": [
                    {"freshness": {"table": "orders", "tolerance": "30m"}},
                    {"row_counts": "5%"},
                    {"row_counts": {"tables": ["a"], "tolerance": 10}},
                    {"amcheck": True, "heapallindexed": True},
                ],
            }
        }
    )
    d = pb.drill
    assert d.recovery_point.kind == "random" and d.recovery_point.window == 3 * 86400
    fresh, rc_pct, rc_rows, am = d.checks
    assert isinstance(fresh, FreshnessCheck) and fresh.freshness.tolerance == 1800
    assert fresh.freshness.column == "created_at"
    assert isinstance(rc_pct, RowCountsCheck) and rc_pct.row_counts.tolerance.percent == 5
    assert isinstance(rc_rows, RowCountsCheck) and rc_rows.row_counts.tolerance.rows == 10
    assert rc_rows.row_counts.tolerance.allows(100, 110) and not rc_rows.row_counts.tolerance.allows(100, 111)
    # An explicit amcheck check runs even though the top-level default is off.
    assert isinstance(am, AmcheckCheck) and am.heapallindexed
    assert d.effective_checks()[-1] is am


def test_point_in_time_needs_a_zone() -> None:
    pb = parse_playbook({"drill": {"name": "x", "source": "m", "recovery_point": "2026-11-20T03:00:00Z"}})
    assert pb.drill.recovery_point.kind == "time"
    assert pb.drill.recovery_point.time is not None and pb.drill.recovery_point.time.tzinfo == UTC
    with pytest.raises(ConfigError) as e:
        parse_playbook({"drill": {"name": "x", "source": "m", "recovery_point": "2026-11-20 03:00:00"}})
    assert "has no time zone" in e.value.message


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"drill": {"name": "x", "source": "m", "chekcs": []}}, "did you mean 'checks'"),
        (
            {"drill": {"name": "x", "source": "m", "checks": [{"sqll": "select 1"}]}},
            "must have one of the keys",
        ),
        ({"drill": {"name": "x", "source": "m", "checks": [{"sql": "select 1", "expct": 1}]}}, "expct"),
        ({"drill": {"name": "x", "source": "m", "targets": {"rto": "soon"}}}, "not a duration"),
        ({"drill": {"source": "m"}}, "drill.name: required key is missing"),
        ({"drill": {"name": "a b", "source": "m"}}, "drill.name"),
        ({"drill": {"name": "x", "source": "m", "where": {"min_free": "lots"}}}, "not a size"),
        (["drill"], "must be a mapping"),
    ],
)
def test_bad_playbooks_name_the_key(doc: object, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_playbook(doc)
    assert needle in e.value.message
    assert e.value.exit_code == 2


def test_source_must_exist_and_fit_the_checks() -> None:
    pb = parse_playbook(yaml.safe_load(MINIMAL))
    with pytest.raises(ConfigError, match="unknown source 'main'"):
        validate_against_config(pb, parse_config({}, env={}))
    cfg = parse_config({"sources": {"main": {"type": "files", "paths": ["/srv"]}}}, env={})
    # SQL checks need a server; a files drill re-hashes the restore instead.
    with pytest.raises(ConfigError, match="of type 'files'"):
        validate_against_config(pb, cfg)
    files_pb = parse_playbook({"drill": {"name": "f", "source": "main", "snapshot": {"tags": {"a": "b"}}}})
    validate_against_config(files_pb, cfg)
    postgres = parse_config({"sources": {"main": {"type": "postgres"}}}, env={})
    with pytest.raises(ConfigError, match="'snapshot:' selects file or volume snapshots"):
        validate_against_config(files_pb, postgres)
