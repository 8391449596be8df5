"""Backend pieces without servers: URL parsing, S3 error classification, faults, the retry layer."""

from __future__ import annotations

import functools
from typing import Any

import botocore.exceptions as bce
import pytest
from boto3.exceptions import S3UploadFailedError

from recoverctl.config import RepositoryConfig, RetryOptions, S3Options
from recoverctl.errors import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
    UsageError,
)
from recoverctl.storage import open_backend, open_storage
from recoverctl.storage.local import LocalStorage
from recoverctl.storage.retry import RetryingStorage
from recoverctl.storage.s3 import S3Storage, parse_s3_url
from recoverctl.storage.sftp import parse_sftp_url
from tests.faults.storage import FaultyStorage, parse_faults


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(UsageError):
        parse_s3_url("s3:///nobucket")
    with pytest.raises(UsageError) as e:
        parse_s3_url("s3://AKIA:supersecret@bucket/p")
    assert "supersecret" not in e.value.message and "AKIA:***@bucket" in e.value.message


def test_parse_sftp_url() -> None:
    assert parse_sftp_url("sftp://bak@host.example:2222/srv/backups/") == (
        "bak",
        "host.example",
        2222,
        "/srv/backups",
    )
    assert parse_sftp_url("sftp://host/") == (None, "host", 22, "/")
    with pytest.raises(UsageError) as e:
        parse_sftp_url("sftp://u:topsecret@host/x")
    assert "topsecret" not in e.value.message and "u:***@host" in e.value.message
    with pytest.raises(UsageError):
        parse_sftp_url("sftp://host:notaport/x")


def test_unsupported_scheme_is_usage_error() -> None:
    with pytest.raises(UsageError) as e:
        open_backend("ftp://host/x")
    assert e.value.exit_code == 2


@functools.cache
def _s3() -> S3Storage:
    # Creating a boto3 client costs about a second on a busy machine: share one.
    return S3Storage(
        "s3://bkt/prod",
        S3Options(endpoint_url="http://127.0.0.1:1", access_key_id="k", secret_access_key="s"),  # type: ignore[arg-type]
    )


def _client_error(code: str, status: int, op: str = "PutObject") -> bce.ClientError:
    return bce.ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        op,
    )


@pytest.mark.parametrize(
    ("exc", "key", "cls"),
    [
        (_client_error("NoSuchKey", 404, "GetObject"), "k", ObjectNotFound),
        (_client_error("404", 404, "HeadObject"), "k", ObjectNotFound),
        (_client_error("NoSuchBucket", 404), "k", StorageUnavailable),
        (_client_error("InvalidAccessKeyId", 403), "k", StorageUnavailable),
        (_client_error("SignatureDoesNotMatch", 403), "k", StorageUnavailable),
        (_client_error("AccessDenied", 403), None, StorageUnavailable),
        (_client_error("SlowDown", 503), "k", TransientStorageError),
        (_client_error("InternalError", 500), "k", TransientStorageError),
        (_client_error("Whatever", 502), "k", TransientStorageError),
        (_client_error("InvalidArgument", 400), "k", StorageError),
        (bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "k", TransientStorageError),
        (bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), "k", TransientStorageError),
        (bce.NoCredentialsError(), "k", StorageUnavailable),
    ],
)
def test_s3_error_classification(exc: BaseException, key: str | None, cls: type[StorageError]) -> None:
    err = _s3()._error(exc, "put 'k'", key)
    assert type(err) is cls
    if cls is not ObjectNotFound:
        assert "'s3://bkt/prod' (endpoint http://127.0.0.1:1)" in err.message


def test_s3_upload_failure_is_unwrapped_to_its_client_error() -> None:
    try:
        try:
            raise _client_error("NoSuchBucket", 404)
        except bce.ClientError as inner:
            raise S3UploadFailedError("Failed to upload") from inner
    except S3UploadFailedError as wrapped:
        err = _s3()._error(wrapped, "put 'k'", "k")
    assert isinstance(err, StorageUnavailable) and "bucket 'bkt' not found" in err.message


def test_s3_options_validated() -> None:
    with pytest.raises(UsageError):
        S3Storage("s3://b", S3Options(access_key_id="only-the-id"))
    with pytest.raises(UsageError):
        S3Storage("s3://b", S3Options(object_lock_mode="COMPLIANCE"))
    s = S3Storage(
        "s3://b/p",
        S3Options(
            sse="aws:kms",
            kms_key_id="key-1",
            storage_class="STANDARD_IA",
            object_lock_mode="GOVERNANCE",
            object_lock_days=30,
        ),
    )
    extra = s._extra_args()
    assert extra["ServerSideEncryption"] == "aws:kms" and extra["SSEKMSKeyId"] == "key-1"
    assert extra["StorageClass"] == "STANDARD_IA" and extra["ObjectLockMode"] == "GOVERNANCE"


def test_parse_faults() -> None:
    faults = parse_faults("put:transient:2, get:error:*@data/")
    assert [(f.op, f.kind, f.remaining, f.key_prefix) for f in faults] == [
        ("put", "transient", 2, ""),
        ("get", "error", None, "data/"),
    ]
    for bad in ("put:sometimes:1", "rename:error:1", "put:error", "put:error:x"):
        with pytest.raises(UsageError):
            parse_faults(bad)


def _retrying(tmp_path: Any, spec: str, attempts: int = 4) -> tuple[RetryingStorage, FaultyStorage]:
    faulty = FaultyStorage(LocalStorage(tmp_path), parse_faults(spec))
    return RetryingStorage(faulty, RetryOptions(attempts=attempts, initial=0.001, maximum=0.002)), faulty


def test_retry_recovers_from_transient_faults(tmp_path: Any) -> None:
    s, faulty = _retrying(tmp_path, "put:transient:3")
    s.put("a", b"1")
    assert faulty.injected == 3 and s.get("a") == b"1"


def test_retry_is_bounded_and_keeps_the_last_cause(tmp_path: Any) -> None:
    s, faulty = _retrying(tmp_path, "put:transient:*", attempts=3)
    with pytest.raises(StorageError) as e:
        s.put("a", b"1")
    assert faulty.injected == 3
    assert not isinstance(e.value, TransientStorageError)
    assert "failed after retries" in e.value.message and "injected transient fault" in e.value.message


def test_retry_does_not_retry_permanent_errors(tmp_path: Any) -> None:
    s, faulty = _retrying(tmp_path, "get:notfound:*@missing")
    with pytest.raises(ObjectNotFound):
        s.get("missing")
    assert faulty.injected == 1
    s.put("present", b"x")
    assert s.get("present") == b"x"


def test_open_storage_wraps_faults_from_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOVERCTL_FAULTS", "stat:notfound:1")
    s = open_storage(str(tmp_path), RepositoryConfig(url=str(tmp_path)))
    s.put("x", b"1")
    with pytest.raises(ObjectNotFound):
        s.stat("x")
    assert s.stat("x").size == 1
