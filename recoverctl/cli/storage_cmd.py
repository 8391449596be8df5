"""`recoverctl storage check URL`."""

from __future__ import annotations

import click

from recoverctl.actions.storage_check import StorageProbe, check_storage
from recoverctl.cli.context import App, pass_app
from recoverctl.cli.options import SuggestingGroup, json_option
from recoverctl.config import RepositoryConfig


@click.group("storage", cls=SuggestingGroup)
def storage_group() -> None:
    """Storage backends (local path, s3://, sftp://)."""


@storage_group.command("check")
@click.argument("url", required=False)
@json_option
@click.option("--size", default=1024 * 1024, show_default=True, help="Probe object size in bytes.")
@pass_app
def check(app: App, url: str | None, size: int) -> None:
    """Write, read, list and delete a probe object on URL (default: the configured repository).

    URL is a path, file:///path, s3://bucket/prefix or sftp://user@host:port/path; backend options
    (endpoint, credentials, known_hosts...) come from the repository section of the config.
    Credentials never come from flags: use AWS_* variables, ${VAR} in the config, key files.

    \b
    Example:
      recoverctl storage check s3://backups/prod
      recoverctl --json storage check sftp://backup@vault:22/srv/recoverctl
      recoverctl storage check            # the configured repository
    """
    repo = app.config.repository
    if url is None:
        options = app.config.require_repository()
        url = options.url
    else:
        options = repo.model_copy(update={"url": url}) if repo else RepositoryConfig(url=url)
    result = check_storage(url, options, size)

    def text(r: StorageProbe) -> str:
        lat = ", ".join(f"{k} {v:.1f} ms" for k, v in r.latency_ms.items())
        return f"{r.url}: ok ({lat})"

    app.render(result, text)


COMMANDS = [storage_group]
