"""restore_command's entry point: `recoverctl-wal fetch` served from the WAL fetcher's spool with
almost nothing imported.

Most restore_command calls only rename a segment the fetcher spooled, or relay its "missing"
answer; for those the interpreter's start-up is the whole cost, so this module parses the one
command line `restore_command` uses by hand (argparse, re and pathlib cost more than the work)
and loads only `fetchspool`. Anything else — another command line, a fetcher that failed — goes
to `recoverctl.cli.wal_entry`, which fetches directly and reports errors the usual way.
"""

from __future__ import annotations

import sys


def _parse(argv: list[str]) -> tuple[str | None, bool, str, str, str] | None:
    """Return (config, json, source, name, dest) for `[--config C] [--json] fetch --source S NAME
    DEST`, or None for any other command line."""
    config, as_json, source = None, False, None
    positional: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            config = next(it, None)
            if config is None:
                return None
        elif arg.startswith("--config="):
            config = arg[len("--config=") :]
        elif arg == "--json":
            as_json = True
        elif arg == "--source":
            source = next(it, None)
            if source is None:
                return None
        elif arg.startswith("--source="):
            source = arg[len("--source=") :]
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    if len(positional) != 3 or positional[0] != "fetch" or not source:
        return None
    return config, as_json, source, positional[1], positional[2]


def main(argv: list[str] | None = None) -> None:
    """Serve the fetch from the spool and exit 0 (file written) or 10 (not in the archive);
    otherwise run `recoverctl-wal` with the same arguments."""
    argv = sys.argv[1:] if argv is None else argv
    parsed = _parse(argv)
    if parsed is not None:
        from recoverctl.sources.postgres import fetchspool

        config, as_json, source, name, dest = parsed
        if fetchspool.is_fetchable(name):
            size = fetchspool.fetch(dest, source, name, config)
            if size == fetchspool.MISSING:
                message = f"WAL file '{name}' is not in the archive of source '{source}'"
                hint = "expected at the end of the archive; otherwise the archive has a gap"
                if as_json:
                    import json

                    err = {"error": "NotFoundError", "message": message, "hint": hint, "exit_code": 10}
                    print(json.dumps(err), file=sys.stderr)
                else:
                    print(f"error: {message}\nhint: {hint}", file=sys.stderr)
                sys.exit(10)
            if size is not None:
                if as_json:
                    import json

                    print(json.dumps({"name": name, "prefetched": True, "source": source, "bytes": size}))
                sys.exit(0)
    from recoverctl.cli import wal_entry  # it loads `site` when we were started with -S

    wal_entry.main(argv, spool=parsed is None)


if __name__ == "__main__":
    main()
