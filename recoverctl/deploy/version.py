"""The one rule for release versions: they become image tags and directory names on hosts.

A version is 1-128 characters of letters, digits, '.', '_' and '-', starting with a letter or
digit: no '/', no '..', no leading '-', no NUL, so `releases/<version>` can never leave the
releases directory nor read as an option (128 is Docker's limit for a tag). Every way a version
enters (deploy, release record, rollback --to, a release row read back from the catalog) and
every target method that builds a name from one checks it here.
"""

from __future__ import annotations

import re

from recoverctl.errors import UsageError, VerificationError

VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_LENGTH = 128
RULE = "a version is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def version_problem(version: object) -> str | None:
    """Return why `version` is not a valid release version, or None when it is."""
    if not isinstance(version, str) or not version:
        return "it is empty"
    if len(version) > MAX_LENGTH:
        return f"it is {len(version)} characters long (at most {MAX_LENGTH})"
    if not VERSION_RE.fullmatch(version[0]):
        return f"it starts with {version[0]!r}, not a letter or digit"
    bad = next((c for c in version if not VERSION_RE.fullmatch("a" + c)), None)
    if bad is not None:
        return f"it contains {bad!r}; only letters, digits, '.', '_' and '-' are allowed"
    return None


def check_version(version: str) -> str:
    """Return `version` when it is valid; raise UsageError (exit 2) saying why not."""
    problem = version_problem(version)
    if problem is not None:
        raise UsageError(f"invalid release version {version!r}: {problem}", hint=RULE)
    return version


def check_stored_version(version: str, where: str) -> str:
    """Return a version read back from the catalog when it is valid; raise VerificationError.

    A stored version that breaks the rule was never written by recoverctl: the catalog row was
    altered, and nothing may run on a host with it.
    """
    problem = version_problem(version)
    if problem is not None:
        raise VerificationError(
            f"{where} in the catalog has an invalid version {version!r}: {problem}",
            hint=f"the catalog row was altered outside recoverctl; fix or remove it ({RULE})",
        )
    return version
