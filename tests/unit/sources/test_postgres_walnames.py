from recoverctl.sources.postgres.walnames import (
    format_lsn,
    is_wal_file_name,
    parse_lsn,
    segment_name,
    segments_between,
    timeline_of,
)


def test_lsn_round_trip() -> None:
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("1A/FF000028") == (0x1A << 32) | 0xFF000028
    assert format_lsn(parse_lsn("1A/FF000028")) == "1A/FF000028"


def test_segment_names_follow_postgres() -> None:
    assert segment_name(1, parse_lsn("0/16B3748")) == "000000010000000000000001"
    assert segment_name(2, parse_lsn("1/FF000000")) == "0000000200000001000000FF"
    assert segments_between("0000000100000000000000FE", "000000010000000100000001") == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert timeline_of("00000003.history") == 3


def test_archivable_names() -> None:
    for ok in (
        "000000010000000000000001",
        "000000010000000000000001.partial",
        "00000002.history",
        "000000010000000000000002.00000028.backup",
    ):
        assert is_wal_file_name(ok), ok
    for bad in ("../etc/passwd", "000000010000000000000001x", "RECOVERYXLOG"):
        assert not is_wal_file_name(bad), bad
