"""`recoverctl storage check` on every backend, and bad input: each a clear error, nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import Cli
from tests.fixtures.net import free_port
from tests.fixtures.s3 import S3Bucket, S3Server
from tests.fixtures.sshd import SshdFactory, SshServer

FAST_RETRY = {"attempts": 2, "initial": 0.05, "maximum": 0.1, "max_seconds": 10}


def _sftp_repo(sshd: SshServer, **sftp: Any) -> dict[str, Any]:
    return {
        "url": sshd.url("repo"),
        "sftp": {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts), **sftp},
        "retry": FAST_RETRY,
    }


def _error_text(r: Any) -> str:
    err = r.error_json()
    return f"{err['message']} | {err['hint']}"


# --- storage check works on each backend ----------------------------------------------------------


def test_storage_check_local(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    out = cli("--json", "storage", "check", str(repo), "--size", "4096", check=0).json()
    assert out["ok"] is True and out["bytes"] == 4096
    assert out["url"] == f"file://{repo}"
    assert set(out["latency_ms"]) == {"put", "stat", "get", "list", "delete"}
    assert [p for p in repo.rglob("*") if p.is_file()] == []
    text = cli("storage", "check", str(repo), check=0).stdout
    assert text.startswith(f"file://{repo}: ok (put ")


def test_storage_check_s3_from_config(cli: Cli, s3_bucket: S3Bucket) -> None:
    s3_bucket.server.configure(cli)
    cli.write_config({"repository": s3_bucket.repository("prod")})
    out = cli("--json", "storage", "check", check=0).json()
    assert out["url"] == f"s3://{s3_bucket.name}/prod"
    assert out["ok"] is True
    assert s3_bucket.keys() == []


def test_storage_check_sftp_from_config(cli: Cli, sshd: SshServer) -> None:
    cli.write_config({"repository": _sftp_repo(sshd)})
    out = cli("--json", "storage", "check", check=0).json()
    assert out["url"] == sshd.url("repo")
    assert [p.name for p in (sshd.root / "repo").rglob("*") if p.is_file()] == []


# --- S3 bad input ---------------------------------------------------------------------------------


def test_s3_unreachable_endpoint(cli: Cli, s3_server: S3Server) -> None:
    s3_server.configure(cli)
    port = free_port()
    cli.write_config(
        {
            "repository": {
                "url": "s3://backups/prod",
                "s3": {"endpoint_url": f"http://127.0.0.1:{port}", "path_style": True},
                "retry": FAST_RETRY,
            }
        }
    )
    r = cli("--json", "storage", "check", check=1)
    text = _error_text(r)
    assert "s3://backups/prod" in text
    assert f"127.0.0.1:{port}" in text
    assert "failed after retries" in text
    assert "reachable" in text


def test_s3_missing_bucket(cli: Cli, s3_server: S3Server) -> None:
    s3_server.configure(cli)
    cli.write_config(
        {
            "repository": {
                "url": "s3://no-such-bucket-here/prod",
                "s3": {"endpoint_url": s3_server.endpoint_url, "path_style": True},
            }
        }
    )
    r = cli("--json", "storage", "check", check=1)
    err = r.error_json()
    assert "s3://no-such-bucket-here/prod" in err["message"]
    assert "bucket 'no-such-bucket-here' not found" in err["message"]
    assert "create it or check the URL" in err["hint"]
    # Not retried: a missing bucket does not come back by waiting.
    assert "failed after retries" not in err["message"]


def test_s3_wrong_credentials_are_named_and_not_printed(cli: Cli, s3_auth_server: S3Server) -> None:
    bucket = s3_auth_server.create_bucket()
    wrong_secret = "wrong-secret-value-9f8e7d"
    cli.env.update(s3_auth_server.env())
    cli.env["MY_S3_SECRET"] = wrong_secret
    repo = bucket.repository(
        "prod", access_key_id=s3_auth_server.access_key_id, secret_access_key="${MY_S3_SECRET}"
    )
    cli.write_config({"repository": repo})
    r = cli("--json", "storage", "check", check=1)
    err = r.error_json()
    assert f"s3://{bucket.name}/prod" in err["message"]
    assert "access refused" in err["message"] and "SignatureDoesNotMatch" in err["message"]
    assert "credentials" in err["hint"]
    assert wrong_secret not in r.stdout + r.stderr
    assert bucket.keys() == []
    # The same setup with the right secret works: the failure above was the credentials.
    cli.env["MY_S3_SECRET"] = s3_auth_server.secret_access_key
    cli("storage", "check", check=0)


def test_s3_unknown_access_key_from_environment(cli: Cli, s3_auth_server: S3Server) -> None:
    bucket = s3_auth_server.create_bucket()
    cli.env.update(s3_auth_server.env(), AWS_ACCESS_KEY_ID="AKIANOTAREALKEY00000")
    cli.write_config({"repository": bucket.repository("p")})
    err = cli("--json", "storage", "check", check=1).error_json()
    assert "InvalidAccessKeyId" in err["message"]
    assert "AWS_ACCESS_KEY_ID" in err["hint"]
    assert bucket.keys() == []


def test_s3_keys_from_files(cli: Cli, s3_auth_server: S3Server, tmp_path: Path) -> None:
    """Both keys read from files (whitespace around them stripped) reach an authenticating S3
    server with no AWS_* variable set; inline and file for one key, or an unreadable file, are
    config errors (exit 2) naming the key and the file."""
    bucket = s3_auth_server.create_bucket()
    cli.env = {k: v for k, v in cli.env.items() if not k.startswith("AWS_")}
    cli.env["AWS_EC2_METADATA_DISABLED"] = "true"  # no credential chain to fall back on
    key_file, secret_file = tmp_path / "s3-key-id", tmp_path / "s3-secret"
    key_file.write_text(f"  {s3_auth_server.access_key_id}\n")
    secret_file.write_text(f"{s3_auth_server.secret_access_key} \n")
    secret_file.chmod(0o600)
    files = {"access_key_id_file": str(key_file), "secret_access_key_file": str(secret_file)}
    cli.write_config({"repository": bucket.repository("p", **files)})
    r = cli("--json", "storage", "check", check=0)
    assert s3_auth_server.secret_access_key not in r.stdout + r.stderr

    both = {**files, "secret_access_key": s3_auth_server.secret_access_key}
    cli.write_config({"repository": bucket.repository("p", **both)})
    err = cli("--json", "storage", "check", check=2).error_json()
    assert "secret_access_key or secret_access_key_file, not both" in err["message"]

    missing = {**files, "access_key_id_file": str(tmp_path / "no-such-file")}
    cli.write_config({"repository": bucket.repository("p", **missing)})
    err = cli("--json", "storage", "check", check=2).error_json()
    assert "s3.access_key_id_file" in err["message"] and str(tmp_path / "no-such-file") in err["message"]
    assert "No such file or directory" in err["message"]


# --- SFTP bad input -------------------------------------------------------------------------------


def test_sftp_unknown_host_key_refused(cli: Cli, sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cli.write_config({"repository": _sftp_repo(sshd, known_hosts=str(empty))})
    err = cli("--json", "storage", "check", check=1).error_json()
    assert sshd.url("repo") in err["message"]
    assert f"host key of 127.0.0.1:{sshd.port} is unknown" in err["message"]
    assert "ssh-keyscan" in err["hint"]
    assert not (sshd.root / "repo").exists()


def test_sftp_changed_host_key_refused_even_with_accept_new(
    cli: Cli, sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    a, b = sshd_factory(), sshd_factory()
    # b's host key recorded under a's address: what a reinstalled or impostor server looks like.
    forged = tmp_path / "known_hosts"
    forged.write_text(b.host_key_line.replace(f"]:{b.port} ", f"]:{a.port} ") + "\n")
    cli.write_config(
        {"repository": _sftp_repo(a, known_hosts=str(forged), insecure_accept_new_host_keys=True)}
    )
    err = cli("--json", "storage", "check", check=1).error_json()
    assert "does not match known_hosts" in err["message"]
    assert not (a.root / "repo").exists()


def test_sftp_accept_new_host_keys_for_labs(cli: Cli, sshd: SshServer, tmp_path: Path) -> None:
    cli.write_config(
        {
            "repository": _sftp_repo(
                sshd, known_hosts=str(tmp_path / "missing_known_hosts"), insecure_accept_new_host_keys=True
            )
        }
    )
    cli("storage", "check", check=0)


def test_sftp_refused_auth(cli: Cli, sshd: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    cli.write_config({"repository": _sftp_repo(sshd, key_file=str(other))})
    err = cli("--json", "storage", "check", check=1).error_json()
    assert sshd.url("repo") in err["message"]
    assert "SSH authentication refused for user 'root'" in err["message"]
    assert "authorized_keys" in err["hint"]
    assert not (sshd.root / "repo").exists()


def test_sftp_unreachable(cli: Cli, sshd: SshServer) -> None:
    repo = _sftp_repo(sshd)
    sshd.stop()
    cli.write_config({"repository": repo})
    err = cli("--json", "storage", "check", check=1).error_json()
    assert sshd.url("repo") in err["message"]
    assert "failed after retries" in err["message"]
    assert f"127.0.0.1:{sshd.port}" in err["hint"]


def test_sftp_password_in_url_rejected_and_redacted(cli: Cli, sshd: SshServer) -> None:
    url = f"sftp://root:hunter2secret@127.0.0.1:{sshd.port}{sshd.root}/repo"
    r = cli("--json", "storage", "check", url, check=2)
    err = r.error_json()
    assert "hunter2secret" not in r.stdout + r.stderr
    assert f"sftp://root:***@127.0.0.1:{sshd.port}" in err["message"]
    assert "key_file" in err["hint"]


def test_s3_missing_bucket_is_not_reported_as_missing_repository(cli: Cli, s3_server: S3Server) -> None:
    s3_server.configure(cli)
    cli.write_config(
        {
            "repository": {
                "url": "s3://no-such-bucket-either/prod",
                "s3": {"endpoint_url": s3_server.endpoint_url, "path_style": True},
            }
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    r = cli("--json", "snapshots", check=1)
    err = r.error_json()
    assert "bucket 'no-such-bucket-either' not found" in err["message"]
    assert "create it or check the URL" in err["hint"]
