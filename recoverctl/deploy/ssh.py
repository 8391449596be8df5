"""SSH target: a fleet of hosts with `releases/<version>` dirs and an atomically switched `current` link.

Commands run on all hosts in parallel (fabric ThreadingGroup) and report per host. Host keys
must be known (known_hosts) unless `insecure_accept_new_host_keys` is set: a changed or unknown
key is an error, never silently accepted. The restart/stop/fetch commands run through `sh -c`
with RECOVERCTL_VERSION, RECOVERCTL_RELEASE (its dir), RECOVERCTL_RELEASES_DIR and
RECOVERCTL_CURRENT exported.
"""

from __future__ import annotations

import copy
import errno
import io
import posixpath
import shlex
import socket
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection, ThreadingGroup
from fabric.exceptions import GroupException
from paramiko.ssh_exception import NoValidConnectionsError

from recoverctl.config import SshHost, SshService
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome, TargetUnreachable
from recoverctl.deploy.version import check_version
from recoverctl.errors import ConfigError, NotFoundError, PartialError, RecoverctlError


@dataclass
class _Host:
    name: str  # host:port, as shown to users
    host: str
    port: int
    user: str | None
    key_file: str | None
    releases_dir: str
    current_link: str
    health_url: str | None


_NETWORK_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPIPE}


def connection_fault(exc: BaseException) -> bool:
    """Return True when `exc` says the host did not answer or the connection dropped (sshd down,
    restarting, the session killed mid-command): worth retrying. Host key and authentication
    failures, and commands that exited with a status, are final."""
    if isinstance(exc, paramiko.BadHostKeyException | paramiko.AuthenticationException):
        return False
    if isinstance(exc, paramiko.SSHException):
        return "not found in known_hosts" not in str(exc)
    if isinstance(exc, NoValidConnectionsError | ConnectionError | TimeoutError | EOFError):
        return True
    if isinstance(exc, OSError):
        # Network errors only: a missing key file is a configuration problem, not an outage.
        return exc.errno in _NETWORK_ERRNOS
    result = getattr(exc, "result", None)
    # No exit status: the channel closed under the command (paramiko reports -1).
    return result is not None and getattr(result, "exited", None) == -1


def _explain(exc: BaseException) -> str:
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"host key mismatch (got {exc.key.get_name()} {exc.key.get_base64()[:16]}...): possible MITM"
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return "unknown host key (add it to known_hosts)"
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed: {exc}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "connection timed out"
    if isinstance(exc, OSError):
        return f"unreachable: {exc.strerror or exc}"
    result = getattr(exc, "result", None)
    if result is not None and getattr(result, "exited", None) == -1:
        return "connection lost while the command ran"
    if result is not None and hasattr(result, "exited"):
        err = (result.stderr or result.stdout or "").strip().splitlines()
        return f"command exited {result.exited}: {err[-1] if err else ''}"
    return f"{type(exc).__name__}: {exc}"


def _release_path(h: _Host, version: str, name: str = "{}") -> str:
    """Return the path of `name` (the release dir of `version`, or a sibling such as '.{}.partial')
    in the host's releases directory; raise UsageError for an invalid version. Every path built
    from a version goes through here, so none can leave the releases directory."""
    path = posixpath.join(h.releases_dir, name.format(check_version(version)))
    if posixpath.dirname(posixpath.normpath(path)) != posixpath.normpath(h.releases_dir):
        raise RecoverctlError(f"refusing path '{path}' outside the releases directory on {h.name}")
    return path


class SshTarget:
    kind = "ssh"

    def __init__(self, service: str, cfg: SshService):
        self.service = service
        self.cfg = cfg
        self.hosts = [self._host(h) for h in cfg.hosts]
        self._conns: dict[str, Connection] = {}

    def _host(self, spec: SshHost | str) -> _Host:
        if isinstance(spec, str):
            user, _, rest = spec.rpartition("@")
            name, _, port = rest.partition(":")
            spec = SshHost(host=name, port=int(port) if port else 22, user=user or None)
        releases = spec.releases_dir or self.cfg.releases_dir
        current = (
            spec.current_link
            or self.cfg.current_link
            or posixpath.join(posixpath.dirname(releases), "current")
        )
        return _Host(
            name=f"{spec.host}:{spec.port}",
            host=spec.host,
            port=spec.port,
            user=spec.user or self.cfg.user,
            key_file=spec.key_file or self.cfg.key_file,
            releases_dir=releases,
            current_link=current,
            health_url=spec.health_url,
        )

    # --- connections ----------------------------------------------------------------------------

    def _connection(self, h: _Host) -> Connection:
        conn = self._conns.get(h.name)
        if conn is None:
            kwargs: dict[str, Any] = {"look_for_keys": h.key_file is None, "allow_agent": h.key_file is None}
            if h.key_file:
                kwargs["key_filename"] = str(Path(h.key_file).expanduser())
            conn = Connection(
                h.host,
                user=h.user,
                port=h.port,
                connect_timeout=int(self.cfg.connect_timeout),
                connect_kwargs=kwargs,
                config=FabricConfig(overrides={"load_ssh_configs": False}),
            )
            # Fabric accepts unknown host keys by default; a deploy tool must not.
            conn.client.set_missing_host_key_policy(
                paramiko.AutoAddPolicy()
                if self.cfg.insecure_accept_new_host_keys
                else paramiko.RejectPolicy()
            )
            known = Path(self.cfg.known_hosts or "~/.ssh/known_hosts").expanduser()
            if known.exists():
                conn.client.load_host_keys(str(known))
            elif not self.cfg.insecure_accept_new_host_keys:
                raise ConfigError(
                    f"known_hosts file '{known}' for service '{self.service}' does not exist",
                    hint="set services.<name>.known_hosts (ssh-keyscan -p PORT HOST >> FILE, then verify it)",
                )
            self._conns[h.name] = conn
        return conn

    def _env(self, h: _Host, version: str | None) -> str:
        env = {"RECOVERCTL_RELEASES_DIR": h.releases_dir, "RECOVERCTL_CURRENT": h.current_link}
        if version is not None:
            env["RECOVERCTL_VERSION"] = version
            env["RECOVERCTL_RELEASE"] = _release_path(h, version)
        return " ".join(f"export {k}={shlex.quote(v)};" for k, v in env.items())

    def _run_all(
        self, script: dict[str, str], hosts: list[_Host] | None = None
    ) -> tuple[list[HostOutcome], dict[str, str]]:
        """Run one shell script per host in parallel; return outcomes and each host's stdout."""
        hosts = self.hosts if hosts is None else hosts
        conns = {}
        outcomes: dict[str, HostOutcome] = {}
        for h in hosts:
            try:
                conns[h.name] = self._connection(h)
            except RecoverctlError:
                raise
            except Exception as e:
                outcomes[h.name] = HostOutcome(h.name, error=_explain(e), transient=connection_fault(e))
        by_conn = {id(c): name for name, c in conns.items()}
        stdout: dict[str, str] = {}
        # ThreadingGroup runs one command for all; the per-host scripts differ, so each host gets
        # its own group of one, all started together.
        groups = [(name, ThreadingGroup.from_connections([c])) for name, c in conns.items()]

        def run(item: tuple[str, ThreadingGroup]) -> None:
            name, group = item
            try:
                results = group.run(
                    f"sh -c {shlex.quote(script[name])}", hide=True, warn=False, in_stream=False
                )
                for conn, res in results.items():
                    stdout[by_conn[id(conn)]] = res.stdout
                outcomes[name] = HostOutcome(name)
            except GroupException as ge:
                for _conn, res in ge.result.items():
                    failure = res if isinstance(res, BaseException) else None
                    outcomes[name] = HostOutcome(
                        name,
                        error=_explain(res) if failure is not None else str(res),
                        transient=failure is not None and connection_fault(failure),
                    )

        if groups:
            with ThreadPoolExecutor(max_workers=min(16, len(groups))) as pool:
                list(pool.map(run, groups))
        for o in outcomes.values():
            if o.transient and o.host in self._conns:
                # A dropped connection is not reused: the next attempt dials again.
                self._conns.pop(o.host).close()
        return [outcomes[h.name] for h in hosts], stdout

    def _answered(self, what: str, outcomes: list[HostOutcome]) -> None:
        """Raise unless every host answered `what`: TargetUnreachable naming the hosts when each
        failure is a dropped or unreachable host (the retry layer asks them again), else
        RecoverctlError. A command whose answer combines every host's must not go on without one."""
        failed = [o for o in outcomes if not o.ok]
        if not failed:
            return
        message = f"{what} of service '{self.service}' failed on " + ", ".join(
            f"{o.host} ({o.error})" for o in failed
        )
        if all(o.transient for o in failed):
            hosts = [o.host for o in failed]
            raise TargetUnreachable(message, where="hosts " + ", ".join(hosts), hosts=hosts)
        raise RecoverctlError(message, details={"hosts": [o.to_dict() for o in outcomes]})

    def _by_name(self, name: str) -> _Host:
        return next(h for h in self.hosts if h.name == name)

    # --- Target ---------------------------------------------------------------------------------

    def preflight(self, version: str | None) -> None:
        """With a version (rollback): every host must answer and hold the release.

        Without one (deploy): at least one host must answer; the deploy then reports the
        others per host (exit 3) before switching anything.
        """
        script = {h.name: f"ls -1 {shlex.quote(h.releases_dir)} 2>/dev/null || true" for h in self.hosts}
        outcomes, out = self._run_all(script)
        down = [o for o in outcomes if not o.ok]
        if down and (version is not None or len(down) == len(outcomes)):
            raise RecoverctlError(
                f"pre-flight for service '{self.service}' failed on "
                + ", ".join(f"{o.host} ({o.error})" for o in down),
                hint="nothing was changed; fix the hosts (or known_hosts) and run again",
                details={"hosts": [o.to_dict() for o in outcomes]},
            )
        if version is None:
            return
        missing = {name: sorted(text.split()) for name, text in out.items() if version not in text.split()}
        if missing:
            raise NotFoundError(
                f"release {version} of '{self.service}' is missing on "
                + ", ".join(f"{n} (has: {', '.join(v) or 'nothing'})" for n, v in missing.items()),
                hint="deploy it there first, or choose a version present on every host",
                details={"missing": missing},
            )

    def reachable(self) -> list[str]:
        """Return the names of hosts that answer (used by deploy to go on with a partial fleet)."""
        outcomes, _ = self._run_all({h.name: "true" for h in self.hosts})
        return [o.host for o in outcomes if o.ok]

    def available_versions(self) -> list[str]:
        outcomes, out = self._run_all(
            {h.name: f"ls -1 {shlex.quote(h.releases_dir)} 2>/dev/null || true" for h in self.hosts}
        )
        self._answered("listing versions", outcomes)
        sets = [set(text.split()) for text in out.values()]
        return sorted(set.intersection(*sets)) if sets else []

    def _tarball(self, version: str) -> bytes | None:
        if not self.cfg.artifact:
            return None
        path = Path(self.cfg.artifact.replace("{version}", version)).expanduser()
        if path.is_dir():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for child in sorted(path.iterdir()):
                    tar.add(child, arcname=child.name)
            return buf.getvalue()
        if path.is_file():
            return path.read_bytes()
        raise NotFoundError(
            f"artifact '{path}' for {self.service} {version} does not exist",
            hint="set services.<name>.artifact to a tarball or directory (may contain {version})",
        )

    def prepare(self, version: str, image: str | None = None) -> Artifact:
        data = self._tarball(check_version(version))
        if data is None and not self.cfg.fetch_command:
            raise ConfigError(
                f"service '{self.service}' has neither 'artifact' nor 'fetch_command'",
                hint="set one of them so recoverctl can put releases on the hosts",
            )
        up = [self._by_name(n) for n in self.reachable()]
        uploads: dict[str, str] = {}
        failed: list[HostOutcome] = []
        if data is not None:

            def upload(h: _Host) -> None:
                remote = _release_path(h, version, ".upload-{}.tar.gz")
                try:
                    conn = self._connection(h)
                    conn.run(f"mkdir -p {shlex.quote(h.releases_dir)}", hide=True, in_stream=False)
                    conn.put(io.BytesIO(data), remote)
                    uploads[h.name] = remote
                except Exception as e:
                    failed.append(HostOutcome(h.name, error=f"upload failed: {_explain(e)}"))

            with ThreadPoolExecutor(max_workers=min(16, max(1, len(up)))) as pool:
                list(pool.map(upload, up))
        scripts = {}
        for h in up:
            if h.name not in uploads and data is not None:
                continue
            release = _release_path(h, version)
            tmp = _release_path(h, version, ".{}.partial")
            q = shlex.quote
            if data is not None:
                tarball = q(uploads[h.name])
                fill = f"mkdir -p {q(tmp)} && tar -xzf {tarball} -C {q(tmp)} && rm -f {tarball}"
            else:
                assert self.cfg.fetch_command is not None
                fill = f"mkdir -p {q(tmp)} && (cd {q(tmp)} && {self.cfg.fetch_command})"
            # Unpack beside, then rename: a half-unpacked release never has the real name.
            scripts[h.name] = (
                f"{self._env(h, version)} set -e; if [ ! -d {q(release)} ]; then rm -rf {q(tmp)}; "
                f"{fill}; mv {q(tmp)} {q(release)}; fi"
            )
        outcomes, _ = self._run_all(scripts, [h for h in up if h.name in scripts])
        failed += [o for o in outcomes if not o.ok]
        missing = [h.name for h in self.hosts if h.name not in {x.name for x in up}]
        failed += [HostOutcome(n, error="unreachable") for n in missing]
        if failed:
            ok = [o for o in outcomes if o.ok]
            cls = PartialError if ok else RecoverctlError
            raise cls(
                f"putting {self.service} {version} on the hosts failed on "
                + ", ".join(f"{o.host} ({o.error})" for o in failed),
                details={"failed": [o.to_dict() for o in failed], "ok": [o.host for o in ok]},
            )
        return Artifact(version=version, release_dir=posixpath.join(self.cfg.releases_dir, version))

    def stop(self) -> list[HostOutcome]:
        if not self.cfg.stop_command:
            return [HostOutcome(h.name, output={"stopped": None}) for h in self.hosts]
        outcomes, _ = self._run_all(
            {h.name: f"{self._env(h, None)} {self.cfg.stop_command}" for h in self.hosts}
        )
        return outcomes

    def start(self, artifact: Artifact) -> list[HostOutcome]:
        q = shlex.quote
        scripts = {}
        for h in self.hosts:
            release = _release_path(h, artifact.version)
            tmp_link = f"{h.current_link}.tmp-{check_version(artifact.version)}"
            # ln + rename(2): readers see the old or the new target, never a missing link.
            switch = (
                f"test -d {q(release)} && ln -sfn {q(release)} {q(tmp_link)} "
                f"&& mv -Tf {q(tmp_link)} {q(h.current_link)}"
            )
            restart = f" && {self.cfg.restart_command}" if self.cfg.restart_command else ""
            scripts[h.name] = f"{self._env(h, artifact.version)} {switch}{restart}"
        outcomes, _ = self._run_all(scripts)
        for o in outcomes:
            if o.ok:
                o.output["started"] = artifact.version
        return outcomes

    def endpoints(self) -> list[Endpoint]:
        out = []
        for h in self.hosts:
            url = h.health_url or (self.cfg.health.url or "").replace("{host}", h.host)
            if not url:
                url = f"http://{h.host}{self.cfg.health.path}"
            out.append(Endpoint(h.name, url))
        return out

    def running_version(self) -> str | None:
        outcomes, out = self._run_all(
            {h.name: f"readlink {shlex.quote(h.current_link)} || true" for h in self.hosts}
        )
        self._answered("reading the running version", outcomes)
        versions = {posixpath.basename(text.strip()) for text in out.values() if text.strip()}
        return versions.pop() if len(versions) == 1 else None

    def retire(self, versions: list[str]) -> list[str]:
        if not versions:
            return []
        q = shlex.quote
        scripts = {}
        for h in self.hosts:
            paths = " ".join(q(_release_path(h, v)) for v in versions)
            # Never the release `current` points at, whatever the catalog says.
            scripts[h.name] = (
                f"cur=$(readlink -f {q(h.current_link)} || true); for d in {paths}; do "
                f'[ "$(readlink -f "$d")" = "$cur" ] || rm -rf "$d"; done'
            )
        outcomes, _ = self._run_all(scripts)
        self._answered("retiring old releases", outcomes)
        return versions

    def describe(self) -> dict[str, Any]:
        return {"target": "ssh", "hosts": [h.name for h in self.hosts], "releases_dir": self.cfg.releases_dir}

    def only(self, hosts: list[str]) -> SshTarget:
        narrowed = copy.copy(self)  # shares the open connections
        narrowed.hosts = [h for h in self.hosts if h.name in hosts]
        return narrowed

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()
