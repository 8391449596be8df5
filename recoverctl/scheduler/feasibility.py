"""Whether a scheduled job can ever succeed with this config, checked by `config check`.

A schedule that fails on every run (an unknown command, a source or service the config does not
have, `forget` with no keep rule anywhere, `drill run` with no valid playbook) must fail
`config check` rather than page someone every night. Parsing a job line needs the command tree,
which lives in the CLI: the caller passes `parse`, which returns the command path and its parsed
parameters or raises ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recoverctl.config import Config, Schedule
from recoverctl.errors import RecoverctlError

ParseJob = Callable[[str], tuple[tuple[str, ...], Mapping[str, Any]]]

# Parameters naming something the config must define, and the commands where they are only a
# label or a filter (nothing fails when nothing matches).
_NAMED = {"source": "sources", "service": "services"}
_LABEL_ONLY = {("backup", "files"): {"source"}, ("alerts",): {"service"}}
_KEEP_OPTIONS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def job_problems(cfg: Config, command: tuple[str, ...], params: Mapping[str, Any]) -> list[str]:
    """Return why this parsed job can never succeed with `cfg` (empty when it can)."""
    problems: list[str] = []
    # `backup files` with no PATHS backs up the source's configured paths: then it must exist.
    exempt = (
        set()
        if command == ("backup", "files") and not params.get("paths")
        else _LABEL_ONLY.get(command, set())
    )
    for param, section in _NAMED.items():
        value = params.get(param)
        known = getattr(cfg, section)
        if value and param not in exempt and value not in known:
            problems.append(
                f"it names {param} '{value}', which is not in {section}: "
                f"(configured: {', '.join(known) or 'none'})"
            )
    if command == ("drill", "run"):
        # The playbooks it would run (named, or found beside the config) must exist and be valid.
        from recoverctl.drill.playbook import discover_playbooks

        try:
            discover_playbooks(cfg, list(params.get("playbooks") or ()))
        except RecoverctlError as e:
            problems.append(e.message)
    keeps = any(params.get(k) for k in (*_KEEP_OPTIONS, "keep_within"))
    if command == ("forget",) and not keeps and cfg.retention is None:
        problems.append(
            "'forget' without --keep-* options needs a 'retention:' block in the config "
            "(see 'recoverctl scheduler init'); as it is, every run is refused"
        )
    return problems


def schedule_problems(cfg: Config, parse: ParseJob) -> list[str]:
    """Return one line per enabled schedule that can never succeed, naming it and why."""
    lines: list[str] = []
    for schedule in cfg.schedules:
        if schedule.enabled:
            lines += [
                f"schedule '{schedule.name}' (job '{schedule.job}'): {p}"
                for p in _problems(cfg, schedule, parse)
            ]
    return lines


def _problems(cfg: Config, schedule: Schedule, parse: ParseJob) -> list[str]:
    try:
        command, params = parse(schedule.job)
    except ValueError as e:
        return [f"not a valid recoverctl command line: {e}"]
    return job_problems(cfg, command, params)
