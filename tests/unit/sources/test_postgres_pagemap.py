"""From pg_waldump's text to changed blocks, and from changed blocks to the chunks a page
incremental reads (pagemap, pageincr)."""

from __future__ import annotations

import os
from pathlib import Path

from recoverctl.repo.tree import Node
from recoverctl.sources.postgres.pageincr import BLOCK_SIZE, RelationReads
from recoverctl.sources.postgres.pagemap import RelationFile, WalChanges, relation_file

# Lines as PostgreSQL 15's pg_waldump prints them (trimmed).
# ruff: noqa: E501
WALDUMP = """\
rmgr: Heap        len (rec/tot):     54/  1958, tx:        724, lsn: 0/017415F0, prev 0/017415C0, desc: INSERT off 10 flags 0x01, blkref #0: rel 1663/5/1247 blk 14 FPW
rmgr: Heap2       len (rec/tot):     64/  8256, tx:          0, lsn: 0/027D3880, prev 0/027D3858, desc: VISIBLE cutoff xid 726 flags 0x01, blkref #0: rel 1663/5/16387 fork vm blk 0 FPW, blkref #1: rel 1663/5/16387 blk 131090
rmgr: Heap        len (rec/tot):     79/    79, tx:        730, lsn: 0/02800000, prev 0/027D3880, desc: HOT_UPDATE off 2 xmax 730, blkref #0: rel 1664/0/1262 blk 0
rmgr: Storage     len (rec/tot):     42/    42, tx:        725, lsn: 0/01768F00, prev 0/01768ED0, desc: CREATE base/5/16392
rmgr: Storage     len (rec/tot):     46/    46, tx:        730, lsn: 0/0281DA50, prev 0/0281BA00, desc: TRUNCATE base/5/16387 to 222 blocks flags 7
rmgr: Database    len (rec/tot):     42/    42, tx:        727, lsn: 0/01D8C4E0, prev 0/01D8C468, desc: CREATE_FILE_COPY copy dir 1663/1 to 1663/16390
rmgr: Database    len (rec/tot):     34/    34, tx:        728, lsn: 0/01D8CB50, prev 0/01D8CA88, desc: CREATE_WAL_LOG create dir 1700/16391
rmgr: XLOG        len (rec/tot):     54/    54, tx:          0, lsn: 0/01D8CC00, prev 0/01D8CB50, desc: PARAMETER_CHANGE max_connections=100 wal_level=replica wal_log_hints=off
pg_waldump: error: error in WAL record at 0/9000168: invalid record length
"""


def _changes() -> WalChanges:
    changes = WalChanges(0, 1 << 40)
    changes.add_lines(WALDUMP.splitlines(keepends=True))
    return changes


def test_waldump_lines_become_blocks_creations_truncations_and_copied_databases() -> None:
    c = _changes()
    assert c.records == 8
    assert {fork: c.blocks_of(fork) for fork in c.blocks} == {
        (1663, 5, 1247, "main"): {14},
        (1663, 5, 16387, "vm"): {0},
        (1663, 5, 16387, "main"): {131090},
        (1664, 0, 1262, "main"): {0},
    }
    assert c.changed_blocks == 4
    assert c.created == {(1663, 5, 16392, "main")}
    assert c.truncated == {(1663, 5, 16387)}
    assert c.database_dirs == {(1663, 16390), (1700, 16391)}
    assert c.hint_bits_unlogged


def test_relation_file_names() -> None:
    assert relation_file("base/5/16387") == RelationFile((1663, 5, 16387, "main"), 0)
    assert relation_file("base/5/16387_vm") == RelationFile((1663, 5, 16387, "vm"), 0)
    assert relation_file("base/5/16387.2") == RelationFile((1663, 5, 16387, "main"), 2)
    assert relation_file("global/1262") == RelationFile((1664, 0, 1262, "main"), 0)
    assert relation_file("pg_tblspc/1700/PG_15_202209061/16391/42_init") == RelationFile(
        (1700, 16391, 42, "init"), 0
    )
    for other in ("base/5/PG_VERSION", "global/pg_control", "pg_xact/0000", "base/5/pg_filenode.map"):
        assert relation_file(other) is None


def _stat(tmp_path: Path, size: int) -> os.stat_result:
    f = tmp_path / "f"
    f.write_bytes(b"\0" * size)
    return os.stat(f)


def _parent(size: int) -> Node:
    n = -(-size // BLOCK_SIZE)
    return {"type": "file", "size": size, "block_size": BLOCK_SIZE, "content": [f"id{i}" for i in range(n)]}


def test_only_chunks_with_changed_blocks_or_past_the_parent_are_read(tmp_path: Path) -> None:
    changes = WalChanges(0, 1)
    # blocks 3 and 17 of segment 0; block 131072 + 40 of segment 1 (chunk 2 there)
    for block in (3, 17, 131072 + 40):
        changes.mark((1663, 5, 100, "main"), block)
    reads = RelationReads(tmp_path, changes, None, start_lsn=1, validate=False)
    size = 4 * BLOCK_SIZE
    plan = reads("base/5/100", _stat(tmp_path, size), _parent(size))
    assert plan is not None and set(plan.keep) == {2, 3}
    plan = reads("base/5/100.1", _stat(tmp_path, size), _parent(size))
    assert plan is not None and set(plan.keep) == {0, 1, 3}
    # grown by half a chunk: the parent's partial last chunk is read again, the new part too
    plan = reads("base/5/100", _stat(tmp_path, size + 8192), _parent(size - 8192))
    assert plan is not None and set(plan.keep) == {2}
    assert reads.files_paged == 3 and reads.whole == {}


def test_what_the_wal_cannot_vouch_for_is_read_whole_and_counted(tmp_path: Path) -> None:
    reads = RelationReads(tmp_path, _changes(), None, start_lsn=1, validate=False)
    st = _stat(tmp_path, BLOCK_SIZE)
    cases = {
        "base/5/16387_vm": (_parent(BLOCK_SIZE), "map_fork"),
        "base/5/16387_fsm": (_parent(BLOCK_SIZE), "map_fork"),
        "base/5/99_init": (_parent(BLOCK_SIZE), "unlogged"),
        "base/5/98": (None, "new_file"),
        "base/5/97": ({"type": "file", "size": BLOCK_SIZE, "content": ["x"]}, "parent_not_page_aligned"),
        "base/16390/1259": (_parent(BLOCK_SIZE), "database_copied"),
        "base/5/16392": (_parent(BLOCK_SIZE), "created"),
        "base/5/16387": (_parent(BLOCK_SIZE), "truncated"),
        "base/5/96": (_parent(2 * BLOCK_SIZE), "truncated"),  # shorter than in the parent
    }
    for relpath, (parent, _reason) in cases.items():
        plan = reads(relpath, st, parent)
        assert plan is not None and plan.keep == {} and plan.block_size == BLOCK_SIZE, relpath
    assert reads("base/5/PG_VERSION", st, None) is None
    assert dict(reads.whole) == {"map_fork": 2, "unlogged": 1, "new_file": 1, "parent_not_page_aligned": 1,
                                 "database_copied": 1, "created": 1, "truncated": 2}  # fmt: skip
    summary = reads.summary()
    assert summary["mode"] == "page" and summary["whole_file_reads"]["truncated"] == 2


def test_a_fallback_reads_every_relation_file_whole_and_says_why(tmp_path: Path) -> None:
    reads = RelationReads(tmp_path, None, "timeline_switch", start_lsn=1, validate=False, detail="2 -> 3")
    plan = reads("base/5/100", _stat(tmp_path, BLOCK_SIZE), _parent(BLOCK_SIZE))
    assert plan is not None and plan.keep == {}
    summary = reads.summary()
    assert summary["mode"] == "file" and summary["reason"] == "timeline_switch"
    assert summary["whole_file_reads"] == {"timeline_switch": 1}
    full = RelationReads(tmp_path, None, None, start_lsn=1, validate=False)
    full("base/5/100", _stat(tmp_path, BLOCK_SIZE), None)
    assert full.summary()["mode"] == "full" and full.summary()["whole_file_reads"] == {}


def test_block_bitmaps_count_distinct_blocks_and_map_them_to_chunks(tmp_path: Path) -> None:
    changes = WalChanges(0, 1)
    fork = (1663, 5, 7, "main")
    for block in (15, 15, 16, 1000, 131071, 131072, 10_000_000):
        changes.mark(fork, block)
    assert changes.changed_blocks == 6
    assert changes.blocks_of(fork) == {15, 16, 1000, 131071, 131072, 10_000_000}
    reads = RelationReads(tmp_path, changes, None, start_lsn=1, validate=False)
    # {chunk: mask of its changed pages}, bit p for page p of the chunk
    assert reads._changed_chunks(RelationFile(fork, 0)) == {
        0: 1 << 15,
        1: 1,
        1000 // 16: 1 << 8,
        8191: 1 << 15,
    }
    assert reads._changed_chunks(RelationFile(fork, 1)) == {0: 1}
    last = 10_000_000 % 131072
    assert reads._changed_chunks(RelationFile(fork, 10_000_000 // 131072)) == {last // 16: 1 << (last % 16)}
    assert reads._changed_chunks(RelationFile((1663, 5, 8, "main"), 0)) == {}


def test_pages_of_the_chunks_read_are_validated_in_batches(tmp_path: Path) -> None:
    (tmp_path / "base" / "5").mkdir(parents=True)
    data = bytearray(os.urandom(BLOCK_SIZE))  # 16 pages whose stored checksums are wrong
    for page in range(16):
        data[page * 8192 + 14 : page * 8192 + 16] = b"\x00\x20"  # pd_upper set: not a new page
    (tmp_path / "base" / "5" / "100.1").write_bytes(data)
    reads = RelationReads(tmp_path, WalChanges(0, 1), None, start_lsn=2**64 - 1, validate=True)
    plan = reads("base/5/100.1", _stat(tmp_path, BLOCK_SIZE), None)
    assert plan is not None and plan.on_read is not None
    plan.on_read(0, bytes(data))
    bad, pages = reads.checked()
    assert pages == 16 and bad == {"base/5/100.1": [131072 + i for i in range(16)]}
    assert reads.summary()["chunks_read"] == 1
