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
