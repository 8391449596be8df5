from __future__ import annotations

from recoverctl.units import human_duration, human_rate, human_size


def test_human_size_uses_binary_units_with_one_decimal() -> None:
    assert human_size(None) == "-"
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(221107773) == "210.9 MiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"
    assert human_size(5 * 1024**5) == "5120.0 TiB"  # the largest unit absorbs the rest


def test_human_duration() -> None:
    assert [human_duration(v) for v in (None, 12.34, 245, 3720, 90000, -30)] == [
        "-",
        "12.3s",
        "4m05s",
        "1h02m",
        "1d01h",
        "-30.0s",
    ]


def test_human_rate_is_a_size_per_second() -> None:
    assert human_rate(None) == "-"
    assert human_rate(1536) == "1.5 KiB/s"
