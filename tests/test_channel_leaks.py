"""Leaks: 20,000 Channel open/use/close cycles keep descriptors, names and
memory flat (the SharedMemory counterpart is in test_shm_reliability.py).

Each cycle creates a channel, opens it a second time by name, sends and
receives both ways, is refused an exclusive create, opens with exist_ok,
closes everything and unlinks; some cycles also take the error paths (a
missing name, a segment that is not a channel, a random name, a forgotten
close()).  Afterwards the number of open descriptors and of this run's
names in /dev/shm must be what it was before, and RSS must not have grown
beyond allocator noise (not checked under ASan, whose quarantine keeps
freed memory on purpose).
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

import pyshm
from conftest import TEST_PREFIX, UNDER_ASAN, new_name, remove_quietly

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _ours() -> int:
    return sum(1 for n in os.listdir("/dev/shm") if n.startswith(TEST_PREFIX))


@linux_only
def test_twenty_thousand_channel_cycles_leak_nothing():
    name, missing, foreign = new_name(), new_name(), new_name()
    buf = bytearray(64)

    def cycle(i: int) -> None:
        data = i.to_bytes(8, "little")
        with pyshm.Channel(name, create=True, capacity=4096) as a:
            a.send(data, timeout=0)
            with pyshm.Channel(name) as b:
                assert b.recv(timeout=0) == data
                b.send(data + data, timeout=0)
                assert b.queued == 24
            try:
                pyshm.Channel(name, create=True, capacity=64)
            except FileExistsError:
                pass
            with pyshm.Channel(name, create=True, capacity=64, exist_ok=True) as d:
                assert d.recv_into(buf, timeout=0) == 16
            try:
                a.recv(timeout=0)
            except TimeoutError:
                pass
            a.unlink()
        if i % 10 == 0:
            try:
                pyshm.Channel(missing)
            except FileNotFoundError:
                pass
            try:
                pyshm.Channel(foreign)
            except pyshm.ProtocolError:
                pass
            try:
                pyshm.Channel(name, create=True, capacity=8)
            except ValueError:
                pass
            r = pyshm.Channel(create=True, capacity=64)
            r.unlink()
            r.close()
            # Left to the garbage collector: dealloc must release the mapping.
            pyshm.Channel(name, create=True, capacity=64).unlink()

    try:
        with pyshm.SharedMemory(foreign, create=True, size=4096) as shm:
            shm.write(b"not a channel")
        for i in range(500):        # warm up allocator caches
            cycle(i)
        gc.collect()
        fds, rss, names = _fds(), _rss(), _ours()
        for i in range(20_000):
            cycle(i)
        gc.collect()
        assert _fds() == fds
        assert _ours() == names
        if UNDER_ASAN:
            return  # ASan's quarantine holds freed memory back on purpose
        growth = _rss() - rss
        assert growth < 4 << 20, f"RSS grew by {growth} bytes over 20,000 cycles"
    finally:
        remove_quietly(name)
        remove_quietly(foreign)
