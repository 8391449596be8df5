"""The alembic environment of schema rollbacks (`migrations_rollback/`, top level) ships in the wheel.

A rollback on a production host runs from the installed package, so a non-editable install must
carry the environment where `recoverctl.appdb.migrations.ENV_DIR` looks for it. The wheel is built
offline from the checkout (`--no-build-isolation --no-index`) with the test environment's setuptools.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import recoverctl
from recoverctl.appdb import migrations
from tests.fixtures.wheel import PIP, build_dist

ROOT = Path(recoverctl.__file__).resolve().parent.parent
SHIPPED = ("env.py", "script.py.mako")


def test_source_checkout_finds_the_top_level_environment() -> None:
    assert migrations.ENV_DIR == ROOT / "migrations_rollback"
    assert all((migrations.ENV_DIR / name).is_file() for name in SHIPPED)


def test_installed_wheel_carries_and_finds_the_environment(tmp_path: Path) -> None:
    (wheel,) = build_dist(tmp_path).glob("recoverctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"recoverctl/appdb/migrations_rollback/{name}" for name in SHIPPED} <= names

    site = tmp_path / "site"
    subprocess.run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", site, wheel], check=True)
    probe = (
        "import json, recoverctl.appdb.migrations as m; "
        "print(json.dumps([m.__file__, str(m.ENV_DIR), sorted(p.name for p in m.ENV_DIR.iterdir())]))"
    )
    # -I: only the installed copy on the path, not the checkout, whatever PYTHONPATH the suite has.
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    module, env_dir, files = json.loads(out)
    assert Path(module).is_relative_to(site)
    assert Path(env_dir) == site / "recoverctl" / "appdb" / "migrations_rollback"
    assert set(SHIPPED) <= set(files)
