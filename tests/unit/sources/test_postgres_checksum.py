import os
import struct

from recoverctl.sources.postgres.checksum import BLCKSZ, PageBatch, bad_pages, page_checksums, recheck


def _page(seed: int, lsn: int = 0x100) -> bytearray:
    page = bytearray(os.urandom(BLCKSZ))
    struct.pack_into("<II", page, 0, lsn >> 32, lsn & 0xFFFFFFFF)
    struct.pack_into("<H", page, 14, 8000)  # pd_upper != 0: not a new page
    return page


def _sealed(pages: list[bytearray], first_block: int) -> bytes:
    data = bytearray(b"".join(pages))
    for i, c in enumerate(page_checksums(bytes(data), first_block)):
        struct.pack_into("<H", data, i * BLCKSZ + 8, int(c))
    return bytes(data)


def test_checksum_depends_on_block_number_and_ignores_its_own_field() -> None:
    page = _page(1)
    a = page_checksums(bytes(page), 0)[0]
    b = page_checksums(bytes(page), 1)[0]
    assert a != b
    struct.pack_into("<H", page, 8, 0xBEEF)
    assert page_checksums(bytes(page), 0)[0] == a
    assert 1 <= int(a) <= 65535


def test_batch_equals_one_by_one() -> None:
    pages = [_page(i) for i in range(5)]
    batch = page_checksums(b"".join(pages), 7)
    assert [int(x) for x in batch] == [int(page_checksums(bytes(p), 7 + i)[0]) for i, p in enumerate(pages)]


def test_bad_pages_names_the_corrupted_block_only() -> None:
    data = bytearray(_sealed([_page(i) for i in range(4)], 100))
    assert bad_pages(bytes(data), 100, start_lsn=1 << 40) == []
    data[2 * BLCKSZ + 500] ^= 0xFF
    assert bad_pages(bytes(data), 100, start_lsn=1 << 40) == [102]


def test_new_pages_and_pages_newer_than_backup_start_are_skipped() -> None:
    fresh = bytearray(BLCKSZ)
    newer = _page(9, lsn=0x5000)  # unsealed: wrong checksum, but written after the backup started
    data = bytes(fresh + newer)
    assert bad_pages(data, 0, start_lsn=0x4000) == []
    assert bad_pages(data, 0, start_lsn=0x6000) == [1]


def test_checksums_past_one_numpy_batch_equal_one_by_one() -> None:
    pages = [_page(i) for i in range(530)]  # more than one internal batch of 512
    batch = page_checksums(b"".join(pages), 3)
    for i in (0, 511, 512, 529):
        assert int(batch[i]) == int(page_checksums(bytes(pages[i]), 3 + i)[0])


def test_page_batch_names_the_file_and_block_of_a_corrupted_page_among_small_files(tmp_path) -> None:
    files = {
        "base/5/1259": (0, bytearray(_sealed([_page(i) for i in range(3)], 0))),
        "base/5/16384.1": (131072, bytearray(_sealed([_page(i) for i in range(4)], 131072))),
        "base/5/2608": (0, bytearray(_sealed([_page(i) for i in range(2)], 0)) + b"partial page"),
    }
    files["base/5/16384.1"][1][BLCKSZ + 77] ^= 0x01
    batch = PageBatch(start_lsn=1 << 40, limit=8)
    full = [batch.add(key, first, bytes(data)) for key, (first, data) in files.items()]
    assert full == [False, False, True]  # 3 + 4 + 2 whole pages: the partial page is not counted
    assert batch.flush() == {"base/5/16384.1": [131073]}
    assert batch.pages_checked == 9 and batch.flush() == {}
    on_disk = tmp_path / "16384.1"
    on_disk.write_bytes(files["base/5/16384.1"][1])
    assert recheck(str(on_disk), 131072, [131073], 1 << 40) == [131073]
    on_disk.write_bytes(_sealed([_page(i) for i in range(4)], 131072))  # a torn read, now whole
    assert recheck(str(on_disk), 131072, [131073], 1 << 40) == []


def test_page_batch_copies_pages_in_so_callers_buffers_are_free_and_it_is_reused_after_flush() -> None:
    good = bytearray(_sealed([_page(i) for i in range(4)], 0))
    batch = PageBatch(start_lsn=1 << 40, limit=8)
    batch.add("base/5/1", 0, memoryview(good))
    good[BLCKSZ + 77] ^= 0x01  # the caller reuses its buffer: the batch checks what it was given
    assert batch.flush() == {}
    bad = bytearray(_sealed([_page(i) for i in range(4)], 4))
    bad[2 * BLCKSZ + 99] ^= 0x01
    assert batch.add("base/5/2", 4, bytes(bad)) is False
    assert batch.flush() == {"base/5/2": [6]} and batch.pages_checked == 8
