"""Shared fixtures: isolated environment, the CLI as a subprocess, real servers on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faults.seam import install_storage_faults
from tests.fixtures.postgres import PgCluster

ROOT = Path(__file__).resolve().parent.parent
# recoverctl subprocesses find tests/faults/site/sitecustomize.py here: the test-only fault hooks.
FAULT_SEAM_PATH = ROOT / "tests" / "faults" / "site"

# The in-process CLI (tests/inproc_cli.py) reads RECOVERCTL_FAULTS like the subprocesses do.
install_storage_faults()

# Every module in tests/fixtures/ is a fixture plugin: a new server fixture is one new module.
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (ROOT / "tests" / "fixtures").glob("*.py") if p.stem != "__init__"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # In CI a skipped test means a missing server or package: that must fail the run, not pass silently.
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (a missing server must not pass silently): {report.longrepr}"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_json(self) -> Any:
        return json.loads(self.stderr.strip().splitlines()[-1])


class Cli:
    """Runs `python -m recoverctl` in a subprocess with an isolated environment."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("RECOVERCTL_") and k not in ("CI",)
        }
        self.env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            XDG_CACHE_HOME=str(home / "cache"),
            RECOVERCTL_CATALOG=f"sqlite:///{home / 'catalog.db'}",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(FAULT_SEAM_PATH)]),
        )
        self.config_path: Path | None = None

    def write_config(self, data: dict[str, Any] | str) -> Path:
        path = self.home / "recoverctl.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        self.config_path = path
        self.env["RECOVERCTL_CONFIG"] = str(path)
        return path

    def __call__(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: int | None = None,
    ) -> CliResult:
        r = subprocess.run(
            [sys.executable, "-m", "recoverctl", *args],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            env={**self.env, **(env or {})},
            cwd=self.home,
            timeout=timeout,
        )
        result = CliResult(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
        if check is not None and result.code != check:
            raise AssertionError(
                f"recoverctl {' '.join(args)} exited {result.code}, expected {check}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


@pytest.fixture
def pg_factory() -> Iterator[Any]:
    """Make throwaway clusters: `pg_factory(start=True, extra_conf="")`; all destroyed at teardown."""
    made: list[PgCluster] = []

    def make(start: bool = True, extra_conf: str = "", checksums: bool = True) -> PgCluster:
        c = PgCluster(checksums=checksums)
        made.append(c)
        c.initdb(extra_conf)
        if start:
            c.start()
        return c

    yield make
    for c in made:
        c.destroy()


@pytest.fixture
def pg(pg_factory: Any) -> PgCluster:
    cluster: PgCluster = pg_factory()
    return cluster
