"""Parsing the repository's JSON documents (trees, index files, snapshots).

orjson parses a tree of 100 nodes ~4x faster than the json module, and an unchanged re-backup
parses one tree per directory. orjson refuses lone surrogates, which json writes for file names
that are not valid UTF-8 (kept as surrogate escapes); those documents go through json.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def parse_document(data: bytes | str) -> Any:
    """Given the bytes of a JSON document, return its value; raise ValueError if it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
