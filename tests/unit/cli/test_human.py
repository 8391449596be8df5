from __future__ import annotations

from recoverctl.cli.human import human_size


def test_human_size_uses_binary_units_with_one_decimal() -> None:
    assert human_size(None) == "-"
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(221107773) == "210.9 MiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"
    assert human_size(5 * 1024**5) == "5120.0 TiB"  # the largest unit absorbs the rest
