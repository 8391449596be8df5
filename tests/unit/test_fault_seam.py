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
