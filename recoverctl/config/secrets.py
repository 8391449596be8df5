"""Secrets in a config: reading secret files, the repository password, and redaction of
secrets (and URL passwords) from anything recoverctl prints or records."""

from __future__ import annotations

import os
import re
import stat
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    SecretStr,
)

from recoverctl.config.base import ENV_PASSWORD, ENV_PASSWORD_FILE
from recoverctl.config.root import Config
from recoverctl.errors import ConfigError


def read_secret_file(path: str, what: str) -> str:
    """Return the first line of a secret file; raise ConfigError naming what it was for."""
    try:
        text = Path(path).expanduser().read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} from '{path}': {e.strerror}") from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def secret_value(value: SecretStr | None, file: str | None, what: str) -> str | None:
    """Return a secret given inline (from ${VAR}) or in a file; None when neither is set."""
    if value is not None:
        return value.get_secret_value()
    if file:
        return read_secret_file(file, what)
    return None


def passphrase_file(cfg: Config, env: typing.Mapping[str, str] | None = None) -> str | None:
    """Return the file the active repository's passphrase is read from, or None when it comes
    from a variable or a prompt (a restore must then hand it to restore_command in a file)."""
    env = os.environ if env is None else env
    repo = cfg.repository
    if not cfg.own_passphrase_only and env.get(ENV_PASSWORD_FILE):
        return env[ENV_PASSWORD_FILE]
    if repo is not None and repo.password_env and env.get(repo.password_env):
        return None
    return repo.password_file if repo is not None else None


def repository_password(cfg: Config, env: typing.Mapping[str, str] | None = None) -> str | None:
    """Return the repository passphrase from the environment or a password file, or None (prompt).

    A repository other than the primary (see `Config.for_repository`) has its own key: only its
    own `password_env` / `password_file` give its passphrase, never RECOVERCTL_PASSWORD(_FILE).
    """
    env = os.environ if env is None else env
    repo = cfg.repository
    if cfg.own_passphrase_only:
        if repo is not None and repo.password_env and env.get(repo.password_env):
            return env[repo.password_env]
        if repo is not None and repo.password_file:
            what = f"the passphrase of repository '{cfg.active_repository}' (password_file)"
            return read_secret_file(repo.password_file, what)
        return None
    if env.get(ENV_PASSWORD):
        return env[ENV_PASSWORD]
    if env.get(ENV_PASSWORD_FILE):
        return read_secret_file(env[ENV_PASSWORD_FILE], f"the repository password ({ENV_PASSWORD_FILE})")
    if repo is not None and repo.password_env and env.get(repo.password_env):
        return env[repo.password_env]
    if cfg.repository and cfg.repository.password_file:
        return read_secret_file(cfg.repository.password_file, "the repository password (password_file)")
    return None


_URL_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")
# password=... in a libpq conninfo or a URL query (also PGPASSWORD=..., RECOVERCTL_PASSWORD=...),
# not password_file=...
_PASSWORD_PARAM_RE = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;'\"]+)")


def redact_url(url: str) -> str:
    """Return the text with any URL password (user:pw@, password=...) replaced by '***'."""
    text = _URL_CRED_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)
    return _PASSWORD_PARAM_RE.sub(lambda m: f"{m.group(1)}***", text)


def has_secret(text: str) -> bool:
    """Return True when `text` carries a password (one `redact_url` would hide)."""
    return redact_url(text) != text


def redact(value: Any, secrets: typing.Iterable[str] = ()) -> Any:
    """Return `value` (text, or dicts and lists holding text) with URL passwords and each of
    `secrets` (values of 4 characters or more) replaced by '***'. The one redaction rule for
    logs, the audit log, events and `config show`."""
    known = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for s in known:
                v = v.replace(s, "***")
            return redact_url(v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


def redacted_dump(cfg: Config) -> dict[str, Any]:
    """Return the config as plain data with secrets and URL passwords redacted."""
    data = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    return typing.cast(dict[str, Any], redact(data))


def iter_secret_values(cfg: Config) -> Iterator[str]:
    """Yield every secret value in the config, for log redaction."""

    def walk(obj: Any) -> Iterator[str]:
        if isinstance(obj, SecretStr):
            yield obj.get_secret_value()
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                yield from walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from walk(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from walk(v)

    yield from walk(cfg)
    for url in (cfg.catalog, cfg.repository.url if cfg.repository else None):
        m = _URL_CRED_RE.search(url or "")
        if m and m.group("pw"):
            from urllib.parse import unquote

            yield m.group("pw")
            yield unquote(m.group("pw"))


def inline_secrets(cfg: Config) -> list[str]:
    """Return the keys of the config file holding a secret written in the file itself: a secret
    key (password, secret_access_key, tokens...) or a URL with a password, not a `${VAR}` and
    not a `*_file` path. [] without a file (or one that no longer reads)."""
    if cfg.path is None:
        return []
    try:
        raw = yaml.safe_load(Path(cfg.path).read_text())
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []

    def child(model: Any, key: Any) -> Any:
        if isinstance(model, BaseModel):
            for name, info in type(model).model_fields.items():
                if key in (name, info.alias):
                    return getattr(model, name)
            return None
        return model.get(key) if isinstance(model, dict) else None

    def walk(model: Any, value: Any, where: str) -> None:
        if isinstance(value, str):
            if "${" not in value and ((isinstance(model, SecretStr) and value) or has_secret(value)):
                found.append(where)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(child(model, k), v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(model[i] if isinstance(model, list) and i < len(model) else None, v, f"{where}[{i}]")

    walk(cfg, raw, "")
    return found


def loose_config_mode(cfg: Config) -> str | None:
    """Return a warning when the config file holds secrets inline (`inline_secrets`) and its
    group or others can read it; None otherwise (no file, private file, no inline secret)."""
    if cfg.path is None:
        return None
    path = Path(cfg.path).resolve()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o044:
        return None
    keys = inline_secrets(cfg)
    if not keys:
        return None
    who = {0o040: "its group", 0o004: "every local user"}.get(mode & 0o044, "its group and every local user")
    return (
        f"config file '{path}' holds secrets inline ({', '.join(keys)}) and {who} can read it "
        f"(mode {mode:04o}): chmod 600 {path} (or move the values into *_file keys)"
    )
