"""`python -m recoverctl.cli.wal_fetcher_entry --source NAME --spool DIR [--config FILE]`: the WAL
fetcher process a restore starts (sources/postgres/fetchspool.py names it by its module path).

It opens the repository once and keeps the next segments decrypted in the spool for
restore_command; see `recoverctl.sources.postgres.wal_fetcher`.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
from pathlib import Path

from recoverctl.sources.postgres import fetchspool
from recoverctl.sources.postgres.wal_fetcher import IDLE_S, Fetcher


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Run a fetcher for one spool; exit 0 at once when another already serves it."""
    p = argparse.ArgumentParser(prog="recoverctl-wal-fetcher", description=__doc__)
    p.add_argument("--config")
    p.add_argument("--source", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--idle", type=float, default=IDLE_S)
    args = p.parse_args(argv)
    spool = Path(args.spool)
    # PostgreSQL signals its startup process's group with these for reloads and promotion.
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, _stop)
    try:
        lock = os.open(spool / fetchspool.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, FileNotFoundError):
        return
    (spool / fetchspool.PID_FILE).write_text(str(os.getpid()))
    try:
        from recoverctl.config import load_config, repository_password
        from recoverctl.repo.configured import open_repository

        cfg = load_config(args.config)
        password = repository_password(cfg)
        if password is None:
            print("error: no repository passphrase for the WAL fetcher", file=sys.stderr)
            sys.exit(2)
        repo = open_repository(cfg, password)
        fetcher = Fetcher(repo, args.source, spool, idle=args.idle)
        try:
            fetcher.run()
        finally:
            fetcher.close()
            repo.close()
    finally:
        (spool / fetchspool.PID_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
