"""SFTP backend: `sftp://user@host:port/path` via paramiko, key auth, strict host-key checking."""

from __future__ import annotations

import builtins
import contextlib
import logging
import queue
import socket
import stat as statmod
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import paramiko

from recoverctl.config import SftpOptions, redact_url
from recoverctl.errors import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
    UsageError,
    WriteRefused,
)
from recoverctl.storage.base import COPY_BUFFER, DIR_MODE, TMP_PREFIX, ObjectInfo

log = logging.getLogger(__name__)

READ_CHUNK = 32768  # paramiko's SFTP request size


def _walk(
    sftp: paramiko.SFTPClient, start: str, rel: str, descend: Callable[[str], bool]
) -> Iterator[tuple[str, str, paramiko.SFTPAttributes]]:
    """Yield (remote path, key, attributes) of every file below `start` (keys start with `rel`),
    entering only the directories whose key `descend` accepts; vanished directories are skipped."""
    todo = [(start, rel)]
    while todo:
        directory, prefix = todo.pop()
        try:
            entries = sftp.listdir_attr(directory)
        except FileNotFoundError:
            continue
        for a in entries:
            key, path = prefix + a.filename, f"{directory.rstrip('/')}/{a.filename}"
            if not statmod.S_ISDIR(a.st_mode or 0):
                yield path, key, a
            elif descend(key):
                todo.append((path, key + "/"))


class _UnknownHostKey(paramiko.SSHException):
    pass


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(f"{key.get_name()} {key.get_fingerprint().hex()}")


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    # A key that *changed* still fails (BadHostKeyException); only never-seen hosts are accepted.
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("accepting new SSH host key for %s: %s (insecure_accept_new_host_keys)", hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


def parse_sftp_url(url: str) -> tuple[str | None, str, int, str]:
    """Given `sftp://user@host:port/path`, return (user, host, port, root path); raise UsageError."""
    parts = urlsplit(url)
    if parts.scheme != "sftp" or not parts.hostname:
        raise UsageError(
            f"invalid SFTP URL '{redact_url(url)}'", hint="use sftp://user@host:port/absolute/path"
        )
    if parts.password is not None:
        raise UsageError(
            f"a password in the SFTP URL '{redact_url(url)}' is not supported",
            hint="use key authentication: sftp.key_file or an ssh-agent",
        )
    try:
        port = parts.port or 22
    except ValueError:
        raise UsageError(f"invalid port in SFTP URL '{redact_url(url)}'") from None
    root = unquote(parts.path).rstrip("/") or "/"
    return (unquote(parts.username) if parts.username else None), parts.hostname, port, root


class SftpStorage:
    """Objects are files under `root` on the server, written to a temp name then posix-renamed.

    One SSH transport is shared; SFTP channels on it are pooled so threads work in parallel. A
    broken connection is dropped and the next call reconnects (the retry layer drives that).
    """

    def __init__(self, url: str, options: SftpOptions | None = None):
        self.options = options or SftpOptions()
        self.user, self.host, self.port, self.root = parse_sftp_url(url)
        self.url = redact_url(url.rstrip("/"))
        self.where = f"'{self.url}'"
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._idle: queue.LifoQueue[paramiko.SFTPClient] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max(1, self.options.connections))
        self._made_dirs: set[str] = set()

    # --- connections ------------------------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        o = self.options
        client = paramiko.SSHClient()
        known = Path(o.known_hosts).expanduser() if o.known_hosts else None
        try:
            if known is not None:
                if known.exists():
                    client.load_host_keys(str(known))
                elif not o.insecure_accept_new_host_keys:
                    raise StorageUnavailable(
                        f"unable to open {self.where}: known_hosts file '{known}' does not exist",
                        hint="fix sftp.known_hosts, or create it with: "
                        f"ssh-keyscan -p {self.port} {self.host} >> {known}",
                    )
            else:
                client.load_system_host_keys()
        except (OSError, paramiko.SSHException) as e:
            raise StorageUnavailable(f"unable to read known_hosts for {self.where}: {e}") from None
        client.set_missing_host_key_policy(
            _AcceptNew() if o.insecure_accept_new_host_keys else _RejectUnknown()
        )
        key_file = str(Path(o.key_file).expanduser()) if o.key_file else None
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=key_file,
                allow_agent=True,
                look_for_keys=key_file is None,
                timeout=o.timeout,
                banner_timeout=o.timeout,
                auth_timeout=o.timeout,
                channel_timeout=o.timeout,
            )
        except _UnknownHostKey as e:
            client.close()
            raise StorageUnavailable(
                f"unable to open {self.where}: host key of {self.host}:{self.port} is unknown ({e})",
                hint=f"verify the key, then add it with: ssh-keyscan -p {self.port} {self.host} >> "
                f"{known or '~/.ssh/known_hosts'} (or set sftp.known_hosts; "
                "sftp.insecure_accept_new_host_keys only for labs)",
            ) from None
        except paramiko.BadHostKeyException:
            client.close()
            raise StorageUnavailable(
                f"unable to open {self.where}: host key of {self.host}:{self.port} does not match "
                "known_hosts — the server was reinstalled or someone is intercepting the connection",
                hint=f"confirm the new key out of band, then replace its line in "
                f"{known or '~/.ssh/known_hosts'}",
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise StorageUnavailable(
                f"unable to open {self.where}: SSH authentication refused for user "
                f"'{self.user or '(current user)'}' ({e})",
                hint="check sftp.key_file (or the ssh-agent) and the server's authorized_keys for that user",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as e:
            client.close()
            raise TransientStorageError(
                f"unable to connect to {self.where}: {e or type(e).__name__}",
                hint=f"check that sshd is running and reachable on {self.host}:{self.port}",
            ) from None
        return client

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._drop_locked()
            self._client = self._connect()
            transport = self._client.get_transport()
            assert transport is not None
            transport.set_keepalive(30)
            return transport

    def _drop_locked(self) -> None:
        while True:
            try:
                sftp = self._idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                sftp.close()
        self._made_dirs.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    @contextlib.contextmanager
    def _sftp(
        self, what: str, key: str | None = None, *, write: bool = False
    ) -> Iterator[paramiko.SFTPClient]:
        """Yield a pooled SFTP channel; map failures to StorageError classes naming `what`.

        A `write` the server refuses (permission denied, or a plain failure such as a read-only
        or full file system) is WriteRefused: the server may still let us read.
        """
        with self._slots:
            sftp: paramiko.SFTPClient | None = None
            try:
                transport = self._transport()
                try:
                    sftp = self._idle.get_nowait()
                    channel = sftp.get_channel()
                    if channel is None or channel.closed or channel.get_transport() is not transport:
                        sftp = None
                        raise queue.Empty
                except queue.Empty:
                    sftp = paramiko.SFTPClient.from_transport(transport)
                    assert sftp is not None
                    sftp.get_channel().settimeout(self.options.timeout)  # type: ignore[union-attr]
                yield sftp
            except StorageError:
                self._release(sftp)
                sftp = None
                raise
            except FileNotFoundError as e:
                self._release(sftp)
                sftp = None
                if key is not None:
                    raise ObjectNotFound(f"object '{key}' not found in {self.where}") from None
                raise StorageError(f"unable to {what} on {self.where}: {e}") from None
            except PermissionError as e:
                self._release(sftp)
                sftp = None
                raise (WriteRefused if write else StorageError)(
                    f"unable to {what} on {self.where}: permission denied ({e})",
                    hint="check the ownership and mode of the path on the server",
                ) from None
            except (OSError, EOFError, paramiko.SSHException) as e:
                if self._connection_broken(e):
                    with self._lock:
                        self._drop_locked()
                    sftp = None
                    raise TransientStorageError(
                        f"unable to {what} on {self.where}: connection lost ({e or type(e).__name__})",
                        hint=f"check that sshd is running and reachable on {self.host}:{self.port}",
                    ) from None
                self._release(sftp)
                sftp = None
                if write:
                    # SSH_FX_FAILURE: the server refused the write for good (read-only file
                    # system, disk full, quota); sftp-server sends no finer code for those.
                    raise WriteRefused(f"unable to {what} on {self.where}: {e}") from None
                raise StorageError(f"unable to {what} on {self.where}: {e}") from None
            else:
                self._release(sftp)

    def _release(self, sftp: paramiko.SFTPClient | None) -> None:
        if sftp is not None:
            self._idle.put(sftp)

    def _connection_broken(self, e: BaseException) -> bool:
        if isinstance(e, EOFError | socket.timeout | ConnectionError | paramiko.SSHException):
            return True
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            return transport is None or not transport.is_active()

    # --- paths ------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r} on {self.where}")
        return f"{self.root.rstrip('/')}/{key}"

    def _mkdirs(self, sftp: paramiko.SFTPClient, directory: str) -> None:
        # mkdir -p, walking up only as far as needed; concurrent writers may race us (EEXIST/FAILURE).
        missing: list[str] = []
        d = directory
        while d not in ("", "/") and d not in self._made_dirs:
            try:
                if statmod.S_ISDIR(sftp.stat(d).st_mode or 0):
                    break
            except FileNotFoundError:
                missing.append(d)
                d = d.rsplit("/", 1)[0]
                continue
            break
        for d in reversed(missing):
            try:
                sftp.mkdir(d, DIR_MODE)  # the repository root too: nothing below is listable by others
            except OSError:
                if not statmod.S_ISDIR(sftp.stat(d).st_mode or 0):
                    raise
        self._made_dirs.add(directory)

    # --- the Storage protocol ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        def copy(f: paramiko.SFTPFile) -> None:
            body.seek(0)
            written = 0
            while chunk := body.read(COPY_BUFFER):
                f.write(chunk)
                written += len(chunk)
            if written != size:
                raise StorageError(
                    f"unable to put '{key}' on {self.where}: the source holds {written} of {size} bytes"
                )

        self._write(key, copy)

    def _write(self, key: str, fill: Callable[[paramiko.SFTPFile], object]) -> None:
        """Write `key` atomically: `fill` writes a temporary file beside it, renamed over it."""
        path = self._path(key)
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/{TMP_PREFIX}{name}.{uuid.uuid4().hex[:12]}"
        with self._sftp(f"put '{key}'", write=True) as sftp:
            try:
                f = sftp.open(tmp, "wb")
            except FileNotFoundError:
                self._mkdirs(sftp, directory)
                f = sftp.open(tmp, "wb")
            try:
                with f:
                    f.set_pipelined(True)
                    fill(f)
                # posix-rename replaces atomically; plain SFTP rename refuses an existing target.
                sftp.posix_rename(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        with self._sftp(f"get '{key}'", key) as sftp, sftp.open(path, "rb") as f:
            size = f.stat().st_size or 0
            n = size - offset if length is None else min(length, size - offset)
            if n <= 0:
                return b""
            # readv pipelines the requests (a plain read() waits for each round trip). Ranges of
            # exactly one SFTP request each: larger ones make paramiko reassemble them slowly
            # (measured 0.4-4 MiB/s vs 25-75 MiB/s, see scripts/bench_storage).
            step = READ_CHUNK
            return b"".join(
                f.readv([(o, min(step, offset + n - o)) for o in range(offset, offset + n, step)])
            )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = f"{self.root.rstrip('/')}/{base}".rstrip("/") or "/"
        found: list[ObjectInfo] = []
        with self._sftp(f"list '{prefix or '/'}'") as sftp:

            def descend(key: str) -> bool:
                return (key + "/").startswith(prefix) or prefix.startswith(key + "/")

            for _path, key, a in _walk(sftp, start, f"{base}/" if base else "", descend):
                if not a.filename.startswith(TMP_PREFIX) and key.startswith(prefix):
                    found.append(ObjectInfo(key, a.st_size or 0, float(a.st_mtime or 0)))
        yield from found

    def sweep_partial_writes(self, before: float, *, dry_run: bool = False) -> builtins.list[str]:
        swept: builtins.list[str] = []
        root = self.root.rstrip("/") or "/"
        with self._sftp("sweep partial writes") as sftp:
            for path, key, a in _walk(sftp, root, "", lambda _key: True):
                if a.filename.startswith(TMP_PREFIX) and float(a.st_mtime or 0) < before:
                    if not dry_run:
                        with contextlib.suppress(FileNotFoundError):
                            sftp.remove(path)
                    swept.append(key)
        return sorted(swept)

    def stat(self, key: str) -> ObjectInfo:
        with self._sftp(f"stat '{key}'", key) as sftp:
            a = sftp.stat(self._path(key))
        return ObjectInfo(key, a.st_size or 0, float(a.st_mtime or 0))

    def delete(self, key: str) -> None:
        with self._sftp(f"delete '{key}'", write=True) as sftp, contextlib.suppress(FileNotFoundError):
            sftp.remove(self._path(key))

    def close(self) -> None:
        with self._lock:
            self._drop_locked()
