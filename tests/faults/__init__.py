"""Test-only fault hooks, behind one seam that recoverctl's own modules never import.

`seam.install()` wraps recoverctl functions in place (module attributes looked up when called):

- `RECOVERCTL_FAULTS=op:kind:count[@prefix],...` — every storage backend recoverctl opens fails
  matching calls as told, between the backend and the retry layer (`storage.py`).
- `RECOVERCTL_FAULT_CRASH_AFTER_STEP=STEP` — a rollback SIGKILLs its own process right after the
  catalog recorded STEP (`lock`: right after the rollback and its steps were created), for the
  crash-and-resume tests.

The `recoverctl` subprocesses the tests start get the seam from `site/sitecustomize.py` (the `cli`
fixture puts `site/` on PYTHONPATH), which installs it only when one of the variables is set;
the pytest process itself installs the storage faults for the in-process CLI (tests/conftest.py).
"""
