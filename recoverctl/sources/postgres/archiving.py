"""The archive_command / restore_command lines PostgreSQL runs to call this recoverctl.

A PostgreSQL setting is readable by every role (`SHOW`), lands in the server log and in `ps`
output of the archiver's children: these lines carry paths and secret-free values only. What the
WAL commands need that is secret (the repository passphrase, a catalog password) comes from files
the lines name: the config file and the passphrase file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from recoverctl.config import (
    ARCHIVE_TIMEOUT_MIN_S,
    ENV_CATALOG,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_REPOSITORY_NAME,
    Config,
    has_secret,
    passphrase_file,
)
from recoverctl.sources.postgres.recovery import shell_join

# Variables handed on to the server's commands when set here: where the passphrase file,
# repository, catalog and package are. Each only when its value holds no secret (a catalog URL
# with a password stays out: see `wal_environment_problems`). RECOVERCTL_PASSWORD never does.
PASS_THROUGH = (ENV_PASSWORD_FILE, ENV_REPOSITORY, ENV_REPOSITORY_NAME, ENV_CATALOG, "PYTHONPATH")


def self_argv() -> list[str]:
    """Return the argv that runs this recoverctl by absolute path (script or `python -m`)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "recoverctl" and argv0.exists():
        return [str(argv0.resolve())]
    return [sys.executable, "-m", "recoverctl"]


def wal_argv() -> list[str]:
    """Return the argv of the light WAL entry point (`recoverctl-wal`) by absolute path."""
    full = self_argv()
    if len(full) == 1:
        light = Path(full[0]).with_name("recoverctl-wal")
        if light.exists():
            return [str(light)]
    return [sys.executable, "-m", "recoverctl.cli.wal_entry"]


def passed_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the variables of `env` (default: ours) a WAL command line may carry: PASS_THROUGH
    ones that are set and hold no secret."""
    env = os.environ if env is None else env
    out = {k: env[k] for k in PASS_THROUGH if env.get(k) and not has_secret(env[k])}
    if ENV_PASSWORD_FILE in out:  # the server runs the command elsewhere, as another user
        out[ENV_PASSWORD_FILE] = os.path.abspath(os.path.expanduser(out[ENV_PASSWORD_FILE]))
    return out


def recoverctl_command(
    cfg: Config, args: list[str], env: Mapping[str, str] | None = None, argv: list[str] | None = None
) -> str:
    """Return a shell command line running `recoverctl <args>` with this config and environment.

    It holds paths and secret-free values only (see the module docstring).
    """
    prefix = [f"{k}={v}" for k, v in passed_environment(env).items()]
    argv = list(argv or self_argv())
    if cfg.path is not None:
        argv += ["--config", str(Path(cfg.path).resolve())]
    parts = [*(["env", *prefix] if prefix else []), *argv, *args]
    return shell_join(parts)


def archive_command(cfg: Config, source: str) -> str:
    return recoverctl_command(cfg, ["push", "--source", source, "%p"], argv=wal_argv())


def fetch_argv() -> list[str]:
    """Return the argv of restore_command's entry point: this interpreter with -S -P running
    `recoverctl/cli/wal_fetch_entry.py` by path.

    Most restore_command calls only rename a file the fetcher spooled, so start-up is the cost:
    without `site` (and an editable install's import hooks) and without `-m` (runpy) a served
    call takes ~20 ms of CPU instead of ~90. -P keeps the data directory (the server's working
    directory) off sys.path; the package comes from PYTHONPATH (see `restore_command`), and the
    entry point loads `site` itself when it has to do more than the spool.
    """
    import recoverctl

    # Named by path, not imported: the entry point belongs to cli/, a layer above this one.
    entry = Path(recoverctl.__file__).resolve().parent / "cli" / "wal_fetch_entry.py"
    return [sys.executable, "-S", "-P", str(entry)]


def restore_command(cfg: Config, source: str, password_file: Path | None = None) -> str:
    """Return restore_command for `source`; with `password_file`, it reads the passphrase there
    (see `server.write_passphrase_file`)."""
    import recoverctl

    package_root = str(Path(recoverctl.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    if cfg.active_repository != cfg.primary_name:
        # Restoring from a copy: the server's fetches read that repository, with its passphrase.
        env[ENV_REPOSITORY_NAME] = cfg.active_repository
        own = passphrase_file(cfg)
        if own is not None:
            env[ENV_PASSWORD_FILE] = own
        else:
            env.pop(ENV_PASSWORD_FILE, None)
    if password_file is not None:
        env[ENV_PASSWORD_FILE] = str(password_file)
    # Fetching never touches the catalog: its URL stays out of the line whatever it holds.
    env.pop(ENV_CATALOG, None)
    return recoverctl_command(cfg, ["fetch", "--source", source, "%f", "%p"], env=env, argv=fetch_argv())


# S3 credentials boto3 takes from the environment when the config names none.
_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def server_environment(backend_pid: int, data_directory: str) -> dict[str, str] | None:
    """Return the environment the server started with (its archiver's), read from the backend
    `backend_pid` on this host; None when it cannot be read (another host or OS user)."""
    proc = Path(f"/proc/{backend_pid}")
    try:
        # the pid must be that server's backend (same data directory), not some local process
        if os.path.realpath(proc / "cwd") != os.path.realpath(data_directory):
            return None
        raw = (proc / "environ").read_bytes()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def readable_as(uid: int, gid: int, path: str) -> bool | None:
    """Return whether OS user `uid` (primary group `gid`) can read `path`; None when this
    process cannot tell (it is neither that user nor root)."""
    if os.geteuid() == uid:
        return os.access(path, os.R_OK)
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    pid = os.fork()
    if pid == 0:  # the child only switches user and asks the kernel: nothing else runs here
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            os._exit(0 if os.access(path, os.R_OK) else 1)
        finally:
            os._exit(2)
    return os.waitpid(pid, 0)[1] == 0


def wal_environment_problems(
    cfg: Config,
    server_env: Mapping[str, str] | None,
    env: Mapping[str, str] | None = None,
    server_user: tuple[int, int] | None = None,
) -> list[str]:
    """Return why the WAL commands, run by the server with `server_env` (None: unknown, taken
    as empty) plus the variables their command line passes, would not see the configuration
    this process sees (`cfg`, read with `env`, default ours); [] when they would. With
    `server_user` (uid, gid of the server), also when that user cannot read the config file
    or the passphrase file.

    Each problem names the key or variable and what to do: a value the archiver needs must
    come from a file it can read, never from a variable only this shell has.
    """
    from recoverctl.config import load_config
    from recoverctl.errors import ConfigError

    env = os.environ if env is None else env
    if cfg.path is None:
        return [
            "the configuration comes from environment variables only: archive_command needs a config "
            "file (write one, mode 0600, readable by the server's OS user, and pass --config)"
        ]
    unknown = server_env is None
    server = dict(server_env or {})
    wal_env = {**server, **passed_environment(env)}
    where = "the server's environment" + (" (unreadable from here, so taken as empty)" if unknown else "")
    try:
        seen = load_config(str(Path(cfg.path).resolve()), env=wal_env)
    except ConfigError as e:
        return [
            f"{e.message} in {where}: PostgreSQL runs archive_command without this shell's variables; "
            "keep the value in a file instead (a '*_file' key, e.g. password_file, mode 0600, readable "
            "by the server's OS user), or give the server the variable (systemd EnvironmentFile=) and "
            "restart it"
        ]
    unreadable = _unreadable_files(cfg, seen, wal_env, server_user) if server_user is not None else None
    if unreadable:
        return [unreadable]
    return [
        *_values_not_passed(cfg, seen, env, where),
        *_passphrase_problems(seen, env, wal_env),
        *_s3_credential_problems(seen, env, wal_env, where),
    ]


def _values_not_passed(cfg: Config, seen: Config, env: Mapping[str, str], where: str) -> list[str]:
    """The catalog and repository URL this shell takes from variables the WAL commands lack."""
    problems = []
    for var, key, ours, theirs in (
        (ENV_CATALOG, "catalog", cfg.catalog, seen.catalog),
        (
            ENV_REPOSITORY,
            "repository.url",
            cfg.repository.url if cfg.repository else None,
            seen.repository.url if seen.repository else None,
        ),
    ):
        if ours != theirs:
            why = (
                "it holds a password, which must not go into a PostgreSQL setting"
                if has_secret(env.get(var, ""))
                else f"{where} differs"
            )
            problems.append(
                f"{key} comes from {var} here, but archive_command would not get it ({why}): set "
                f"'{key}' in the config file (mode 0600, readable by the server's OS user)"
            )
    return problems


def _unreadable_files(
    cfg: Config, seen: Config, wal_env: Mapping[str, str], server_user: tuple[int, int]
) -> str | None:
    """The config or passphrase file the server's OS user cannot read, as a problem; else None."""
    from recoverctl.config import ENV_PASSWORD

    assert cfg.path is not None
    files = {"the config file": str(Path(cfg.path).resolve())}
    if not wal_env.get(ENV_PASSWORD):
        pw_file = wal_env.get(ENV_PASSWORD_FILE) or (seen.repository and seen.repository.password_file)
        if pw_file:
            files["the repository passphrase file"] = os.path.expanduser(pw_file)
    for what, path in files.items():
        if readable_as(*server_user, path) is False:
            return (
                f"the server's OS user (uid {server_user[0]}) cannot read {what} '{path}', which "
                "archive_command needs: give that user read access (e.g. owner or group, mode 0640)"
            )
    return None


def _passphrase_problems(seen: Config, env: Mapping[str, str], wal_env: Mapping[str, str]) -> list[str]:
    """Why the WAL commands would have no repository passphrase."""
    from recoverctl.config import ENV_PASSWORD, repository_password
    from recoverctl.errors import ConfigError

    problems = []
    try:
        passphrase = repository_password(seen, wal_env)
    except ConfigError as e:
        passphrase = ""
        problems.append(f"{e.message}: archive_command reads it as the server's OS user")
    if passphrase is None:
        source = f"{ENV_PASSWORD} in this shell" if env.get(ENV_PASSWORD) else "a prompt"
        problems.append(
            f"the repository passphrase comes from {source}, which archive_command does not have: put it "
            f"in a file (mode 0600, readable by the server's OS user) and set repository.password_file "
            f"or {ENV_PASSWORD_FILE}"
        )
    return problems


def _s3_credential_problems(
    seen: Config, env: Mapping[str, str], wal_env: Mapping[str, str], where: str
) -> list[str]:
    """S3 credentials this shell takes from variables the WAL commands lack."""
    s3 = seen.repository is not None and seen.repository.url.startswith("s3://")
    s3_keys = seen.repository.s3 if seen.repository is not None else None
    if not s3 or s3_keys is None or s3_keys.secret_access_key is not None or s3_keys.secret_access_key_file:
        return []
    for var in _AWS_VARS:
        if env.get(var) and not wal_env.get(var):
            return [
                f"S3 credentials come from {var} here, which {where} lacks: set repository.s3."
                "access_key_id_file/secret_access_key_file (files the server's OS user can read) "
                "in the config file, or give that user an AWS credentials file (~/.aws/credentials)"
            ]
    return []


# archive_timeout's ceiling: above 15 minutes a quiet server's last commits wait longer than any
# "hourly" promise should tolerate. The floor (ARCHIVE_TIMEOUT_MIN_S) is in the config, which
# warns about targets below it.
ARCHIVE_TIMEOUT_MAX_S = 900


def archive_timeout_for(rpo_target_s: float) -> tuple[int, str]:
    """Given a source's RPO target in seconds, return (archive_timeout seconds, why).

    A quarter of the target: a committed transaction's segment is closed at most archive_timeout
    later and then pushed; the other three quarters absorb the push itself and the archiver's
    retries (after three failed attempts PostgreSQL waits a minute before trying again).
    """
    quarter = int(rpo_target_s // 4)
    seconds = max(ARCHIVE_TIMEOUT_MIN_S, min(ARCHIVE_TIMEOUT_MAX_S, quarter))
    why = f"a quarter of the RPO target {int(rpo_target_s)}s"
    if seconds != quarter:
        bound = "floor" if seconds == ARCHIVE_TIMEOUT_MIN_S else "ceiling"
        why += f" ({quarter}s), held to the {seconds}s {bound}"
    why += ": on a quiet server a commit's WAL segment is closed and archived within this time"
    if rpo_target_s < ARCHIVE_TIMEOUT_MIN_S:
        why += f"; archive mode cannot keep a target under {ARCHIVE_TIMEOUT_MIN_S}s (stream WAL for that)"
    return seconds, why


def archive_bound_s(archive_timeout_s: int) -> float | None:
    """Given the server's archive_timeout (0 = off), return the data-loss bound archive mode keeps
    on a healthy archiver, or None when there is none (a quiet server may never switch segments)."""
    return float(archive_timeout_s) if archive_timeout_s > 0 else None
