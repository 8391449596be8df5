"""Key slots: the master key wrapped by each passphrase, one `keys/<id>` object per slot.

A slot's id is the hash of its content (format 2), so a copied or planted key file is refused;
the config's `mac` ties the slots to their repository. See docs/repository-format.md, "Keys".
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.errors import NotFoundError, ObjectNotFound, StorageError, VerificationError, WrongKeyError
from recoverctl.repo import crypto
from recoverctl.repo.crypto import Cipher, KeySlot, KeySlotError, MasterKey
from recoverctl.storage.base import ObjectInfo, Storage

# Named as before the slots moved here from repository.py, so log filters on it keep working.
log = logging.getLogger("recoverctl.repo.repository")

# A key file is ~500 bytes; anything much larger is not one and is not read.
_MAX_KEY_FILE = 64 * 1024


def _who() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return {"hostname": socket.gethostname(), "username": user}


@dataclass
class FormatUpgrade:
    """What `Repository.upgrade` changed (or would change, with dry_run): the format version and
    the key slots renamed to their content hash (each {"from": old id, "to": new id})."""

    url: str
    version_before: int
    version: int
    keys_renamed: list[dict[str, str]]
    dry_run: bool


def write_key(storage: Storage, master: MasterKey, password: str, kdf: dict[str, Any] | None = None) -> str:
    """Wrap `master` under `password` into a new key slot on `storage`; return the slot id."""
    doc = crypto.wrap_master(master, password, kdf)
    key_id = KeySlot.parse(doc).id
    doc.update(_who(), created=time.time())
    storage.put(f"keys/{key_id}", json.dumps(doc, indent=1).encode())
    return key_id


def unlock_master(
    storage: Storage, password: str, config: dict[str, Any], *, named_slots: bool
) -> tuple[MasterKey, str]:
    """Return the master key and slot id of the first key slot that `password` opens and
    that authenticates `config` (its `mac`).

    A key file that is not a usable slot (garbage, out-of-bounds KDF parameters, a name
    that is not its hash when `named_slots`) is skipped with a warning naming it, so one
    planted or damaged file cannot lock out a valid passphrase. Raise WrongKeyError when no
    slot opens, VerificationError when slots open but none authenticates the config.
    """
    objects = sorted(storage.list("keys/"), key=lambda o: o.key)
    if not objects:
        raise NotFoundError(f"the repository at '{storage.url}' has no keys")
    canonical, mac = canonical_config(config), config.get("mac")
    skipped: list[str] = []
    foreign = 0
    for obj in objects:
        kid = obj.key.split("/", 1)[1]
        try:
            master = read_slot(storage, obj, named=named_slots).unwrap(password)
        except WrongKeyError:
            continue
        except ObjectNotFound:  # removed since the listing (a concurrent `key passwd`)
            continue
        except (KeySlotError, StorageError) as e:
            skipped.append(kid)
            log.warning("skipping key file '%s' of '%s': %s", obj.key, storage.url, e.message)
            continue
        if Cipher(master).mac(canonical) != mac:
            foreign += 1
            log.warning(
                "key slot '%s' opens with this passphrase but does not authenticate the config "
                "of '%s' (another repository's key, or a modified config)",
                obj.key,
                storage.url,
            )
            continue
        return master, kid
    if foreign:
        raise VerificationError(
            f"the repository config at '{storage.url}' was modified or belongs to another repository",
            hint="restore the config object from a copy of this repository",
        )
    note = (
        f"; {len(skipped)} unusable or unreadable key file(s) skipped: {', '.join(skipped)}"
        if skipped
        else ""
    )
    raise WrongKeyError(
        f"wrong passphrase for the repository at '{storage.url}' (tried {len(objects)} key(s){note})"
    )


def key_rows(storage: Storage, current: str, *, named: bool) -> list[dict[str, Any]]:
    """Return every key file ({id, current, problem, hostname, username, created, kdf}); one that
    is not a usable slot is listed with its `problem`. `current` is the id of the open slot."""
    out = []
    for o in sorted(storage.list("keys/"), key=lambda o: o.key):
        kid = o.key.split("/", 1)[1]
        row: dict[str, Any] = {"id": kid, "current": kid == current, "problem": None}
        try:
            doc = json.loads(storage.get(o.key)) if o.size <= _MAX_KEY_FILE else None
            read_slot(storage, o, named=named, doc=doc)
        except (KeySlotError, ValueError, StorageError) as e:
            row["problem"] = str(e)
            doc = None
        doc = doc if isinstance(doc, dict) else {}
        row.update(
            hostname=doc.get("hostname"),
            username=doc.get("username"),
            created=doc.get("created"),
            kdf=doc.get("kdf"),
        )
        out.append(row)
    return out


def read_slot(storage: Storage, obj: ObjectInfo, *, named: bool, doc: Any = None) -> KeySlot:
    """Return the key slot in key file `obj` (or its already parsed `doc`); raise KeySlotError
    when it is not one, or when `named` and its name is not its content hash (a copied slot)."""
    if obj.size > _MAX_KEY_FILE:
        raise KeySlotError(f"{obj.size} bytes is too large for a key file")
    if doc is None:
        try:
            doc = json.loads(storage.get(obj.key))
        except ValueError:
            raise KeySlotError("not a JSON document") from None
    slot = KeySlot.parse(doc)
    if named and slot.id != obj.key.split("/", 1)[1]:
        raise KeySlotError("its name is not the hash of its content: a copied or planted key file")
    return slot


def canonical_config(config: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in config.items() if k != "mac"}, sort_keys=True).encode()
