"""Scheduled jobs: the runner of a claimed occurrence, the loop, health, metrics and unit generators.

Occurrences and their leases are the catalog's (`catalog.jobs`, `catalog.leases`).
"""
