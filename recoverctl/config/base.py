"""Shared ground of every config section: the environment variables that are a contract, the
duration type, and the Model base class (unknown keys are errors)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
)

ENV_CONFIG = "RECOVERCTL_CONFIG"
ENV_REPOSITORY = "RECOVERCTL_REPOSITORY"
# Selects one of `repositories:` by name for the whole process (restore_command of a restore from
# a copy): RECOVERCTL_PASSWORD(_FILE) then hold that repository's passphrase.
ENV_REPOSITORY_NAME = "RECOVERCTL_REPOSITORY_NAME"
ENV_PASSWORD = "RECOVERCTL_PASSWORD"
ENV_PASSWORD_FILE = "RECOVERCTL_PASSWORD_FILE"
ENV_CATALOG = "RECOVERCTL_CATALOG"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> float:
    """Given '0.2s', '10m', '2h', '7d' or a number of seconds, return seconds; raise ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 2h, 7d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Model(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
