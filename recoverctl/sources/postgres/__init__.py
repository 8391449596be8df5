"""PostgreSQL as a backup source: connection, low-level backup session, file selection, page
checksums, WAL naming, recovery configuration and the restored server's lifecycle."""
