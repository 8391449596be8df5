"""Deployment targets behind the small Target protocol: docker (Docker SDK), ssh (Fabric); health checks.

A new target is one module plus one line in `open_target`.
"""

from __future__ import annotations

from recoverctl.config import DockerService, SshService
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome, Target

__all__ = ["Artifact", "Endpoint", "HostOutcome", "Target", "open_target"]


def open_target(service: str, cfg: DockerService | SshService) -> Target:
    """Given a service name and its config, return its Target (connections open lazily)."""
    if cfg.target == "docker":
        from recoverctl.deploy.docker import DockerTarget

        return DockerTarget(service, cfg)
    from recoverctl.deploy.ssh import SshTarget

    return SshTarget(service, cfg)
