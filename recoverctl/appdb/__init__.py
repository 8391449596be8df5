"""The application database (not recoverctl's catalog): its alembic revisions, planned and run up
or down with recoverctl's own environment (`migrations_rollback/`), and the restore points that
mark a deploy."""
