"""The test-only fault hooks stay out of production: recoverctl never imports them, and without
the seam on the path their variables change nothing (tests/faults/)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import recoverctl

PACKAGE = Path(recoverctl.__file__).resolve().parent
ROOT = PACKAGE.parent
SEAM = ROOT / "tests" / "faults" / "site"

PROBE = """
import json, sys, tempfile
import recoverctl.cli.main, recoverctl.actions.rollback, recoverctl.catalog.rollbacks
from recoverctl.storage import open_storage
storage = open_storage(tempfile.mkdtemp())
print(json.dumps({
    "inner": type(storage.inner).__name__,
    "fault_modules": sorted(m for m in sys.modules if m.split(".")[0] == "tests" or m.endswith(".faults")),
}))
"""


def _probe(pythonpath: list[Path]) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVERCTL_")}
    env.update(
        PYTHONPATH=os.pathsep.join(map(str, pythonpath)),
        RECOVERCTL_FAULTS="put:error:*",
        RECOVERCTL_FAULT_CRASH_AFTER_STEP="stop_current",
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_no_recoverctl_module_imports_the_tests() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] == "tests"
            ]
    assert not found, "production code imports test code:\n" + "\n".join(found)


def test_fault_variables_do_nothing_without_the_seam() -> None:
    got = _probe([ROOT])
    assert got == {"inner": "LocalStorage", "fault_modules": []}


def test_seam_on_the_path_wraps_storage_in_faults() -> None:
    got = _probe([ROOT, SEAM])
    assert got["inner"] == "FaultyStorage"
    assert "tests.faults.seam" in got["fault_modules"]  # type: ignore[operator]


CRASH = """
import sys
from recoverctl.catalog import Catalog
from recoverctl.catalog import rollbacks
from recoverctl.catalog.releases import insert_release

catalog = Catalog(sys.argv[1])
with catalog.begin() as conn:
    old = insert_release(conn, "web", "v1", "good")
    new = insert_release(conn, "web", "v2", "live")
rb = rollbacks.create_rollback(
    catalog, "web", from_release=new, to_release=old, schema_mode="keep", reason=None, actor="t",
    plan={}, steps=("lock", "stop_current", "schema"),
)
rollbacks.end_step(catalog, rb, "stop_current", "done", {"hosts": []})
rollbacks.end_step(catalog, rb, "schema", "skipped", None)
"""


def test_crash_hook_kills_right_after_the_named_step_is_recorded(tmp_path: Path) -> None:
    from recoverctl.catalog import Catalog
    from recoverctl.catalog.rollbacks import list_steps

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVERCTL_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(SEAM)]), RECOVERCTL_FAULT_CRASH_AFTER_STEP="stop_current"
    )
    done = subprocess.run(
        [sys.executable, "-c", CRASH, url], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == -9, done.stderr
    catalog = Catalog(url)
    try:
        assert [(s.name, s.state) for s in list_steps(catalog, 1)] == [
            ("lock", "done"),
            ("stop_current", "done"),
            ("schema", "pending"),
        ]
    finally:
        catalog.close()
