"""The Target protocol every deployment target implements (docker, ssh), and its small result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from recoverctl.deploy.version import check_version
from recoverctl.errors import RecoverctlError


class TargetUnreachable(RecoverctlError):
    """The Docker engine or a host did not answer (connection refused or reset, engine 5xx while
    it restarts): worth retrying. Targets classify their own faults into it; `where` names it."""

    def __init__(self, message: str, *, where: str, hint: str | None = None, hosts: list[str] | None = None):
        super().__init__(message, hint=hint, details={"where": where})
        self.where = where
        # The hosts of a fleet that did not answer (empty: the whole target): a retry asks only them.
        self.hosts = hosts or []


@dataclass
class Endpoint:
    """Where one running instance answers its health check: `name` is the host (or container)."""

    name: str
    url: str


@dataclass
class HostOutcome:
    """Per-host result of a fleet operation; `error` is None on success."""

    host: str
    error: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    # The host could not be reached (or the connection dropped mid-command): worth retrying.
    transient: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "error": self.error,
            **({"unreachable": True} if self.transient else {}),
            **self.output,
        }


@dataclass
class Artifact:
    """What a version runs from: an image reference (+digest) or a release directory."""

    version: str
    image: str | None = None
    digest: str | None = None
    release_dir: str | None = None

    def __post_init__(self) -> None:
        check_version(self.version)


class Target(Protocol):
    """A place a service runs. Every method is idempotent so an interrupted rollback can resume.

    Methods operating on several hosts return one HostOutcome per host and never raise for a
    single host's failure; the caller decides between success, partial (exit 3) and failure.
    An unreachable engine or host is a TargetUnreachable (or an outcome marked `transient`), which
    the retry layer (deploy/retry.py) rides out; every other error is final.
    """

    kind: str

    def preflight(self, version: str | None) -> None:
        """Check the engine / every host is reachable (and the artifact of `version` is present).

        Raise RecoverctlError (NotFoundError naming what exists when the artifact is missing).
        """
        ...

    def available_versions(self) -> list[str]:
        """Return the versions whose artifacts are present on the target."""
        ...

    def prepare(self, version: str, image: str | None = None) -> Artifact:
        """Make the artifact of `version` present (pull / upload+unpack); return it; raise NotFoundError."""
        ...

    def stop(self) -> list[HostOutcome]:
        """Stop whatever version runs now (no-op where nothing runs)."""
        ...

    def start(self, artifact: Artifact) -> list[HostOutcome]:
        """Run `artifact` as the current version (replacing any other version)."""
        ...

    def endpoints(self) -> list[Endpoint]:
        """Return the health URLs to verify, one per running instance."""
        ...

    def running_version(self) -> str | None:
        """Return the version that runs now, or None."""
        ...

    def retire(self, versions: list[str]) -> list[str]:
        """Remove the artifacts of these old release versions (never the running one); return them."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return where this target lives, for plans and audit entries."""
        ...

    def only(self, hosts: list[str]) -> Target:
        """Return this target narrowed to the named hosts (a retry re-runs only the hosts that failed)."""
        ...

    def close(self) -> None: ...
