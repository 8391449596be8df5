"""`recoverctl-wal push|fetch`: archive_command and restore_command with a small start-up.

PostgreSQL starts one process per WAL file. The full CLI imports every capability (SQLAlchemy,
click groups, ...); this entry point imports only the config, the repository and the WAL
action, and keeps the exit codes and error format of `recoverctl wal push|fetch`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from recoverctl.sources.postgres.walresults import WalFetch, WalPush


def _archive_call(argv: list[str]) -> tuple[str, str] | None:
    """Given argv, return (source, path) when it is exactly the archive_command shape
    `[--config C] push --source S PATH`, else None (argparse then decides).

    Most archive_command calls only consume a push-ahead marker; parsing them by hand keeps
    argparse (and its imports) off that path.
    """
    rest = list(argv)
    if rest[:1] == ["--config"] and len(rest) > 1:
        rest = rest[2:]
    elif rest[:1] and rest[0].startswith("--config="):
        rest = rest[1:]
    if len(rest) == 4 and rest[0] == "push" and rest[1] == "--source" and not rest[3].startswith("-"):
        return rest[2], rest[3]
    if (
        len(rest) == 3
        and rest[0] == "push"
        and rest[1].startswith("--source=")
        and not rest[2].startswith("-")
    ):
        return rest[1][len("--source=") :], rest[2]
    return None


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="recoverctl-wal", description=__doc__)
    p.add_argument("--config", help="config file (default: as for recoverctl)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="store WAL file PATH (archive_command)")
    push.add_argument("path")
    push.add_argument("--source")
    fetch = sub.add_parser("fetch", help="write WAL file NAME to DEST (restore_command)")
    fetch.add_argument("name")
    fetch.add_argument("dest")
    fetch.add_argument("--source")
    return p


def _handed_off(args: argparse.Namespace) -> bool:
    """Finish from the local hand-off files when a previous call already did the work."""
    if args.command == "fetch":
        return _fetched_ahead(args)
    from recoverctl.sources.postgres import walspool

    size = walspool.wait_pushed(Path(args.path), args.source)
    if size is None:
        return False
    if args.json:
        from recoverctl.sources.postgres.walresults import WalPush

        name = Path(args.path).name
        _print_json(WalPush(name, args.source, "already-archived", size, handed_off=True).to_json())
    return True


def _print_json(data: object) -> None:
    import json

    print(json.dumps(data, default=str))


def _fetched_ahead(args: argparse.Namespace) -> bool:
    """Serve a fetch through the spool's background fetcher (started here when none runs).

    Exit 10 (nothing written) when the fetcher found no such file in the archive; return False
    when the caller must fetch directly (the name is not a WAL file name, or the fetcher failed).
    """
    import json
    import re

    from recoverctl.sources.postgres import fetchspool

    if not re.fullmatch(r"[0-9A-F]{24}|[0-9A-F]{8}\.history", args.name):
        return False
    size = fetchspool.fetch(Path(args.dest), args.source, args.name, args.config)
    if size is None:
        return False
    if size == fetchspool.MISSING:
        from recoverctl.errors import NotFoundError

        e = NotFoundError(
            f"WAL file '{args.name}' is not in the archive of source '{args.source}'",
            hint="expected at the end of the archive; otherwise the archive has a gap",
        )
        if args.json:
            print(json.dumps(e.to_dict(), default=str), file=sys.stderr)
        else:
            print(f"error: {e.message}\nhint: {e.hint}", file=sys.stderr)
        sys.exit(int(e.exit_code))
    if args.json:
        from recoverctl.sources.postgres.walresults import WalFetch

        _print_json(WalFetch(args.name, args.source, size, prefetched=True).to_json())
    return True


def main(argv: list[str] | None = None, *, spool: bool = True) -> None:
    """Run push or fetch; exit 0, or the RecoverctlError's exit code with the error on stderr.

    `spool=False`: the caller already tried the local hand-off files (`wal_fetch_entry`).
    """
    quick = _archive_call(sys.argv[1:] if argv is None else argv)
    if quick is not None and quick[0]:
        from recoverctl.sources.postgres import walspool

        if walspool.wait_pushed(Path(quick[1]), quick[0]) is not None:
            sys.exit(0)
    args = _parser().parse_args(argv)
    if args.source and spool and _handed_off(args):
        sys.exit(0)
    if sys.flags.no_site:
        # restore_command runs us with -S (site's .pth processing is most of a bare start-up);
        # past the spool, the full path needs the installed dependencies.
        import site

        site.main()
    # Past the hand-off (that path stays thin) and before any thread; a detached pusher forked
    # later inherits it.
    from recoverctl.repo.malloc_tuning import tune_malloc

    tune_malloc()
    import json

    from recoverctl.config import load_config, repository_password
    from recoverctl.errors import RecoverctlError, UsageError

    try:
        cfg = load_config(args.config)
        password = repository_password(cfg)
        if password is None:
            raise UsageError(
                "no repository passphrase for the WAL command",
                hint="set RECOVERCTL_PASSWORD_FILE or repository.password_file "
                "(readable by the server's OS user)",
            )
        from recoverctl.actions import wal

        result: WalPush | WalFetch
        if args.command == "push":
            result = wal.wal_push(cfg, password, source=args.source, path=Path(args.path), detach=True)
        else:
            result = wal.wal_fetch(cfg, password, source=args.source, name=args.name, dest=Path(args.dest))
    except RecoverctlError as e:
        if args.json:
            print(json.dumps(e.to_dict(), default=str), file=sys.stderr)
        else:
            print(f"error: {e.message}", file=sys.stderr)
            if e.hint:
                print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(int(e.exit_code))
    if args.json:
        _print_json(result.to_json())
    sys.exit(0)


if __name__ == "__main__":
    main()
