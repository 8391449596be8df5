"""The Target protocol every deployment target implements (docker, ssh), and its small result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


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

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "error": self.error, **self.output}


@dataclass
class Artifact:
    """What a version runs from: an image reference (+digest) or a release directory."""

    version: str
    image: str | None = None
    digest: str | None = None
    release_dir: str | None = None


class Target(Protocol):
    """A place a service runs. Every method is idempotent so an interrupted rollback can resume.

    Methods operating on several hosts return one HostOutcome per host and never raise for a
    single host's failure; the caller decides between success, partial (exit 3) and failure.
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

    def close(self) -> None: ...
