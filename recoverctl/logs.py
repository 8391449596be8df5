"""Logging setup: human or JSON lines on stderr, with secret values redacted from every record."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

from recoverctl.config import redact

# Secret values known to this process (the config's, once loaded): every record is redacted
# against them and against URL passwords (`recoverctl.config.redact`).
_SECRETS: set[str] = set()


def add_secrets(values: Iterable[str]) -> None:
    """Redact `values` from every later log record of this process."""
    _SECRETS.update(v for v in values if v)


class RedactingFilter(logging.Filter):
    """Replace known secret values and URL passwords in the formatted message (and the
    structured fields) with '***'."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        add_secrets(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), _SECRETS), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = redact(fields, _SECRETS)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info), _SECRETS)
        return json.dumps(out, default=str)


def setup_logging(verbosity: int, as_json: bool, secrets: Iterable[str] = ()) -> None:
    """Configure the 'recoverctl' logger: -q → errors, default → warnings, -v → info, -vv → debug."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, verbosity), logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger("recoverctl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
