"""Leaks: 20,000 Channel open/use/close cycles keep descriptors, names and
memory flat (the SharedMemory counterpart is segments/test_leaks.py).

Each cycle creates a channel, opens it a second time by name, sends and
receives both ways, is refused an exclusive create, opens with exist_ok,
closes everything and unlinks; some cycles also take the error paths (a
missing name, a segment that is not a channel, a random name, a forgotten
close()).  Afterwards the number of open descriptors (Windows: handles and
mapped views) and of this run's names in /dev/shm must be what it was
before, and the process's memory must not have grown
beyond allocator noise (not checked under ASan, whose quarantine keeps
freed memory on purpose).
"""

from __future__ import annotations

import pyshm


def test_twenty_thousand_channel_cycles_leak_nothing(pyshm_names, assert_no_leaks):
    name, missing, foreign = pyshm_names(), pyshm_names(), pyshm_names()
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
            with pyshm.Channel(name, create=True, exist_ok=True) as d:
                assert d.recv_into(buf, timeout=0) == 16
            try:        # another capacity: refused after attaching, all let go
                pyshm.Channel(name, create=True, capacity=64, exist_ok=True)
            except ValueError:
                pass
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

    # Held open throughout: on Windows the name lives only while a handle does.
    with pyshm.SharedMemory(foreign, create=True, size=4096) as shm:
        shm.write(b"not a channel")
        assert_no_leaks(cycle)
