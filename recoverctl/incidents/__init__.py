"""Incident mechanics: the escalation policy and loop, acknowledgement links, report rendering.

The incidents themselves are catalog rows (`recoverctl/catalog/incidents.py`); the use cases the
CLI and `serve` call are `recoverctl/actions/incidents.py`.
"""
