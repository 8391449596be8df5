"""The wheel and sdist carry what an installed recoverctl needs beyond its modules.

Example playbooks (`playbooks/`), the monitoring files (`contrib/`) and the LICENSE live at the top
of the checkout; build_hooks.py and MANIFEST.in put them into the wheel and the sdist. The wheel is
built offline (`--no-build-isolation --no-index`) with the test environment's setuptools and
installed with `--target`; `python -I` then sees that copy and the venv's dependencies, never the
checkout, whatever PYTHONPATH the suite has.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import recoverctl
from tests.fixtures.wheel import PIP, build_dist

ROOT = Path(recoverctl.__file__).resolve().parent.parent
PLAYBOOKS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yaml"))
CONTRIB = sorted(p.name for p in (ROOT / "contrib").iterdir() if p.is_file())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dist(tmp_path_factory.mktemp("packaging"))


def test_wheel_carries_playbooks_contrib_license_and_classifiers(built: Path) -> None:
    (wheel,) = built.glob("recoverctl-*.whl")
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    assert PLAYBOOKS and {f"recoverctl/drill/playbooks/{n}" for n in PLAYBOOKS} <= names
    assert {"alertmanager.yml", "prometheus-rules.yml", "grafana-dashboard.json"} <= set(CONTRIB)
    assert {f"recoverctl/contrib/{n}" for n in CONTRIB} <= names
    license_file = "recoverctl-0.1.0.dist-info/licenses/LICENSE"
    assert "Apache License" in archive.read(license_file).decode()
    meta = Parser().parsestr(archive.read("recoverctl-0.1.0.dist-info/METADATA").decode())
    assert meta["License-Expression"] == "Apache-2.0"
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Topic :: System :: Archiving :: Backup" in classifiers
    # pyproject names no package data that does not exist (the catalog's alembic.ini never did).
    assert not any(n.endswith("alembic.ini") for n in names)


def test_sdist_carries_what_the_wheel_is_built_from(built: Path) -> None:
    (sdist,) = built.glob("recoverctl-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "build_hooks.py", "MANIFEST.in", "migrations_rollback/env.py"} <= names
    assert {f"playbooks/{n}" for n in PLAYBOOKS} <= names
    assert {f"contrib/{n}" for n in CONTRIB} <= names


def test_installed_wheel_finds_its_packaged_playbooks(built: Path, tmp_path: Path) -> None:
    (wheel,) = built.glob("recoverctl-*.whl")
    site = tmp_path / "site"
    subprocess.run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", site, wheel], check=True)
    home = tmp_path / "home"  # no playbooks/ here or beside the config: only the packaged copies
    home.mkdir()
    config = home / "recoverctl.yaml"
    config.write_text("sources:\n  main:\n    type: postgres\n")
    probe = (
        "import json, recoverctl.drill.playbook as p; from recoverctl.config import load_config; "
        f"cfg = load_config({str(config)!r}); "
        "books = p.discover_playbooks(cfg, ['main-nightly', 'playbooks/main-weekly-random.yaml']); "
        "print(json.dumps([p.__file__, [str(b.path) for b in books], p.packaged_playbook_names()]))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=home,
    ).stdout
    module, paths, names = json.loads(out)
    assert Path(module).is_relative_to(site)
    packaged = site / "recoverctl" / "drill" / "playbooks"
    assert [Path(p) for p in paths] == [packaged / "main-nightly.yaml", packaged / "main-weekly-random.yaml"]
    assert names == [Path(n).stem for n in PLAYBOOKS]

    # The CLI entry point of the installed copy: `drill run NAME` gets past the playbook to the
    # repository's passphrase (none is given here), so the packaged example was found and validated.
    cli = "import sys; sys.path.insert(0, sys.argv.pop(1)); from recoverctl.cli.main import main; main()"
    run = subprocess.run(
        [sys.executable, "-I", "-c", cli, str(site), "--config", str(config), "drill", "run", "main-nightly"],
        capture_output=True,
        text=True,
        cwd=home,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    assert run.returncode == 2
    assert "no repository passphrase given" in run.stderr, run.stderr
