"""Scheduled jobs: cron occurrences, catalog leases, the job runner, the loop and unit generators."""
