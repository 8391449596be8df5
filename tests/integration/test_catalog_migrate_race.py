"""Replicas started together on an empty PostgreSQL catalog (two serve pods, the workers) all
migrate it at once: exactly one creates the schema, the others wait and find it current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from recoverctl.catalog import Catalog
from tests.conftest import ROOT
from tests.fixtures.net import wait_until

# Each process imports everything first, then opens the catalog the moment the start file appears.
OPEN_ON_SIGNAL = """
import os, sys, time
from recoverctl.catalog import Catalog
open(sys.argv[3], "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.002)
Catalog(sys.argv[1]).close()
"""


def test_processes_opening_an_empty_postgres_catalog_at_once_all_succeed(pg: Any, tmp_path: Path) -> None:
    pg.psql("CREATE DATABASE recoverctl")
    url = pg.url("recoverctl")
    start = tmp_path / "start"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_ON_SIGNAL, url, str(start), str(tmp_path / f"ready-{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(6)
    ]
    try:
        wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == len(procs), timeout=60, what="imports")
        start.touch()
        outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(o[-1500:] for o in outputs)
    catalog = Catalog(url, migrate=False)
    assert catalog.current_revision() == catalog.head_revision()
    catalog.close()
