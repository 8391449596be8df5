"""S3-compatible backend (AWS, MinIO, R2, B2, Wasabi, Ceph): `s3://bucket/prefix` via boto3."""

from __future__ import annotations

import builtins
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from recoverctl.config import S3Options, read_secret_file, redact_url, secret_value
from recoverctl.errors import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
    UsageError,
    WriteRefused,
)
from recoverctl.storage.base import ObjectInfo

MIB = 1024 * 1024

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "403",
}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}
# Network-level faults: worth retrying, the next attempt opens a fresh connection.
_TRANSIENT_EXC: tuple[type[BaseException], ...] = (
    bce.EndpointConnectionError,
    bce.ConnectTimeoutError,
    bce.ReadTimeoutError,
    bce.ConnectionClosedError,
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.HTTPClientError,
    ConnectionError,
    TimeoutError,
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Given `s3://bucket/prefix`, return (bucket, prefix with a trailing '/' or ''); raise UsageError."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"invalid S3 URL '{redact_url(url)}'", hint="use s3://bucket or s3://bucket/prefix")
    if "@" in parts.netloc:
        raise UsageError(
            f"credentials in the S3 URL '{redact_url(url)}' are not supported",
            hint="use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or s3.access_key_id and "
            "s3.secret_access_key: ${VAR} in the config",
        )
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3Storage:
    """Objects under `prefix` in one bucket. boto3's own retries are off: storage/retry.py governs."""

    def __init__(self, url: str, options: S3Options | None = None):
        self.options = options or S3Options()
        self.bucket, self.prefix = parse_s3_url(url)
        self._bucket_seen = False
        self.url = redact_url(url.rstrip("/"))
        o = self.options
        self.endpoint = redact_url(o.endpoint_url) if o.endpoint_url else "AWS"
        key_id = o.access_key_id
        if o.access_key_id_file:
            key_id = read_secret_file(o.access_key_id_file, f"s3.access_key_id_file for '{self.url}'")
        secret = secret_value(
            o.secret_access_key, o.secret_access_key_file, f"s3.secret_access_key_file for '{self.url}'"
        )
        if (key_id is None) != (secret is None):
            raise UsageError(
                f"incomplete S3 credentials for '{self.url}'",
                hint="set both s3.access_key_id(_file) and s3.secret_access_key(_file), or neither (then "
                "the standard AWS chain is used: AWS_ACCESS_KEY_ID, AWS_PROFILE, instance role...)",
            )
        if o.object_lock_mode and not o.object_lock_days:
            raise UsageError(
                f"s3.object_lock_mode is set for '{self.url}' but s3.object_lock_days is not",
                hint="set s3.object_lock_days to the retention period in days",
            )
        session = boto3.session.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name=o.region,
        )
        concurrency = max(1, o.max_concurrency)
        self.client: Any = session.client(
            "s3",
            endpoint_url=o.endpoint_url,
            config=BotoConfig(
                retries={"mode": "standard", "total_max_attempts": 1},
                s3={"addressing_style": "path" if o.path_style else "auto"},
                connect_timeout=o.connect_timeout,
                read_timeout=o.read_timeout,
                max_pool_connections=concurrency + 4,
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=o.multipart_threshold_mib * MIB,
            multipart_chunksize=o.multipart_chunk_mib * MIB,
            max_concurrency=concurrency,
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _extra_args(self) -> dict[str, Any]:
        o = self.options
        extra: dict[str, Any] = {}
        if o.storage_class:
            extra["StorageClass"] = o.storage_class
        if o.sse:
            extra["ServerSideEncryption"] = o.sse
            if o.sse == "aws:kms" and o.kms_key_id:
                extra["SSEKMSKeyId"] = o.kms_key_id
        if o.object_lock_mode and o.object_lock_days:
            extra["ObjectLockMode"] = o.object_lock_mode
            extra["ObjectLockRetainUntilDate"] = dt.datetime.now(dt.UTC) + dt.timedelta(
                days=o.object_lock_days
            )
        return extra

    def _error(
        self, exc: BaseException, what: str, key: str | None = None, *, write: bool = False
    ) -> StorageError:
        """Given a boto3 failure of `what`, return the StorageError class that says what to do.

        AccessDenied on a `write` is WriteRefused: the credentials may well be allowed to read.
        """
        where = f"'{self.url}' (endpoint {self.endpoint})"
        # upload_fileobj wraps the real ClientError in S3UploadFailedError; find it.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, bce.ClientError | bce.BotoCoreError):
            cause = cause.__cause__ or cause.__context__
        exc = cause or exc
        if isinstance(exc, bce.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            detail = f"{code or status}: {err.get('Message') or 'no message'}"
            if code == "NoSuchBucket":
                return StorageUnavailable(
                    f"unable to {what} on {where}: bucket '{self.bucket}' not found",
                    hint="bucket not found — create it or check the URL "
                    "(RECOVERCTL_REPOSITORY / repository.url)",
                )
            if code in _NOT_FOUND and key is not None:
                return ObjectNotFound(f"object '{key}' not found in '{self.url}'")
            if write and code == "AccessDenied":
                return WriteRefused(f"unable to {what} on {where}: write refused ({detail})")
            if code in _BAD_CREDENTIALS:
                return StorageUnavailable(
                    f"unable to {what} on {where}: access refused ({detail})",
                    hint="check the S3 credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                    "or s3.access_key_id / s3.secret_access_key) and the bucket policy",
                )
            if code in _TRANSIENT or status >= 500 or status == 429:
                return TransientStorageError(f"unable to {what} on {where}: {detail}")
            return StorageError(f"unable to {what} on {where}: {detail}")
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return StorageUnavailable(
                f"unable to {what} on {where}: no S3 credentials found",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
                "s3.access_key_id and s3.secret_access_key: ${VAR} in the config",
            )
        if isinstance(exc, _TRANSIENT_EXC):
            return TransientStorageError(
                f"unable to {what} on {where}: {exc}",
                hint="check that the S3 endpoint is reachable (s3.endpoint_url, network, DNS)",
            )
        return StorageError(f"unable to {what} on {where}: {exc}")

    # --- the Storage protocol ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.put_file(key, io.BytesIO(data), len(data))

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        # Multipart uploads become visible only on CompleteMultipartUpload, and s3transfer aborts
        # the upload on failure: a reader never sees a partial object under `key`. A seekable
        # body is read part by part as each part goes, not whole.
        if (held := body.seek(0, io.SEEK_END)) != size:
            raise StorageError(
                f"unable to put '{key}' on '{self.url}': the source holds {held} of {size} bytes"
            )
        try:
            body.seek(0)
            self.client.upload_fileobj(
                _LentBody(body),
                self.bucket,
                self._key(key),
                ExtraArgs=self._extra_args(),
                Config=self.transfer,
            )
        except Exception as e:
            raise self._error(e, f"put '{key}'", key, write=True) from e

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            self.stat(key)
            return b""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self.client.get_object(**args)
            return bytes(resp["Body"].read())
        except bce.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidRange":
                # Reading past the end returns nothing, as a file read would.
                return b""
            raise self._error(e, f"get '{key}'", key) from e
        except Exception as e:
            raise self._error(e, f"get '{key}'", key) from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        cut = len(self.prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]), obj["LastModified"].timestamp())
        except Exception as e:
            raise self._error(e, f"list '{prefix or '/'}'") from e

    def stat(self, key: str) -> ObjectInfo:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            err = self._error(e, f"stat '{key}'", key)
            if isinstance(err, ObjectNotFound) and not self._bucket_seen:
                # HEAD answers a bare 404 for a missing bucket too; without this check opening a
                # repository in a missing bucket would say "no repository, run init".
                self._check_bucket(f"stat '{key}'")
            raise err from e
        return ObjectInfo(key, int(resp["ContentLength"]), resp["LastModified"].timestamp())

    def _check_bucket(self, what: str) -> None:
        """Raise StorageUnavailable when the bucket does not exist; remember when it does."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except bce.ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status == 404 or e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                e.response.setdefault("Error", {})["Code"] = "NoSuchBucket"
            raise self._error(e, what) from e
        self._bucket_seen = True

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too, so deleting twice is fine.
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            raise self._error(e, f"delete '{key}'", write=True) from e

    def sweep_partial_writes(self, before: float, *, dry_run: bool = False) -> builtins.list[str]:
        # A crashed multipart upload stays invisible but billed until aborted.
        cut = len(self.prefix)
        swept: builtins.list[str] = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
                for up in page.get("Uploads", []):
                    if up["Initiated"].timestamp() >= before:
                        continue
                    if not dry_run:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                        )
                    swept.append(up["Key"][cut:])
        except Exception as e:
            # Listing uploads serves only their abort: AccessDenied here means the credentials
            # may not write (a read-only policy lacks s3:ListBucketMultipartUploads).
            raise self._error(e, "sweep unfinished multipart uploads", write=True) from e
        return sorted(swept)

    def close(self) -> None:
        self.client.close()


class _LentBody:
    """`body` as handed to s3transfer, which closes the file object it uploaded from: the caller
    still owns it, and a retry reads it again."""

    def __init__(self, body: BinaryIO) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._body.seek(offset, whence)

    def tell(self) -> int:
        return self._body.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        pass
