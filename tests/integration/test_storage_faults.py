"""Transient faults are retried through the real client paths; persistent ones fail, bounded, with the cause.

S3 faults come from a fault-injecting HTTP proxy in front of moto; SFTP faults from killing sshd.
"""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from recoverctl.config import RepositoryConfig, RetryOptions, S3Options, SftpOptions
from recoverctl.errors import StorageError
from recoverctl.storage import open_storage
from tests.conftest import Cli
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.net import wait_until
from tests.fixtures.s3 import S3Bucket
from tests.fixtures.sshd import SshServer

MIB = 1024 * 1024


def _proxied_repo(bucket: S3Bucket, proxy: FaultProxy, attempts: int) -> dict[str, Any]:
    repo = bucket.repository("prod", endpoint_url=proxy.url)
    repo["retry"] = {"attempts": attempts, "initial": 0.05, "maximum": 0.2, "max_seconds": 30}
    return repo


def test_s3_503_twice_then_success(cli: Cli, s3_bucket: S3Bucket, fault_proxy_factory: Any) -> None:
    proxy: FaultProxy = fault_proxy_factory(s3_bucket.server.endpoint_url)
    proxy.fail(2, status=503, method="PUT")
    s3_bucket.server.configure(cli)
    cli.write_config({"repository": _proxied_repo(s3_bucket, proxy, attempts=4)})
    out = cli("--json", "storage", "check", check=0).json()
    assert out["ok"] is True
    assert proxy.count("fail", "PUT") == 2
    assert proxy.count("forwarded", "PUT") == 1
    assert s3_bucket.keys() == []


def test_s3_persistent_503_fails_after_bounded_retries(
    cli: Cli, s3_bucket: S3Bucket, fault_proxy_factory: Any
) -> None:
    proxy: FaultProxy = fault_proxy_factory(s3_bucket.server.endpoint_url)
    proxy.fail_always(status=503, code="SlowDown", method="PUT")
    s3_bucket.server.configure(cli)
    cli.write_config({"repository": _proxied_repo(s3_bucket, proxy, attempts=3)})
    r = cli("--json", "storage", "check", check=1)
    err = r.error_json()
    assert err["exit_code"] == 1
    assert f"s3://{s3_bucket.name}/prod" in err["message"]
    assert "failed after retries" in err["message"]
    assert "SlowDown" in err["message"]  # the last cause
    assert proxy.count("fail", "PUT") == 3
    assert proxy.count("forwarded", "PUT") == 0
    assert r.stderr.count("retrying") == 2
    assert s3_bucket.keys() == []


def _s3_storage(bucket: S3Bucket, endpoint: str, attempts: int) -> Any:
    opts = RepositoryConfig(
        url=bucket.url("prod"),
        s3=S3Options(
            endpoint_url=endpoint,
            path_style=True,
            region=bucket.server.region,
            access_key_id=bucket.server.access_key_id,
            secret_access_key=bucket.server.secret_access_key,  # type: ignore[arg-type]
            multipart_threshold_mib=5,
            multipart_chunk_mib=5,
            max_concurrency=2,
        ),
        retry=RetryOptions(attempts=attempts, initial=0.05, maximum=0.2, max_seconds=30),
    )
    return open_storage(opts.url, opts)


def test_s3_connection_dropped_mid_upload(s3_bucket: S3Bucket, fault_proxy_factory: Any) -> None:
    proxy: FaultProxy = fault_proxy_factory(s3_bucket.server.endpoint_url)
    storage = _s3_storage(s3_bucket, proxy.url, attempts=2)
    data = os.urandom(MIB) * 12
    # Every part upload dies after 1 MiB of its body: the upload can never complete.
    proxy.cut(None, after_bytes=MIB, method="PUT")
    with pytest.raises(StorageError) as e:
        storage.put("data/pack", data)
    assert f"s3://{s3_bucket.name}/prod" in e.value.message
    assert "failed after retries" in e.value.message
    assert proxy.count("cut") >= 2
    assert s3_bucket.keys() == []
    # The failed multipart uploads were aborted, not left to accumulate storage charges.
    uploads = s3_bucket.client().list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])
    assert uploads == []
    # One dropped connection is transient: the retry layer redoes the put and it lands whole.
    proxy.clear()
    proxy.cut(1, after_bytes=MIB, method="PUT")
    storage.put("data/pack", data)
    assert proxy.count("cut") >= 3
    assert s3_bucket.client().get_object(Bucket=s3_bucket.name, Key="prod/data/pack")["Body"].read() == data
    storage.close()


def test_sftp_server_killed_mid_transfer(sshd: SshServer) -> None:
    opts = RepositoryConfig(
        url=sshd.url("repo"),
        sftp=SftpOptions(key_file=str(sshd.key_file), known_hosts=str(sshd.known_hosts), timeout=5),
        retry=RetryOptions(attempts=2, initial=0.05, maximum=0.1, max_seconds=20),
    )
    storage = open_storage(opts.url, opts)
    storage.put("data/warmup", b"x")
    data = os.urandom(MIB) * 96
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            storage.put("data/pack", data)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=upload)
    t.start()
    data_dir = sshd.root / "repo" / "data"

    def temp_growing() -> bool:
        return any(p.name.startswith(".tmp-pack") and p.stat().st_size > MIB for p in data_dir.iterdir())

    wait_until(temp_growing, timeout=60, what="the upload's temp file to grow")
    sshd.kill()
    t.join(60)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StorageError)
    message = errors[0].message  # type: ignore[attr-defined]
    assert sshd.url("repo") in message
    assert "failed after retries" in message
    assert not (data_dir / "pack").exists()
    # Back up again, the same Storage reconnects; the half-written temp file is not an object.
    sshd.start()
    assert sorted(o.key for o in storage.list("data/")) == ["data/warmup"]
    storage.put("data/pack", b"whole")
    assert storage.get("data/pack") == b"whole"
    storage.close()


def test_fault_injection_env_through_cli(cli: Cli, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    cli.write_config(
        {"repository": {"url": repo, "retry": {"attempts": 3, "initial": 0.01, "maximum": 0.02}}}
    )
    r = cli("storage", "check", env={"RECOVERCTL_FAULTS": "put:transient:2"}, check=0)
    assert r.stderr.count("injected transient fault") == 2
    err = cli(
        "--json", "storage", "check", env={"RECOVERCTL_FAULTS": "put:transient:*"}, check=1
    ).error_json()
    assert "failed after retries" in err["message"] and "injected transient fault" in err["message"]


def test_s3_hung_request_times_out_and_is_retried(s3_bucket: S3Bucket, fault_proxy_factory: Any) -> None:
    proxy: FaultProxy = fault_proxy_factory(s3_bucket.server.endpoint_url)
    opts = RepositoryConfig(
        url=s3_bucket.url("prod"),
        s3=S3Options(
            endpoint_url=proxy.url,
            path_style=True,
            region=s3_bucket.server.region,
            access_key_id=s3_bucket.server.access_key_id,
            secret_access_key=s3_bucket.server.secret_access_key,  # type: ignore[arg-type]
            read_timeout=1,
        ),
        retry=RetryOptions(attempts=3, initial=0.05, maximum=0.1),
    )
    storage = open_storage(opts.url, opts)
    proxy.stall(1, method="GET")
    storage.put("config", b"cfg")
    assert storage.get("config") == b"cfg"
    assert proxy.count("stall", "GET") == 1
    assert proxy.count("forwarded", "GET") == 1
    storage.close()


def test_sftp_one_connection_serves_parallel_calls(sshd: SshServer) -> None:
    opts = RepositoryConfig(
        url=sshd.url("repo"),
        sftp=SftpOptions(key_file=str(sshd.key_file), known_hosts=str(sshd.known_hosts), connections=4),
    )
    storage = open_storage(opts.url, opts)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: storage.put(f"data/{i % 5}/{i}", b"x" * i), range(60)))
        sizes = sorted(pool.map(lambda i: len(storage.get(f"data/{i % 5}/{i}")), range(60)))
    assert sizes == list(range(60))
    storage.close()
    assert sshd.log_path.read_text().count("Accepted publickey for root") == 1


def test_sftp_key_from_ssh_agent(cli: Cli, sshd: SshServer, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, timeout=10, what="ssh-agent socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(sshd.key_file)], env=env, check=True, capture_output=True)
        cli.env["SSH_AUTH_SOCK"] = str(sock)
        # No key_file: the only way in is the agent (the isolated HOME has no ~/.ssh keys).
        cli.write_config(
            {"repository": {"url": sshd.url("repo"), "sftp": {"known_hosts": str(sshd.known_hosts)}}}
        )
        cli("storage", "check", check=0)
        assert "Accepted publickey for root" in sshd.log_path.read_text()
    finally:
        agent.terminate()
        agent.wait(10)


def test_s3_server_killed_mid_upload(s3_server_factory: Any) -> None:
    server = s3_server_factory()
    bucket = server.create_bucket()
    storage = _s3_storage(bucket, server.endpoint_url, attempts=2)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            storage.put("data/pack", os.urandom(MIB) * 64)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=upload)
    t.start()
    # moto logs each request once answered: the first finished part means the upload is under way.
    wait_until(lambda: "partNumber=" in server.log_path.read_text(), timeout=60, what="a part upload")
    server.kill()
    t.join(60)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StorageError)
    message = errors[0].message  # type: ignore[attr-defined]
    assert f"s3://{bucket.name}/prod" in message and server.endpoint_url in message
    assert "failed after retries" in message
    storage.close()


def test_s3_backup_reports_the_failed_upload_not_the_failed_lock_release(
    cli: Cli, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    # Every pack upload fails (as a hung upload does once its retries time out) and so does the
    # lock's removal afterwards: the error to report is the upload's, the lock's is a note on it.
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(300_000))
    s3_bucket.server.configure(cli)
    repo = s3_bucket.repository("prod")
    repo["retry"] = {"attempts": 2, "initial": 0.01, "maximum": 0.02}
    cli.write_config({"repository": repo})
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    cli("init", check=0)
    r = cli(
        "--json",
        "backup",
        "files",
        str(src),
        env={"RECOVERCTL_FAULTS": "put:transient:*@data/,delete:error:*@locks/"},
        check=1,
    )
    err = r.error_json()
    assert "put data/" in err["message"] and "failed after retries" in err["message"], err
    assert "locks/" not in err["message"]
    [note] = err["notes"]
    assert "releasing the repository lock" in note and "injected error fault" in note
    assert s3_bucket.keys("prod/locks/")  # left behind (it goes stale), not hidden


def test_s3_backup_hung_upload_is_reported_not_the_failed_lock_release(
    cli: Cli, s3_bucket: S3Bucket, fault_proxy_factory: Any, tmp_path: Path
) -> None:
    # A real hang: the S3 endpoint never answers pack uploads (the read timeout ends each try),
    # and refuses the lock's DELETE afterwards.
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(300_000))
    proxy: FaultProxy = fault_proxy_factory(s3_bucket.server.endpoint_url)
    s3_bucket.server.configure(cli)
    repo = _proxied_repo(s3_bucket, proxy, attempts=2)
    repo["s3"]["read_timeout"] = 1
    cli.write_config({"repository": repo})
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    cli("init", check=0)
    proxy.stall(None, method="PUT", path="/prod/data/")
    proxy.fail_always(status=403, code="AccessDenied", method="DELETE", path="/prod/locks/")
    err = cli("--json", "backup", "files", str(src), check=1).error_json()
    assert "put data/" in err["message"] and "failed after retries" in err["message"], err
    assert "timeout" in err["message"].lower()
    [note] = err["notes"]
    assert "releasing the repository lock" in note and "AccessDenied" in note
    assert proxy.count("stall", "PUT") >= 2  # every attempt at a pack upload hung


def test_storage_check_reports_the_failed_step_not_the_failed_probe_removal(cli: Cli, tmp_path: Path) -> None:
    cli.write_config({"repository": {"url": str(tmp_path / "repo")}})
    faults = "get:error:*@recoverctl-probe/,delete:error:*@recoverctl-probe/"
    err = cli("--json", "storage", "check", env={"RECOVERCTL_FAULTS": faults}, check=1).error_json()
    assert "unable to get" in err["message"], err
    assert "removing the probe object" in err["notes"][0] and "unable to delete" in err["notes"][0]
