"""The Storage contract, run against every backend: local dir, S3 (moto over HTTP), SFTP (real sshd)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recoverctl.config import RepositoryConfig, RetryOptions, S3Options, SftpOptions
from recoverctl.errors import ObjectNotFound, StorageError
from recoverctl.storage import Storage, open_storage
from tests.fixtures.s3 import S3Server
from tests.fixtures.sshd import SshdFactory

MIB = 1024 * 1024
FAST_RETRY = RetryOptions(attempts=3, initial=0.05, maximum=0.2, max_seconds=20)


@dataclass
class Backend:
    name: str
    storage: Storage
    # Every name physically present, temp files included: proves no partial object leaks.
    raw_names: Callable[[], list[str]]
    big: int
    # Leaves what a write killed mid-way leaves on this backend, under the given key.
    crash_write: Callable[[str], None]


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _tmp_file(root: Path, key: str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / f".tmp-{path.name}.crashed").write_bytes(b"x" * 100)


@pytest.fixture(params=["local", "s3", "sftp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        root = tmp_path / "repo"
        storage = open_storage(str(root), RepositoryConfig(url=str(root), retry=FAST_RETRY))
        b = Backend("local", storage, lambda: _files_under(root), 100 * MIB + 7, lambda k: _tmp_file(root, k))
    elif request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = server.create_bucket()
        opts = RepositoryConfig(
            url=bucket.url("repo"),
            s3=S3Options(
                endpoint_url=server.endpoint_url,
                region=server.region,
                path_style=True,
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,  # type: ignore[arg-type]
                multipart_threshold_mib=16,
                multipart_chunk_mib=16,
            ),
            retry=FAST_RETRY,
        )
        storage = open_storage(opts.url, opts)

        def crash_s3(key: str) -> None:
            c = bucket.client()
            up = c.create_multipart_upload(Bucket=bucket.name, Key=f"repo/{key}")
            c.upload_part(
                Bucket=bucket.name, Key=f"repo/{key}", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100
            )

        b = Backend("s3", storage, lambda: bucket.keys(), 100 * MIB + 7, crash_s3)
    else:
        factory: SshdFactory = request.getfixturevalue("sshd_factory")
        sshd = factory()
        url = sshd.url("repo")
        opts = RepositoryConfig(
            url=url,
            sftp=SftpOptions(key_file=str(sshd.key_file), known_hosts=str(sshd.known_hosts)),
            retry=FAST_RETRY,
        )
        storage = open_storage(url, opts)
        root = sshd.root / "repo"
        b = Backend(
            "sftp", storage, lambda: _files_under(root) if root.exists() else [], 24 * MIB + 7,
            lambda k: _tmp_file(root, k),
        )  # fmt: skip
    try:
        yield b
    finally:
        b.storage.close()


def test_put_get_stat_overwrite(backend: Backend) -> None:
    s = backend.storage
    s.put("config", b"one")
    assert s.get("config") == b"one"
    assert s.stat("config").size == 3
    s.put("config", b"second value")
    assert s.get("config") == b"second value"
    assert s.stat("config").size == 12
    s.put("deep/er/path/obj", b"")
    assert s.get("deep/er/path/obj") == b""
    assert s.stat("deep/er/path/obj").size == 0


def test_ranged_reads(backend: Backend) -> None:
    s = backend.storage
    data = bytes(range(256)) * 40
    s.put("data/ab/pack", data)
    assert s.get("data/ab/pack", 0, 10) == data[:10]
    assert s.get("data/ab/pack", 1000, 500) == data[1000:1500]
    assert s.get("data/ab/pack", 9000) == data[9000:]
    assert s.get("data/ab/pack", len(data) - 3, 100) == data[-3:]
    assert s.get("data/ab/pack", len(data) + 10, 5) == b""
    assert s.get("data/ab/pack", 5, 0) == b""


def test_not_found_and_delete_missing(backend: Backend) -> None:
    s = backend.storage
    with pytest.raises(ObjectNotFound) as e:
        s.get("nope/missing")
    assert "nope/missing" in e.value.message
    assert e.value.exit_code == 10
    with pytest.raises(ObjectNotFound):
        s.get("nope/missing", 10, 10)
    with pytest.raises(ObjectNotFound):
        s.stat("nope/missing")
    s.delete("nope/missing")
    s.put("gone", b"x")
    s.delete("gone")
    s.delete("gone")
    with pytest.raises(ObjectNotFound):
        s.get("gone")
    assert list(s.list("nope/")) == []


def test_list_more_than_1000_keys_by_prefix(backend: Backend) -> None:
    s = backend.storage
    keys = [f"index/{i % 16:02x}/{i:05d}" for i in range(1050)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s.put(k, k.encode()), keys))
    s.put("indexes-not-this", b"x")
    s.put("snapshots/one", b"x")
    listed = sorted(o.key for o in s.list("index/"))
    assert listed == sorted(keys)
    assert {o.size for o in s.list("index/")} == {len(keys[0])}
    # A prefix that is not a directory boundary still matches by string prefix.
    assert sorted(o.key for o in s.list("index")) == sorted([*keys, "indexes-not-this"])
    assert sorted(o.key for o in s.list("index/0f/")) == [k for k in keys if k.startswith("index/0f/")]
    assert len(list(s.list())) == 1052


def test_concurrent_writers_same_key_leave_one_whole_value(backend: Backend) -> None:
    s = backend.storage
    values = [bytes([i]) * (256 * 1024 + i) for i in range(8)]
    barrier = threading.Barrier(len(values))

    def write(v: bytes) -> None:
        barrier.wait()
        s.put("locks/contended", v)

    with ThreadPoolExecutor(len(values)) as pool:
        list(pool.map(write, values))
    assert s.get("locks/contended") in values
    assert [n for n in backend.raw_names() if "contended" in n] in (
        ["locks/contended"],
        ["repo/locks/contended"],
    )


def test_large_object_round_trip_and_ranges(backend: Backend, s3_server: S3Server) -> None:
    s = backend.storage
    block = os.urandom(MIB)
    data = block * (backend.big // MIB) + os.urandom(backend.big % MIB)
    s.put("data/big/pack", data)
    assert s.stat("data/big/pack").size == len(data)
    back = s.get("data/big/pack")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    del back
    # Across a 16 MiB multipart boundary, and the tail.
    assert s.get("data/big/pack", 16 * MIB - 100, 200) == data[16 * MIB - 100 : 16 * MIB + 100]
    assert s.get("data/big/pack", len(data) - 5) == data[-5:]
    if backend.name == "s3":
        # An ETag of the form "<md5>-<parts>" proves the object went up as a multipart upload.
        bucket = s.url.split("/")[2]
        head = s3_server.client().head_object(Bucket=bucket, Key="repo/data/big/pack")
        assert head["ETag"].strip('"').endswith(f"-{-(-len(data) // (16 * MIB))}")
    assert [n for n in backend.raw_names() if "big" in n] in (["data/big/pack"], ["repo/data/big/pack"])


def test_put_file_streams_from_the_start_and_refuses_a_short_source(backend: Backend, tmp_path: Path) -> None:
    s = backend.storage
    data = os.urandom(20 * MIB + 3)
    with open(tmp_path / "pack", "w+b") as body:
        body.write(data)  # left at its end: put_file reads from the start
        s.put_file("data/fi/pack", body, len(data))
        assert hashlib.sha256(s.get("data/fi/pack")).digest() == hashlib.sha256(data).digest()
        with pytest.raises(StorageError, match="data/fi/short"):
            s.put_file("data/fi/short", body, len(data) + 1)
    with pytest.raises(ObjectNotFound):
        s.stat("data/fi/short")
    assert [n for n in backend.raw_names() if "/fi/" in n] in (["data/fi/pack"], ["repo/data/fi/pack"])


def test_s3_object_options_reach_the_server(s3_server: S3Server) -> None:
    # Not parametrized: storage class, SSE and Object Lock exist only on S3.
    bucket = s3_server.create_bucket(object_lock=True)
    opts = RepositoryConfig(
        url=bucket.url("locked"),
        s3=S3Options(
            endpoint_url=s3_server.endpoint_url,
            region=s3_server.region,
            path_style=True,
            sse="AES256",
            storage_class="STANDARD_IA",
            object_lock_mode="GOVERNANCE",
            object_lock_days=7,
            access_key_id=s3_server.access_key_id,
            secret_access_key=s3_server.secret_access_key,  # type: ignore[arg-type]
            multipart_threshold_mib=5,
            multipart_chunk_mib=5,
        ),
        retry=FAST_RETRY,
    )
    s = open_storage(opts.url, opts)
    sent: list[dict[str, Any]] = []
    s.inner.client.meta.events.register(  # type: ignore[attr-defined]
        "before-call.s3.CreateMultipartUpload", lambda params, **_: sent.append(params["headers"])
    )
    s.put("snapshots/small", b"x" * 100)
    s.put("data/multipart", os.urandom(MIB) * 11)
    for key in ("locked/snapshots/small", "locked/data/multipart"):
        head = s3_server.client().head_object(Bucket=bucket.name, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["StorageClass"] == "STANDARD_IA"
    head = s3_server.client().head_object(Bucket=bucket.name, Key="locked/snapshots/small")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    days = (head["ObjectLockRetainUntilDate"] - head["LastModified"]).total_seconds() / 86400
    assert 6.9 < days < 7.1
    # moto drops Object Lock headers on CreateMultipartUpload, so check what we sent instead.
    assert len(sent) == 1
    assert sent[0]["x-amz-object-lock-mode"] == "GOVERNANCE"
    assert "x-amz-object-lock-retain-until-date" in sent[0]
    assert sent[0]["x-amz-server-side-encryption"] == "AES256"
    s.close()


def test_sweep_partial_writes_removes_only_crash_leftovers(backend: Backend) -> None:
    s = backend.storage
    s.put("data/ab/whole", b"kept")
    backend.crash_write("data/ab/halfway")
    before = backend.raw_names()
    assert len(before) == 2 or backend.name == "s3"  # S3 parts are not listed as objects
    if backend.name != "s3":  # moto reports every upload as initiated in 2010
        assert s.sweep_partial_writes(time.time() - 3600) == []  # too young: may still be in flight
    found = s.sweep_partial_writes(time.time() + 60, dry_run=True)
    assert len(found) == 1 and "halfway" in found[0]
    assert s.sweep_partial_writes(time.time() + 60) == found
    assert s.sweep_partial_writes(time.time() + 60) == []
    assert [o.key for o in s.list("data/")] == ["data/ab/whole"]
    assert s.get("data/ab/whole") == b"kept"
    assert [n for n in backend.raw_names() if "halfway" in n] == []


def test_sftp_repository_directories_are_private(sshd_factory: SshdFactory) -> None:
    """The repository root and every directory below it are created 0700 on the server."""
    sshd = sshd_factory()
    url = sshd.url("repo")
    opts = RepositoryConfig(
        url=url, sftp=SftpOptions(key_file=str(sshd.key_file), known_hosts=str(sshd.known_hosts))
    )
    storage = open_storage(url, opts)
    try:
        storage.put("data/ab/pack", b"x")
        storage.put("locks/lock-1", b"{}")
    finally:
        storage.close()
    root = sshd.root / "repo"
    modes = {
        str(p.relative_to(sshd.root)): oct(p.stat().st_mode & 0o777)
        for p in [root, *root.rglob("*")]
        if p.is_dir()
    }
    assert modes == dict.fromkeys(["repo", "repo/data", "repo/data/ab", "repo/locks"], "0o700")
