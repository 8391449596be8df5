"""setuptools build step that ships top-level directories of the checkout inside the wheel.

Three directories live at the top of the source tree, beside the package, because people read and
edit them there: `migrations_rollback/` (the alembic environment recoverctl runs an application's
migration scripts with), `playbooks/` (example drill playbooks) and `contrib/` (Prometheus rules,
Alertmanager config, Grafana dashboard). An installed recoverctl finds them as package data:
`recoverctl.appdb.migrations.ENV_DIR`, `recoverctl.drill.playbook.PACKAGED_PLAYBOOKS` and
`recoverctl/contrib/`. Named in pyproject.toml under [tool.setuptools.cmdclass]; MANIFEST.in
puts the same directories (and this file) into the sdist so a wheel built from it has them too.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py as _setuptools_build_py

TOP = Path(__file__).resolve().parent

# (source directory at the top of the checkout, where it lands in the package, file suffixes shipped)
SHIPPED: tuple[tuple[str, tuple[str, ...], frozenset[str]], ...] = (
    ("migrations_rollback", ("recoverctl", "appdb", "migrations_rollback"), frozenset({".py", ".mako"})),
    ("playbooks", ("recoverctl", "drill", "playbooks"), frozenset({".yaml", ".yml"})),
    ("contrib", ("recoverctl", "contrib"), frozenset({".yml", ".yaml", ".json"})),
)


class build_py(_setuptools_build_py):  # setuptools names its command class build_py
    """setuptools' build_py, plus a copy of each SHIPPED top-level directory into the built package."""

    def run(self) -> None:
        super().run()
        for source, packaged_at, suffixes in SHIPPED:
            target = Path(self.build_lib, *packaged_at)
            self.mkpath(str(target))
            for path in sorted((TOP / source).iterdir()):
                if path.is_file() and path.suffix in suffixes:
                    self.copy_file(str(path), str(target / path.name))
