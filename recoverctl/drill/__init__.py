"""Restore drills: restore a snapshot into a scratch cluster, run checks, score measured RTO/RPO.

`playbook` holds the YAML model, `scratch` the throwaway PostgreSQL server, `checks` what is
asserted against it, `scoring` the verdict, `report` the md/html/json renderings and `engine`
the phase-by-phase run that ties them together behind the `Restorer` protocol.
"""
