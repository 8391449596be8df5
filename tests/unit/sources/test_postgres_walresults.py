"""The `--json` keys of `wal push`, `wal fetch` and `wal expire`, path by path: typed results must
print what the dicts they replaced printed."""

from __future__ import annotations

from recoverctl.actions.wal import WalExpire
from recoverctl.sources.postgres.walresults import WalExpiry, WalFetch, WalPush

SEG = "000000010000000000000003"


def test_push_keys_per_path() -> None:
    stored = WalPush(SEG, "main", "stored", 10, key="k", stored_bytes=7, pushed_ahead=2, seconds=0.1)
    assert stored.to_json() == {
        "name": SEG, "key": "k", "status": "stored", "bytes": 10, "stored_bytes": 7,
        "source": "main", "pushed_ahead": 2, "seconds": 0.1,
    }  # fmt: skip
    detached = WalPush(SEG, "main", "already-archived", 10, key="k", pushing_ahead=3, seconds=0.2)
    assert set(detached.to_json()) == {"name", "key", "status", "bytes", "source", "pushing_ahead", "seconds"}
    handed = WalPush(SEG, "main", "already-archived", 10, handed_off=True)
    assert handed.to_json() == {
        "name": SEG, "status": "already-archived", "bytes": 10, "source": "main", "pushed_ahead": True,
    }  # fmt: skip


def test_fetch_keys_per_path() -> None:
    direct = WalFetch(SEG, "main", 10, prefetched=False, dest="/d", read_ahead=4)
    assert direct.to_json() == {
        "name": SEG, "source": "main", "bytes": 10, "dest": "/d", "prefetched": False, "read_ahead": 4,
    }  # fmt: skip
    spooled = WalFetch(SEG, "main", 10, prefetched=True, dest="/d")
    assert set(spooled.to_json()) == {"name", "source", "bytes", "dest", "prefetched"}
    fetcher = WalFetch(SEG, "main", 10, prefetched=True)
    assert set(fetcher.to_json()) == {"name", "source", "bytes", "prefetched"}


def test_expire_keys_with_and_without_backups() -> None:
    result = WalExpire(
        True, [WalExpiry("a", None, [], reason="no backups"), WalExpiry("b", SEG, ["x"], oldest_backup="s1")]
    )
    assert result.to_json() == {
        "dry_run": True,
        "sources": [
            {"source": "a", "oldest_needed": None, "removed": [], "reason": "no backups"},
            {"source": "b", "oldest_backup": "s1", "oldest_needed": SEG, "removed": ["x"]},
        ],
    }
