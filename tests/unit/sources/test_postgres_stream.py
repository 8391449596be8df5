"""Streaming mode's pieces that need no server: the partial copy's format, the lag arithmetic,
the receiver's password file and the generated service definitions."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from recoverctl.config import parse_config
from recoverctl.scheduler.install import stream_manifests, stream_units, systemd_units
from recoverctl.sources.postgres.receiver import passfile, receiver_argv, set_aside_diverged, slot_name
from recoverctl.sources.postgres.receiver_partial import decode_partial, encode_partial, partial_key
from recoverctl.sources.postgres.stream import LagMeter
from recoverctl.sources.postgres.walnames import SEGMENT_RE, wal_key

SEG = "000000010000000000000007"


def test_partial_copy_round_trips_to_the_padded_file_and_never_looks_like_a_segment() -> None:
    padded = b"\x01\x02" * 1000 + b"\0\0\x03" + b"\0" * (16 * 1024 * 1024 - 2003)
    stored = encode_partial(padded)
    assert len(stored) == 8 + 2003  # the padding is not uploaded every interval
    assert decode_partial(stored) == padded
    key = partial_key("main", SEG)
    assert key.startswith("wal/main/00000001/") and not SEGMENT_RE.match(key.rsplit("/", 1)[-1])
    # a prefix listing of the segment's key (how backups wait for WAL) never finds the partial
    assert not key.startswith(wal_key("main", SEG))


def test_lag_counts_since_the_primary_was_last_at_an_uploaded_position() -> None:
    meter = LagMeter()
    assert meter.lag(None, 100.0) == (None, None)
    meter.add(100.0, 1000)
    meter.add(102.0, 5000)
    meter.add(104.0, 9000)
    assert meter.lag(4000, 105.0) == (5000, 5.0)  # only what the primary had at t=100 is safe
    assert meter.lag(5000, 105.0) == (4000, 3.0)  # everything up to t=102 is
    assert meter.lag(9000, 105.0) == (0, 0.0)
    assert len(meter.samples) == 1  # what is held no longer needs remembering


def test_password_reaches_pg_receivewal_only_through_a_private_passfile() -> None:
    cfg = parse_config(
        {"sources": {"Main-DB": {"type": "postgres", "password": "s3:cr\\et", "wal": {"mode": "stream"}}}}
    )
    src = cfg.sources["Main-DB"]
    with passfile(src) as env:  # type: ignore[arg-type]
        path = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as f:
            assert f.read() == "*:*:*:*:s3\\:cr\\\\et\n"
        argv = receiver_argv(Path("/bin"), Path("/spool"), "host=x", slot_name("Main-DB", src))  # type: ignore[arg-type]
        assert "s3:cr" not in " ".join(argv) and "--synchronous" in argv and "--no-loop" in argv
    assert not os.path.exists(path)
    assert slot_name("Main-DB", src) == "recoverctl_main_db"  # type: ignore[arg-type]


def test_units_keep_one_receiver_per_streaming_source_running() -> None:
    cfg = parse_config(
        {
            "sources": {
                "main": {"type": "postgres", "os_user": "pg", "wal": {"mode": "stream"}},
                "other": {"type": "postgres"},
            }
        }
    )
    (unit,) = stream_units(cfg)
    assert unit.filename == "recoverctl-main-wal-stream.service"
    assert "Restart=always" in unit.text and "User=pg" in unit.text
    assert "wal stream --source main" in unit.text
    assert [u.filename for u in systemd_units(cfg)] == [unit.filename]
    (manifest,) = stream_manifests(cfg, "example/recoverctl:1")
    deployment, claim = list(yaml.safe_load_all(manifest.text))
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-4:] == ["wal", "stream", "--source", "main"]
    assert claim["kind"] == "PersistentVolumeClaim"


def test_metrics_and_status_report_the_receivers_last_heartbeat(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from recoverctl.actions.wal_stream import ROLE, heartbeat_name, receiver_verdict
    from recoverctl.catalog import Catalog
    from recoverctl.catalog.leases import heartbeat
    from recoverctl.service.metrics import Metrics

    cfg = parse_config({"sources": {"main": {"type": "postgres", "wal": {"mode": "stream"}}}})
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        assert receiver_verdict(cfg, catalog, "main", 0.0)[0] == "red"  # type: ignore[index]
        details = {"source": "main", "slot": "recoverctl_main", "receiver_pid": 42, "lag_bytes": 8192,
                   "lag_seconds": 1.5, "restarts": 1}  # fmt: skip
        heartbeat(catalog, heartbeat_name("main"), ROLE, details)
        text = generate_latest(Metrics(cfg, catalog).registry).decode()
        assert 'recoverctl_wal_stream_lag_bytes{source="main"} 8192.0' in text
        assert 'recoverctl_wal_stream_lag_seconds{source="main"} 1.5' in text
        assert 'recoverctl_wal_stream_up{source="main"} 1.0' in text
        verdict = receiver_verdict(cfg, catalog, "main", time.time())
        assert verdict is not None and verdict[0] == "green" and "1.5s (8.0 KiB) behind" in verdict[1]
        assert receiver_verdict(cfg, catalog, "main", time.time() + 60)[0] == "red"  # type: ignore[index]
    finally:
        catalog.close()


FORK = "ERROR:  requested starting point 0/6000000 on timeline 1 is not in this server's history\n"


def test_after_a_failover_the_spool_resumes_at_the_fork(tmp_path: Path) -> None:
    size = 1 << 20

    def spool(*names: str) -> Path:
        d = tmp_path / names[0]
        d.mkdir()
        for n in names:
            (d / n).write_bytes(b"w" * size)
        return d

    def stored(name: str) -> bytes:
        return b"s" * size

    # mid-segment fork: what follows is set aside, the segment before it comes back from the repository
    d = spool("000000010000000000000005", "000000010000000000000006.partial")
    detail = FORK + "DETAIL:  This server's history forked from timeline 1 at 0/580000.\n"
    assert set_aside_diverged(d, detail, stored) == [
        "000000010000000000000005",
        "000000010000000000000006.partial",
    ]
    assert (d / "000000010000000000000004").read_bytes() == stored("")
    assert (d / "000000010000000000000005.diverged").exists()
    # a fork on a segment boundary: start the new timeline there
    d = spool("000000010000000000000006", "000000010000000000000007.partial")
    detail = FORK + "DETAIL:  This server's history forked from timeline 1 at 0/700000.\n"
    assert set_aside_diverged(d, detail, stored) == ["000000010000000000000007.partial"]
    assert (d / "000000020000000000000007.partial").stat().st_size == size
    assert set_aside_diverged(d, "FATAL: password authentication failed", stored) == []


def test_wal_section_defaults_to_archive_mode_and_validates_its_values() -> None:
    from recoverctl.errors import ConfigError

    src = parse_config({"sources": {"main": {"type": "postgres"}}}).sources["main"]
    assert src.wal.mode == "archive" and src.wal.flush_interval == 2.0  # type: ignore[union-attr]
    src = parse_config(
        {"sources": {"main": {"type": "postgres", "wal": {"mode": "stream", "flush_interval": "500ms"}}}}
    ).sources["main"]
    assert src.wal.flush_interval == 0.5  # type: ignore[union-attr]
    for bad in ({"mode": "push"}, {"slot": "Bad-Slot"}, {"slot_warn_ratio": 2}):
        with pytest.raises(ConfigError, match="wal"):
            parse_config({"sources": {"main": {"type": "postgres", "wal": bad}}})
