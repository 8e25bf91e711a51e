"""Big receives into memory that faults cheaply (issue 22, point 3).

recv() of a big message returns a new bytes object, as ever, whose pages
-- when they are fresh -- were advised for huge pages before the copy (Linux with transparent huge
pages in "madvise" mode shows it: the mapping that holds the bytes has
huge pages; without the advice it has none).  recv_obj() puts big arrays
into a MessageBuffer whose mapping outlives it: the next message of a size
it fits lands in the same pages, and never shows what they held; at most
two such mappings are kept, the newest.
"""

from __future__ import annotations

import ctypes
import os
import sys

import pytest

try:
    import numpy as np
except ImportError:     # under Wine it never is installed (conftest's numpy fixture)
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="NumPy is not installed (under Wine it "
                                 "never is: NumPy 2.x aborts there)")

THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode() -> str:
    """The bracketed word of THP's setting ("always", "madvise", "never"),
    or "" where there is none to read."""
    try:
        with open(THP, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return ""
    return text[text.find("[") + 1:text.find("]")] if "[" in text else ""


def anon_huge_kib(addr: int, length: int) -> int:
    """AnonHugePages of the mappings that overlap [ADDR, ADDR + LENGTH)
    (/proc/self/smaps; advice on part of a mapping splits it)."""
    total, inside, seen = 0, False, False
    with open("/proc/self/smaps", encoding="ascii") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                inside = lo < addr + length and addr < hi
                seen = seen or inside
            elif inside and head[0] == "AnonHugePages:":
                total += int(head[1])
    assert seen, f"no mapping holds {addr:#x}"
    return total


SMAPS = sys.platform.startswith("linux")


def mapped(addr: int) -> bool:
    """Whether a mapping of this process holds ADDR (/proc/self/maps)."""
    with open("/proc/self/maps", encoding="ascii") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def python_writes_new_blocks() -> bool:
    """Python's debug allocator hooks are on (a debug build's default, or
    PYTHONMALLOC=...debug): they fill every new block, so a new bytes
    object's pages are never fresh and recv() rightly advises nothing."""
    return hasattr(sys, "gettotalrefcount") or os.environ.get("PYTHONMALLOC", "").endswith("debug")


@pytest.mark.skipif(not sys.platform.startswith("linux") or thp_mode() != "madvise",
                    reason="huge pages tell the advice apart only where THP is on for advised "
                           "memory alone (Linux, transparent_hugepage/enabled = madvise)")
@pytest.mark.skipif(python_writes_new_blocks(),
                    reason="Python's debug allocator fills new blocks: no fresh pages to advise")
def test_a_big_recv_lands_in_huge_pages(pyshm_channel):
    """40 MiB from recv(): bytes, equal to what was sent, in a mapping with
    huge pages -- the allocator's own memory, which nothing else advises
    (glibc maps every block this large anew: fresh pages, which is when
    the advice is given)."""
    ch = pyshm_channel(41 << 20)
    data = bytes(range(256)) * ((40 << 20) // 256)
    ch.send(data)
    got = ch.recv()
    assert type(got) is bytes and got == data
    assert anon_huge_kib(ctypes.cast(got, ctypes.c_void_p).value or 0, len(got)) > 0


@needs_numpy
def test_a_big_buffer_is_filled_again_once_the_last_one_is_gone(pyshm_channel):
    """The next big array lands where the last one was once that is gone,
    holding exactly what was sent; one less than half as big gets its own
    mapping; the two newest mappings are kept, not more."""
    ch = pyshm_channel(32 << 20)
    size = 4 << 20

    def received(fill: int, n: int = size):
        ch.send_obj(np.full(n, fill, dtype=np.uint8))
        got = ch.recv_obj()
        assert got.shape == (n,) and (got == fill).all()
        return got

    first = received(1)
    where = first.ctypes.data
    del first
    if SMAPS:
        assert mapped(where)            # kept, not unmapped and mapped again
    again = received(2)
    assert again.ctypes.data == where
    again[:] = 9                        # writable, and private: the next one is 3s
    del again
    small = received(3, (2 << 20) + 64)
    assert small.ctypes.data != where   # the spare is too big for it: kept
    del small
    assert received(4).ctypes.data == where
    # Three alive, then gone: the two freed last are kept, the first is not.
    one, two, three = (received(5 + i) for i in range(3))
    kept = {two.ctypes.data, three.ctypes.data}
    del one, two, three                 # in this order
    later = [received(8 + i) for i in range(3)]
    assert {a.ctypes.data for a in later[:2]} == kept
    assert later[2].ctypes.data not in kept
