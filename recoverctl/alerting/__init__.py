"""The alert decision engine: which policy an alert matches, whether its conditions hold, and
whether acting on it now is safe (deduplication, active jobs, releases, cooldown, cap, dry-run).

Policy, not a use case: `actions/alert_intake.py` runs it inside the intake transaction, queues
the jobs it decides on and stores the decisions.
"""
