"""Leaks: 20,000 Channel cycles keep descriptors, names and memory flat
(the SharedMemory counterpart is segments/test_leaks.py).

Each cycle creates a channel, opens it a second time by name, sends and
receives both ways, is refused an exclusive create, opens with exist_ok;
sends and receives an object message (a dict; with NumPy, an array that
comes back in a MessageBuffer); writes a message in place with reserve()
and reads it in place with recv_view(), then takes a loan of each side
that ends with an exception (nothing sent, the message left queued) and
one that times out; closes everything and unlinks.  Every tenth cycle
also takes the error paths -- a missing name, a segment that is not a
channel, a bad capacity, a message too large for send_obj or reserve, an
object that cannot be pickled, a plain message refused by recv_obj, a
random name, a forgotten close() -- each asserted with pytest.raises, so
that a call that wrongly succeeds fails the test.  Every hundredth sends a
2 MiB array, which lands in a MessageBuffer mapping of its own.

assert_no_leaks (tests/conftest.py) then checks descriptors (Windows:
handles and mapped views), this run's names in /dev/shm, and the memory a
cycle keeps: a few bytes at most, measured per cycle after a warm-up.
"""

from __future__ import annotations

import pickle

import pytest

import pyshm

try:
    import numpy as np
except ImportError:     # under Wine it never is installed (conftest's numpy fixture)
    np = None

DICT = {"id": 1, "tags": ["raw", "16-bit"], "scale": 0.5}


def message_buffer(array):
    """What holds the memory of an array that recv_obj() rebuilt: the
    object behind the memoryview at the end of its chain of bases."""
    base = array
    while not isinstance(base, memoryview):
        base = base.base
    return base.obj


def test_twenty_thousand_channel_cycles_leak_nothing(pyshm_names, assert_no_leaks):
    name, missing, foreign, big = pyshm_names(), pyshm_names(), pyshm_names(), pyshm_names()
    buf = bytearray(64)
    small = None if np is None else np.arange(256, dtype=np.float64)     # 2 KiB
    large = None if np is None else np.ones(2 << 20, dtype=np.uint8)    # its own mapping

    def objects(a: pyshm.Channel, i: int) -> None:
        a.send_obj(DICT, timeout=0)
        assert a.recv_obj(timeout=0) == DICT
        if small is not None:
            a.send_obj(small, timeout=0)
            got = a.recv_obj(timeout=0)
            assert got[i % 256] == small[i % 256] and got.shape == small.shape
            assert isinstance(message_buffer(got), pyshm.MessageBuffer)

    def loans(a: pyshm.Channel, data: bytes) -> None:
        with a.reserve(8) as out:
            out[:] = data
        with a.recv_view(timeout=0) as view:
            assert bytes(view) == data
        with pytest.raises(KeyError):
            with a.reserve(8) as out:
                out[:] = data
                raise KeyError("discarded")
        assert a.queued == 0
        a.send(data, timeout=0)
        with pytest.raises(KeyError):
            with a.recv_view(timeout=0) as view:
                raise KeyError("left queued")
        assert a.recv(timeout=0) == data
        with pytest.raises(TimeoutError):
            with a.recv_view(timeout=0):
                pass

    def errors(a: pyshm.Channel, data: bytes) -> None:
        with pytest.raises(FileNotFoundError):
            pyshm.Channel(missing)
        with pytest.raises(pyshm.ProtocolError):
            pyshm.Channel(foreign)
        with pytest.raises(ValueError):
            pyshm.Channel(name, create=True, capacity=8)
        with pytest.raises(ValueError):
            a.send_obj(bytes(a.max_message_size), timeout=0)
        with pytest.raises(ValueError):
            a.reserve(a.max_message_size + 1)
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            a.send_obj(lambda: 0, timeout=0)
        a.send(data, timeout=0)
        with pytest.raises(ValueError):
            a.recv_obj(timeout=0)                   # a plain message: left queued
        assert a.recv(timeout=0) == data
        assert a.queued == 0

    def cycle(i: int) -> None:
        data = i.to_bytes(8, "little")
        with pyshm.Channel(name, create=True, capacity=4096) as a:
            a.send(data, timeout=0)
            with pyshm.Channel(name) as b:
                assert b.recv(timeout=0) == data
                b.send(data + data, timeout=0)
                assert b.queued == 24
            with pytest.raises(FileExistsError):
                pyshm.Channel(name, create=True, capacity=4096)
            with pyshm.Channel(name, create=True, capacity=4096, exist_ok=True) as d:
                assert d.recv_into(buf, timeout=0) == 16
            with pytest.raises(ValueError):     # another capacity: refused after attaching
                pyshm.Channel(name, create=True, capacity=64, exist_ok=True)
            with pytest.raises(TimeoutError):
                a.recv(timeout=0)
            objects(a, i)
            loans(a, data)
            if i % 10 == 0:
                errors(a, data)
            a.unlink()
        if i % 10 == 0:
            r = pyshm.Channel(create=True, capacity=64)
            r.unlink()
            r.close()
            # Left to the garbage collector: dealloc must release the mapping.
            pyshm.Channel(name, create=True, capacity=64).unlink()
        if i % 100 == 0 and large is not None:
            with pyshm.Channel(big) as c:
                c.send_obj(large, timeout=0)
                got = c.recv_obj(timeout=0)
                assert got.nbytes == large.nbytes and got[i] == 1
                assert isinstance(message_buffer(got), pyshm.MessageBuffer)

    # Held open throughout: on Windows a name lives only while a handle does.
    with pyshm.SharedMemory(foreign, create=True, size=4096) as shm, \
            pyshm.Channel(big, create=True, capacity=(2 << 20) + (1 << 16)):
        shm.write(b"not a channel")
        assert_no_leaks(cycle)
