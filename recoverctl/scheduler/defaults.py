"""The runbook's default schedule, printed by `scheduler init`."""

from __future__ import annotations

DEFAULT_SCHEDULE_YAML = """\
# recoverctl default schedule (the operations runbook): daily full, hourly incremental,
# continuous WAL archiving, an hourly copy to the other repositories (3-2-1), daily verification
# and retention, weekly restore drill, daily, weekly and monthly summaries, and the catalog's
# history kept 90 days. Times are in the time zone named on each entry.
#
# WAL is archived continuously by PostgreSQL itself, not by the scheduler:
#   archive_command = 'recoverctl wal push %p'
#
# The jobs name the postgres source 'main': rename it to yours ('config check' names any job
# that refers to a source or service the config does not have).
#
# Retention, used by daily-forget-prune and by 'forget' without --keep-* options, per group of
# snapshots (kind, source, paths):
# - 48 hourly: two days of the runbook's hourly backups, so damage noticed the next day can
#   still be restored to within the hour before it (the 1 h RPO of critical data);
# - 30 daily: a month of daily fulls;
# - 13 weekly: one a week back to 90 days, the runbook's log retention, so an incident found in
#   the logs always has a backup from before it.
# Nothing older is kept (data retention policy enforcement). Snapshots pinned by a release or a
# running drill are never forgotten. Per source: retention.sources.NAME replaces the default.
retention:
  default:
    keep_hourly: 48
    keep_daily: 30
    keep_weekly: 13
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
  - name: hourly-copy         # to every repository after the first under repositories:
    cron: "35 * * * *"        # after the hourly incremental; catches the daily full the hour after
    timezone: UTC
    job: copy                 # snapshots and WAL; a no-op with a single repository
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
    job: forget --prune       # the retention: block above
    timeout: 2h
    catch_up: once
  - name: daily-catalog-prune
    cron: "50 5 * * *"
    timezone: UTC
    job: catalog prune        # events, alerts, deliveries older than catalog.retention (90d)
    timeout: 30m
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
  - name: monthly-summary
    cron: "0 8 1 * *"
    timezone: UTC
    job: summary monthly --send  # the month before, with RTO/RPO trends and targets missed
    timeout: 10m
    catch_up: once
"""
