"""pyshm._units.parse_size: the one size syntax of the CLI and the bench."""

import argparse

import pytest

from pyshm._units import fmt_size, parse_size


@pytest.mark.parametrize("text, value", [
    ("4096", 4096), ("007", 7), ("0", 0), ("0x100", 256), ("0X1F", 31),
    ("64K", 64 << 10), ("64k", 64 << 10), ("4KiB", 4096), ("4kib", 4096), ("4KB", 4096),
    ("1Mb", 1 << 20), ("1MiB", 1 << 20), ("2G", 2 << 30), ("1T", 1 << 40),
    (" 2 G ", 2 << 30), ("64B", 64), ("64b", 64), ("0x10K", 16 << 10),
])
def test_parse_size_accepts(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", [
    "", "lots", "K", "1.5K", "-1", "0x", "1KK", "64i", "64ib", "1Ki B", "1 0", "0b101",
    "1_000", "1P",
])
def test_parse_size_refuses_with_a_hint(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a size.*e.g."):
        parse_size(text)


def test_fmt_size():
    assert [fmt_size(n) for n in (64, 4096, 1 << 20, 3 << 30, 1000)] == \
        ["64 B", "4 KiB", "1 MiB", "3 GiB", "1000 B"]


def test_human_size():
    from pyshm._units import human_size

    assert [human_size(n) for n in (0, 100, 1023, 1024, 1536, 5000, 256 << 20,
                                    10 * (1 << 20) + 200_000, (123 << 30) + 5, 3 << 40)] == \
        ["0 B", "100 B", "1023 B", "1 KiB", "1.50 KiB", "4.88 KiB", "256 MiB", "10.2 MiB",
         "123 GiB", "3 TiB"]


@pytest.mark.parametrize("text, mode", [("600", 0o600), ("0640", 0o640), ("0o660", 0o660),
                                        ("7777", 0o7777), ("0", 0)])
def test_parse_mode(text, mode):
    from pyshm._units import parse_mode

    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["", "rw", "0x1ff", "8", "17777", "-600", "0o"])
def test_parse_mode_refuses(text):
    from pyshm._units import parse_mode

    with pytest.raises(argparse.ArgumentTypeError, match="not a mode"):
        parse_mode(text)
