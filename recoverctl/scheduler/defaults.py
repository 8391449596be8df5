"""The runbook's default schedule, printed by `scheduler init`."""

from __future__ import annotations

DEFAULT_SCHEDULE_YAML = """\
# recoverctl default schedule (the operations runbook): daily full, hourly incremental,
# continuous WAL archiving, daily verification and retention, weekly restore drill,
# daily and weekly summaries. Times are in the time zone named on each entry.
#
# WAL is archived continuously by PostgreSQL itself, not by the scheduler:
#   archive_command = 'recoverctl wal push %p'
schedules:
  - name: daily-full
    cron: "15 2 * * *"
    timezone: UTC
    job: backup postgres --source main --type full
    timeout: 4h
    jitter: 5m
    catch_up: once
  - name: hourly-incremental
    cron: "5 * * * *"
    timezone: UTC
    job: backup postgres --source main --type incremental
    timeout: 50m
    catch_up: skip
  - name: daily-verify
    cron: "45 4 * * *"
    timezone: UTC
    job: verify --read-data-subset 5%
    timeout: 2h
    catch_up: once
  - name: daily-forget-prune
    cron: "30 5 * * *"
    timezone: UTC
    job: forget --prune
    timeout: 2h
    catch_up: once
  - name: weekly-drill
    cron: "0 6 * * 0"
    timezone: UTC
    job: drill run            # every drill playbook in playbooks/ beside the config file
    timeout: 3h
    catch_up: once
  - name: daily-summary
    cron: "0 8 * * *"
    timezone: UTC
    job: summary daily --send
    timeout: 10m
    catch_up: once
  - name: weekly-summary
    cron: "0 8 * * 1"
    timezone: UTC
    job: summary weekly --send
    timeout: 10m
    catch_up: once
"""
