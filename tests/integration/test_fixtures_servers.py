"""The shared server fixtures work: moto S3 over HTTP, sshd with strict host keys, several at once."""

from __future__ import annotations

from tests.fixtures.net import port_open
from tests.fixtures.s3 import S3Bucket, S3Server
from tests.fixtures.sshd import SshdFactory


def test_s3_bucket_round_trip(s3_bucket: S3Bucket) -> None:
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="a/b", Body=b"hello")
    assert s3_bucket.keys() == ["a/b"]
    assert s3_bucket.repository("p")["url"] == f"s3://{s3_bucket.name}/p"


def test_s3_buckets_are_fresh(s3_server: S3Server, s3_bucket: S3Bucket) -> None:
    other = s3_server.create_bucket()
    assert other.name != s3_bucket.name
    assert other.keys() == []


def test_s3_auth_server_rejects_unknown_keys(s3_auth_server: S3Server) -> None:
    import botocore.exceptions
    import pytest

    bucket = s3_auth_server.create_bucket()
    assert bucket.keys() == []
    bad = s3_auth_server.client(aws_access_key_id="AKIAWRONG", aws_secret_access_key="wrong")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_objects_v2(Bucket=bucket.name)
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_sshd_factory_three_servers_stop_restart(sshd_factory: SshdFactory) -> None:
    servers = [sshd_factory() for _ in range(3)]
    assert len({s.port for s in servers}) == 3
    for s in servers:
        assert s.run("echo ok").stdout.strip() == "ok"
    assert len(sshd_factory.known_hosts.read_text().splitlines()) == 3
    first = servers[0]
    first.stop()
    assert not port_open(first.port)
    first.start()
    assert first.run("echo back").stdout.strip() == "back"
    first.restart()
    assert first.run("echo again").stdout.strip() == "again"
    first.kill()
    assert not port_open(first.port)


def test_sshd_strict_host_key_rejects_other_server_key(sshd_factory: SshdFactory) -> None:
    a, b = sshd_factory(), sshd_factory()
    # b's known_hosts entry does not match a's host key: ssh must refuse.
    args = a.ssh_args()
    args[args.index(f"UserKnownHostsFile={a.known_hosts}")] = f"UserKnownHostsFile={b.known_hosts}"
    import subprocess

    r = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "Host key verification failed" in r.stderr
