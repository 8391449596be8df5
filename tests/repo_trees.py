"""Test data for repository tests: a small tree with every kind of entry, and a digest to compare trees."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def make_tree(root: Path, *, big: int = 2_500_000) -> Path:
    """Create files of every kind under root: small, big random, sparse, empty, symlinks, hard links,
    empty dir, unicode names, modes 0600/0755."""
    (root / "docs" / "nested").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "docs" / "readme.txt").write_text("hello recoverctl\n" * 100)
    (root / "docs" / "nested" / "notes.md").write_text("# notes\n" + "line\n" * 1000)
    (root / "docs" / "ünïcødé ファイル.txt").write_text("unicode name\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "random.bin").write_bytes(os.urandom(big))
    secret = root / "secret.key"
    secret.write_text("top secret\n")
    secret.chmod(0o600)
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    with open(root / "sparse.img", "wb") as f:
        f.seek(3 * 1024 * 1024)
        f.write(b"tail data")
    (root / "link-to-readme").symlink_to("docs/readme.txt")
    (root / "dangling").symlink_to("does/not/exist")
    os.link(root / "docs" / "readme.txt", root / "hardlink.txt")
    os.utime(root / "docs" / "readme.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    return root


def digest(root: Path) -> dict[str, Any]:
    """Return {relpath: (type, mode, size, sha256 or link target, mtime_ns)} plus hard-link groups."""
    out: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(mode))
            else:
                out[rel] = (
                    "file",
                    oct(mode),
                    st.st_size,
                    hashlib.sha256(full.read_bytes()).hexdigest(),
                    st.st_mtime_ns,
                )
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
    out["__hardlinks__"] = sorted(sorted(g) for g in inodes.values())
    return out
