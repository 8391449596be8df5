"""The object every command receives: global flags, lazily loaded config and catalog, rendering."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from recoverctl.config import Config, iter_secret_values, load_config

if TYPE_CHECKING:
    # SQLAlchemy costs ~0.5 s to import; commands that never touch the catalog skip it.
    from recoverctl.catalog import Catalog
    from recoverctl.progress import Progress
    from recoverctl.recorder import ForkedRecorder


@dataclass
class App:
    config_path: str | None = None
    json: bool = False
    log_json: bool = False
    verbosity: int = 0
    _config: Config | None = field(default=None, repr=False)
    _catalog: Catalog | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from recoverctl.logs import add_secrets

            self._config = load_config(self.config_path)
            add_secrets(iter_secret_values(self._config))
        return self._config

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from recoverctl.catalog import Catalog

            self._catalog = Catalog.from_config(self.config)
        return self._catalog

    def run_recorder(self) -> ForkedRecorder:
        """Return a recorder whose catalog opens in a child process while the command works.

        For commands that only record their run (backups): they start without the catalog's import.
        """
        from recoverctl.recorder import ForkedRecorder

        cfg = self.config

        def open_catalog() -> Catalog:
            from recoverctl.catalog import Catalog  # in the child: this import is what runs in parallel

            return Catalog.from_config(cfg)

        return ForkedRecorder(open_catalog)

    @property
    def show_progress(self) -> bool:
        return not self.json and sys.stderr.isatty() and self.verbosity >= 0

    def progress(self, label: str, *, status_lines: bool = False) -> Progress:
        """Given what the work is called, return its progress display (recoverctl.progress):
        with --json, status lines on stdout when `status_lines`, else nothing; nothing with -q;
        else on stderr a bar on a terminal or plain lines, timestamped under -v."""
        from recoverctl.progress import progress_for

        return progress_for(
            label=label,
            json_lines=status_lines,
            as_json=self.json,
            quiet=self.verbosity < 0,
            timestamps=self.verbosity > 0,
        )

    def render(self, data: Any, text: Callable[[Any], str] | str | None = None) -> None:
        """Print `data` as JSON with --json, else the text form (a string or a function of data).

        `data` may be a typed result (a dataclass or pydantic model): its JSON is `jsonable(data)`.
        """
        if self.json:
            click.echo(json.dumps(jsonable(data), indent=2, default=str))
        elif callable(text):
            out = text(data)
            if out:
                click.echo(out)
        elif text is not None:
            click.echo(text)
        else:
            click.echo(json.dumps(jsonable(data), indent=2, default=str))

    def close(self) -> None:
        if self._catalog is not None:
            self._deliver_events()
            self._catalog.close()

    def _deliver_events(self) -> None:
        # Whatever a command recorded (backup failed, rollback done, ...) is sent before it exits,
        # even when it failed: this one place wires every capability's events to the routes.
        if self._config is None or self._catalog is None or not self._config.notifications.channels:
            return
        from recoverctl.notify.delivery import deliver_pending

        try:
            deliver_pending(self._config, self._catalog)
        except Exception as e:
            logging.getLogger(__name__).warning("could not deliver pending notifications: %s", e)


pass_app = click.make_pass_decorator(App)


def jsonable(data: Any) -> Any:
    """Given an action's result (a dataclass, a pydantic model, or plain JSON data), return plain
    JSON data: the one place typed results become the `--json` contract."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        to_json = getattr(data, "to_json", None)
        return to_json() if callable(to_json) else dataclasses.asdict(data)
    model_dump = getattr(data, "model_dump", None)
    if callable(model_dump):
        return model_dump(mode="json")
    if isinstance(data, list):
        return [jsonable(d) for d in data]
    return data
