"""File snapshot drills on a real local repository: restore through `restore`, re-hash, score, clean up."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from recoverctl.repo import Repository
from recoverctl.repo.pack import pack_key
from recoverctl.repo.reader import find_node, restore_snapshot
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.fixtures.docker_engine import DockerEngine
from tests.inproc_cli import InProcessCli

pytestmark = pytest.mark.integration

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


@pytest.fixture
def env(cli: Cli, tmp_path: Path) -> tuple[InProcessCli, Path, Path]:
    """A repository, a files source 'docs' backed up once, and an empty drill parent dir."""
    icli = InProcessCli(cli)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(1_500_000))
    (src / "sub" / "b.txt").write_bytes(b"hello drill\n" * 1000)
    (src / "empty").write_bytes(b"")
    icli.write_config(
        {
            "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
            "sources": {"docs": {"type": "files", "paths": [str(src)]}},
        }
    )
    icli.env["RECOVERCTL_PASSWORD"] = "pw"
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    icli("backup", "files", str(src), "--source", "docs", "--tag", "env=test", "--json", check=0)
    parent = tmp_path / "drills"
    parent.mkdir()
    return icli, src, parent


def _playbook(path: Path, parent: Path, **extra: Any) -> Path:
    body: dict[str, Any] = {
        "name": "docs-nightly",
        "source": "docs",
        "recovery_point": "latest",
        "targets": {"rto": "1h", "rpo": "1h"},
        "where": {"temp_dir": str(parent)},
    }
    body.update(extra)
    path.write_text(yaml.safe_dump({"drill": body}))
    return path


def _pins(cli: InProcessCli) -> int:
    with sqlite3.connect(cli.home / "catalog.db") as db:
        return int(db.execute("select count(*) from pins").fetchone()[0])


def test_files_drill_passes_rehashing_every_file(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path
) -> None:
    cli, _, parent = env
    pb = _playbook(tmp_path / "docs.yaml", parent, snapshot={"tags": {"env": "test"}})
    r = cli("drill", "run", str(pb), "--json", check=0)
    d = r.json()
    assert d["verdict"] == "pass", d["reason"]
    assert list(d["phases"]) == ["select", "fetch", "checks"]
    assert d["rto_s"] >= sum(d["phases"].values()) - 0.01
    assert 0 <= d["rpo_s"] < 600 and d["rpo_basis"] == "snapshot time"
    [check] = d["checks"]
    assert check["name"] == "rehash" and check["ok"]
    assert check["details"]["files_checked"] == 3
    assert check["details"]["bytes_checked"] == 1_500_000 + 12_000 == d["bytes"]
    assert d["details"]["workspace_removed"] is True
    assert list(parent.iterdir()) == [] and _pins(cli) == 0

    # A tighter RPO target than the snapshot's age fails the drill naming both numbers.
    tight = _playbook(tmp_path / "tight.yaml", parent, name="docs-tight", targets={"rpo": "0s"})
    r = cli("drill", "run", str(tight), "--json", check=13)
    assert r.json()["verdict"] == "fail" and "RPO" in r.json()["reason"]
    assert "exceeds the target 0s" in r.json()["reason"]

    hist = cli("drill", "history", "--source", "docs", "--json", check=0).json()
    assert [h["verdict"] for h in hist] == ["pass", "fail"]
    md = cli("drill", "report", str(d["id"]), "--format", "md", check=0).stdout
    assert "rehash" in md and "3 files, 1.4 MiB re-hashed" in md
    assert "3 files, 1.4 MiB, 0 mismatching" in md and "LSN" not in md
    text = cli("drill", "run", str(pb), check=0).stdout
    assert "re-hashed: 3 files, 1.4 MiB, 0 mismatching" in text
    html = cli("drill", "report", str(d["id"]), "--format", "html", check=0).stdout
    assert 'class="rc-trend"' in html and "rehash" in html


def test_flipped_byte_in_a_pack_fails_the_drill_at_fetch_naming_the_pack(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path
) -> None:
    cli, src, parent = env
    repo = Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    snap = repo.resolve_snapshot("latest")
    blob = bytes.fromhex(find_node(repo, snap, f"{src}/a.bin")["content"][0])
    loc = repo.load_index().get(blob)
    assert loc is not None
    pack_file = tmp_path / "repo" / pack_key(loc.pack)
    raw = bytearray(pack_file.read_bytes())
    raw[loc.offset + 100] ^= 0xFF
    pack_file.write_bytes(bytes(raw))

    r = cli("drill", "run", str(_playbook(tmp_path / "docs.yaml", parent)), "--json", check=13)
    d = r.json()
    assert d["verdict"] == "fail" and d["failed_phase"] == "fetch"
    assert loc.pack in d["reason"] and f"{src}/a.bin" in d["reason"]
    assert d["rto_s"] is None and d["checks"] == []
    assert list(parent.iterdir()) == [] and _pins(cli) == 0
    with sqlite3.connect(cli.home / "catalog.db") as db:
        (details,) = db.execute("select details from events where kind = 'drill.failed'").fetchone()
    assert json.loads(details)["failed_phase"] == "fetch"


def test_rehash_names_a_file_changed_on_disk_after_the_restore(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path
) -> None:
    from recoverctl.drill.rehash import rehash_tree

    _, src, _ = env
    repo = Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    snap = repo.resolve_snapshot("latest")
    out = tmp_path / "out"
    restore_snapshot(repo, snap.id, str(out))
    assert rehash_tree(repo, snap, out).mismatch_count == 0
    restored = out / str(src).lstrip("/")
    data = bytearray((restored / "a.bin").read_bytes())
    data[1_400_000] ^= 1
    (restored / "a.bin").write_bytes(bytes(data))
    (restored / "sub" / "b.txt").unlink()
    r = rehash_tree(repo, snap, out)
    assert r.files == 3 and r.mismatch_count == 2
    why = {m["path"]: m["why"] for m in r.mismatches}
    assert "differs" in why[f"{src}/a.bin"] and why[f"{src}/sub/b.txt"] == "missing after the restore"


def test_files_playbook_rejects_postgres_checks(env: tuple[InProcessCli, Path, Path], tmp_path: Path) -> None:
    cli, _, parent = env
    pb = _playbook(tmp_path / "bad.yaml", parent, checks=[{"sql": "select 1"}])
    r = cli("drill", "run", str(pb), "--json", check=2)
    assert "re-hashes every restored file" in r.error_json()["message"]


def test_volume_drill_restores_and_rehashes_a_real_docker_volume(
    cli: Cli, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    import uuid

    client = docker_engine.client()
    name = f"rc-drill-{uuid.uuid4().hex[:8]}"
    vol = client.volumes.create(name)
    try:
        mp = Path(vol.attrs["Mountpoint"])
        (mp / "uploads").mkdir()
        (mp / "uploads" / "a.jpg").write_bytes(os.urandom(300_000))
        (mp / "db.sqlite").write_text("rows\n" * 1000)
        icli = InProcessCli(cli)
        icli.write_config(
            {
                "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
                "sources": {"uploads": {"type": "volume", "volume": name}},
            }
        )
        icli.env["RECOVERCTL_PASSWORD"] = "pw"
        Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
        icli("backup", "volume", name, "--json", check=0)
        parent = tmp_path / "drills"
        pb = _playbook(tmp_path / "vol.yaml", parent, name="uploads-weekly", source="uploads")
        d = icli("drill", "run", str(pb), "--json", check=0).json()
        assert d["verdict"] == "pass", d["reason"]
        assert d["checks"][0]["details"]["files_checked"] == 2
        assert d["checks"][0]["details"]["bytes_checked"] == 300_000 + 5000
        assert list(parent.iterdir()) == []
    finally:
        vol.remove(force=True)


def test_drill_job_kind_runs_the_playbook_and_fails_the_job_on_a_failed_drill(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path
) -> None:
    from recoverctl.actions.job_kinds import execute_kind
    from recoverctl.catalog import Catalog
    from recoverctl.config import load_config
    from recoverctl.errors import VerificationError

    cli, _, parent = env
    cfg_path = cli.home / "playbooks"
    cfg_path.mkdir()
    _playbook(cfg_path / "docs.yaml", parent)
    _playbook(cfg_path / "tight.yaml", parent, name="docs-tight", targets={"rpo": "0s"})
    cfg = load_config(str(cli.base.config_path))
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RECOVERCTL_PASSWORD", "pw")
            # A relative playbook path is found beside the config file.
            out = execute_kind(cfg, catalog, "drill", {"target": "playbooks/docs.yaml", "job_id": 1})
            assert out["result"] == "succeeded" and out["drills"][0]["verdict"] == "pass"
            with pytest.raises(VerificationError, match="docs-tight: RPO") as e:
                execute_kind(cfg, catalog, "drill", {"target": str(cfg_path / "tight.yaml"), "job_id": 2})
            assert e.value.details["drills"][0]["verdict"] == "fail"
    finally:
        catalog.close()
    assert list(parent.iterdir()) == []


def test_alert_policy_runs_a_drill_through_the_queue(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path, serve_factory: Any
) -> None:

    cli, src, parent = env
    token = "drill-policy-token-0123456789"
    (cli.home / "token").write_text(token + "\n")
    pb = _playbook(tmp_path / "docs.yaml", parent)
    cli.write_config(
        {
            "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
            "sources": {"docs": {"type": "files", "paths": [str(src)]}},
            "serve": {"auth": {"bearer_token_file": str(cli.home / "token")}, "poll_interval": "0.1s"},
            "policies": [
                {
                    "name": "drill-on-bitrot",
                    "match": {"alertname": "BitRot"},
                    "action": "drill",
                    "playbook": str(pb),
                }
            ],
        }
    )
    srv = serve_factory(cli.base, token=token)
    body = {"alertname": "BitRot", "labels": {"host": "nas"}, "id": "rot-1"}
    d = srv.post("/hooks/generic", body).json()["decisions"][0]
    assert d["decision"] == "acted", d
    job = srv.wait_job(d["job_id"], timeout=120)
    assert job["state"] == "succeeded", job
    hist = cli("drill", "history", "--json", check=0).json()
    assert [(h["name"], h["verdict"]) for h in hist] == [("docs-nightly", "pass")]


def test_status_shows_the_repository_size_and_last_verify_and_the_files_drill(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path
) -> None:
    cli, _, parent = env
    before = cli("status", "--json", check=None).json()
    assert before["repository"]["reason"] == "repository never verified"
    assert before["repository"]["size_bytes"] is None
    # A files source without drills shows no drill item (drills are optional there).
    assert "drill" not in before["sources"][0]["items"]

    cli("verify", "--json", check=0)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "repo").rglob("*") if p.is_file())
    cli("drill", "run", str(_playbook(tmp_path / "docs.yaml", parent)), "--json", check=0)
    repo = cli("status", "--json", check=None).json()["repository"]
    assert repo["status"] == "green" and repo["reason"].startswith("verified ")
    assert repo["url"] == f"file://{tmp_path / 'repo'}"
    assert repo["size_bytes"] == on_disk and repo["objects"] > 3
    assert set(repo["size_by_prefix"]) >= {"data", "index", "snapshots", "keys"}
    assert (
        repo["last_verify"]["status"] == "succeeded" and repo["size_measured_at"] >= repo["last_verify"]["at"]
    )
    docs = cli("status", "--json", check=None).json()["sources"][0]["items"]
    assert docs["drill"]["status"] == "green" and "passed" in docs["drill"]["reason"]

    # Another repository's verify does not count for this one.
    with sqlite3.connect(cli.home / "catalog.db") as db:
        db.execute("update runs set repository = 'file:///elsewhere' where kind = 'verify'")
    assert cli("status", "--json", check=None).json()["repository"]["reason"] == "repository never verified"


def test_sigint_mid_fetch_removes_the_restore_and_the_pin(
    env: tuple[InProcessCli, Path, Path], tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    from tests.fixtures.net import wait_until

    cli, _, parent = env
    pb = _playbook(tmp_path / "docs.yaml", parent)
    # Every pack read fails transiently, with 1 s retry back-off: the fetch lasts until the
    # retries run out (~9 s), so the signal cannot miss it. A fault count would let the parallel
    # restore use the faults up in one round and finish before a loaded machine sends the signal.
    faults = {**cli.env, "RECOVERCTL_FAULTS": "get:transient:*@data/"}
    cfg = yaml.safe_load(cli.base.config_path.read_text())
    cfg["repository"]["retry"] = {"initial": "1s", "maximum": "1s", "attempts": 10}
    cli.write_config(cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recoverctl", "drill", "run", str(pb), "--json"],
        env=faults,
        cwd=cli.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: list(parent.iterdir()), timeout=60, interval=0.02, what="the drill's temp dir")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert list(parent.iterdir()) == [] and _pins(cli) == 0
    with sqlite3.connect(cli.home / "catalog.db") as db:
        assert db.execute("select verdict, reason from drills").fetchall() == [
            ("cancelled", "cancelled during fetch")
        ]
