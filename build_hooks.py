"""setuptools build step that ships the top-level `migrations_rollback/` inside the wheel.

The alembic environment recoverctl runs an application's migration scripts with lives beside
`playbooks/` in the source tree; an installed recoverctl finds it as package data at
`recoverctl/appdb/migrations_rollback/` (see `recoverctl.appdb.migrations.ENV_DIR`).
Named in pyproject.toml under [tool.setuptools.cmdclass].
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py as _setuptools_build_py

SOURCE = Path(__file__).resolve().parent / "migrations_rollback"
PACKAGED_AT = ("recoverctl", "appdb", "migrations_rollback")


class build_py(_setuptools_build_py):  # setuptools names its command class build_py
    """setuptools' build_py, plus a copy of migrations_rollback/ into the built package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib, *PACKAGED_AT)
        self.mkpath(str(target))
        for path in sorted(SOURCE.iterdir()):
            if path.is_file() and path.suffix in {".py", ".mako"}:
                self.copy_file(str(path), str(target / path.name))
