"""recoverctl: backups, scored restore drills and data-aware rollbacks for PostgreSQL web stacks."""

__version__ = "0.1.0"
