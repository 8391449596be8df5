"""The release version rule, the paths the ssh target builds from it, fault classification, and the
retry layer around deploy targets (with an in-memory target standing in for a fleet)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker.errors
import paramiko
import pytest
import requests.exceptions

from recoverctl.config import ServiceRetry, SshService
from recoverctl.deploy.docker import engine_fault
from recoverctl.deploy.retry import RetryingTarget
from recoverctl.deploy.ssh import SshTarget, _release_path, connection_fault
from recoverctl.deploy.target import Artifact, Endpoint, HostOutcome, Target, TargetUnreachable
from recoverctl.deploy.version import check_stored_version, check_version, version_problem
from recoverctl.errors import ExitCode, UsageError, VerificationError
from tests.fixtures.net import free_port

GOOD = ["v1", "1.4.2", "2026-12-06_rc.1", "A", "a" * 128, "a..b"]
BAD = ["", "/etc", "..", ".", ".hidden", "a/b", "-rf", "a\x00b", "a" * 129, "a" * 300, "a b", "v1;rm", "é"]


@pytest.mark.parametrize("version", GOOD)
def test_good_versions_pass(version: str) -> None:
    assert version_problem(version) is None
    assert check_version(version) == version


@pytest.mark.parametrize("version", BAD)
def test_bad_versions_are_refused_everywhere(version: str) -> None:
    assert version_problem(version)
    with pytest.raises(UsageError) as e:
        check_version(version)
    assert e.value.exit_code == ExitCode.USAGE and "invalid release version" in e.value.message
    with pytest.raises(VerificationError, match="in the catalog has an invalid version"):
        check_stored_version(version, "release #3 of 'api'")
    with pytest.raises(UsageError):
        Artifact(version)


def test_ssh_paths_stay_inside_the_releases_directory() -> None:
    target = SshTarget(
        "api", SshService(target="ssh", hosts=["root@127.0.0.1:2222"], releases_dir="/srv/api/releases")
    )
    host = target.hosts[0]
    assert _release_path(host, "v1") == "/srv/api/releases/v1"
    assert _release_path(host, "v1", ".{}.partial") == "/srv/api/releases/.v1.partial"
    for bad in ("/etc", "..", "../x", "a/b"):
        with pytest.raises(UsageError):
            _release_path(host, bad)
    with pytest.raises(UsageError):
        target.retire(["v1", "/etc"])  # refused before any connection is made
    assert target._conns == {}


def test_engine_and_ssh_faults_are_classified() -> None:
    assert engine_fault(requests.exceptions.ConnectionError("Connection aborted"))
    assert engine_fault(docker.errors.DockerException("Error while fetching server API version: refused"))
    restarting = requests.Response()
    restarting.status_code = 500
    assert engine_fault(
        docker.errors.APIError(
            "x", restarting, explanation="dial unix /run/containerd.sock: connection refused"
        )
    )
    assert not engine_fault(docker.errors.APIError("x", restarting, explanation="OCI runtime create failed"))
    missing = requests.Response()
    missing.status_code = 404
    assert not engine_fault(docker.errors.ImageNotFound("no such image", missing))

    assert connection_fault(ConnectionRefusedError(111, "Connection refused"))
    assert connection_fault(EOFError())
    assert connection_fault(paramiko.SSHException("Error reading SSH protocol banner"))
    assert not connection_fault(paramiko.AuthenticationException("denied"))
    assert not connection_fault(FileNotFoundError(2, "No such file", "/root/.ssh/missing_key"))
    assert not connection_fault(paramiko.SSHException("Server '[127.0.0.1]:22' not found in known_hosts"))


class _Fleet:
    """Hosts a, b, c; `b` is unreachable for its first `down` attempts (forever with down=-1)."""

    kind = "fake"

    def __init__(
        self,
        down: int,
        hosts: tuple[str, ...] = ("a", "b", "c"),
        calls: list[str] | None = None,
        state: dict[str, int] | None = None,
    ):
        self.state = {"down": down} if state is None else state  # shared with narrowed copies
        self.hosts = hosts
        self.calls: list[str] = [] if calls is None else calls

    def stop(self) -> list[HostOutcome]:
        out = []
        for h in self.hosts:
            self.calls.append(h)
            if h == "b" and self.state["down"] != 0:
                out.append(HostOutcome(h, error="unreachable: Connection refused", transient=True))
            else:
                out.append(HostOutcome(h))
        if "b" in self.hosts and self.state["down"] > 0:
            self.state["down"] -= 1
        return out

    def only(self, hosts: list[str]) -> _Fleet:
        return _Fleet(0, tuple(hosts), self.calls, self.state)

    def running_version(self) -> str | None:
        raise TargetUnreachable("engine gone", where="docker host unix:///nowhere")

    def retire(self, versions: list[str]) -> list[str]:
        self.calls.extend(self.hosts)
        if "b" in self.hosts and self.state["down"] != 0:
            self.state["down"] -= 1
            raise TargetUnreachable("b dropped", where="hosts b", hosts=["b"])
        return versions

    def endpoints(self) -> list[Endpoint]:
        return []


def _retrying(fleet: _Fleet, window: float) -> Target:
    fake: Any = fleet
    return RetryingTarget(fake, ServiceRetry(window=window, initial=0.001, maximum=0.001))


def test_only_the_failed_hosts_are_retried_until_they_answer() -> None:
    fleet = _Fleet(down=2)
    outcomes = _retrying(fleet, window=60).stop()
    assert [(o.host, o.ok) for o in outcomes] == [("a", True), ("b", True), ("c", True)]
    assert fleet.calls == ["a", "b", "c", "b", "b"]


def test_a_host_down_past_the_window_is_reported_not_raised() -> None:
    outcomes = _retrying(_Fleet(down=-1), window=0.05).stop()
    assert [(o.host, o.ok) for o in outcomes] == [("a", True), ("b", False), ("c", True)]
    assert "Connection refused (still after 0 s of retries)" in (outcomes[1].error or "")


def test_an_unreachable_engine_past_the_window_raises_naming_it() -> None:
    with pytest.raises(TargetUnreachable) as e:
        _retrying(_Fleet(down=0), window=0.05).running_version()
    assert e.value.where == "docker host unix:///nowhere" and "of retries" in e.value.message


def test_retire_asks_again_only_the_hosts_that_dropped() -> None:
    fleet = _Fleet(down=2)
    assert _retrying(fleet, window=60).retire(["v1"]) == ["v1"]
    assert fleet.calls == ["a", "b", "c", "b", "b"]


def test_ssh_reads_and_retire_raise_for_an_unreachable_host_so_the_window_applies() -> None:
    """Nothing listens on the port: each call names the host as unreachable instead of answering
    as if the fleet were smaller (a running version read from the hosts that happened to answer)."""
    name = f"127.0.0.1:{free_port()}"
    cfg = SshService(
        target="ssh",
        hosts=[f"deploy@{name}"],
        releases_dir="/srv/api/releases",
        insecure_accept_new_host_keys=True,
        connect_timeout=2,
    )
    calls: list[Callable[[Target], object]] = [
        lambda t: t.running_version(),
        lambda t: t.available_versions(),
        lambda t: t.retire(["v1"]),
    ]
    for call in calls:
        with pytest.raises(TargetUnreachable) as e:
            call(SshTarget("api", cfg))
        assert e.value.hosts == [name] and e.value.where == f"hosts {name}"
        assert "unreachable" in e.value.message
        with pytest.raises(TargetUnreachable, match="still after 0 s of retries") as e:
            call(RetryingTarget(SshTarget("api", cfg), ServiceRetry(window=0)))
        assert e.value.hosts == [name]
