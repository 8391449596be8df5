"""The `repository:` section: where the backups go and how the storage is reached."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from recoverctl.config.base import Duration, Model


class S3Options(Model):
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: int | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    # The same keys read from files when the repository is opened (first line, stripped), so
    # the config file itself need not hold them.
    access_key_id_file: str | None = None
    secret_access_key_file: str | None = None
    multipart_threshold_mib: int = 64
    multipart_chunk_mib: int = 16
    max_concurrency: int = 8
    connect_timeout: Duration = 10.0
    read_timeout: Duration = 60.0

    @model_validator(mode="after")
    def _one_place_per_key(self) -> S3Options:
        for key in ("access_key_id", "secret_access_key"):
            if getattr(self, key) is not None and getattr(self, f"{key}_file"):
                raise ValueError(f"set {key} or {key}_file, not both")
        return self


class SftpOptions(Model):
    key_file: str | None = None
    known_hosts: str | None = None
    insecure_accept_new_host_keys: bool = False
    timeout: Duration = 15.0
    connections: int = 4


class RetryOptions(Model):
    attempts: int = 6
    max_seconds: Duration = 120.0
    initial: Duration = 0.2
    maximum: Duration = 10.0


class RepositoryConfig(Model):
    url: str
    password_file: str | None = None
    # The name of an environment variable holding the passphrase: each repository under
    # `repositories:` has its own key, so one RECOVERCTL_PASSWORD cannot serve them all.
    password_env: str | None = None
    compression_level: int = 3
    pack_size_mib: int = 16
    parallelism: int = 4
    s3: S3Options = Field(default_factory=S3Options)
    sftp: SftpOptions = Field(default_factory=SftpOptions)
    retry: RetryOptions = Field(default_factory=RetryOptions)


def _repository_from_str(value: object) -> object:
    return {"url": value} if isinstance(value, str) else value
