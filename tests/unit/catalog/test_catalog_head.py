from __future__ import annotations

from pathlib import Path

from recoverctl.catalog import Catalog, file_head_revision


def test_head_read_from_migration_files_matches_alembic(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}", migrate=False)
    assert catalog._stored_revisions() is None  # no schema yet: migrate() takes alembic's path
    catalog.migrate()
    assert file_head_revision() == catalog.head_revision() == catalog.current_revision()
    assert catalog._stored_revisions() == [file_head_revision()]
