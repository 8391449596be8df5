"""Deployment targets behind the small Target protocol: docker (Docker SDK), ssh (Fabric); health checks.

A new target is one module plus one line in `open_target`.
"""

from __future__ import annotations

from recoverctl.config import DockerService, SshService
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome, Target, TargetUnreachable

__all__ = ["Artifact", "Endpoint", "HostOutcome", "Target", "TargetUnreachable", "open_target"]


def open_target(service: str, cfg: DockerService | SshService) -> Target:
    """Given a service name and its config, return its Target wrapped in the retry layer
    (connections open lazily)."""
    from recoverctl.deploy.retry import RetryingTarget

    inner: Target
    if cfg.target == "docker":
        from recoverctl.deploy.docker import DockerTarget

        inner = DockerTarget(service, cfg)
    else:
        from recoverctl.deploy.ssh import SshTarget

        inner = SshTarget(service, cfg)
    return RetryingTarget(inner, cfg.retry)
