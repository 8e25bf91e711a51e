"""pyshm.Slot in one process, used as documented: the API of DESIGN.md.

Bad arguments are in test_bad_input.py, corrupted shared memory in
test_hostile_memory.py, other processes in test_processes.py, dying
writers and readers in test_faults.py, threads and fork in test_threads.py.
"""

import array
import ctypes
import gc
import os
import pickle
import struct
import sys
import threading
import weakref

import pytest

import pyshm

from .layout import lock_word
from .waits import DEADLINE, wait_until_in_slot_wait

WINDOWS = sys.platform == "win32"


def test_build_uses_expected_wait():
    """The fallback run (channels/test_fallback.py) sets PYSHM_EXPECT_WAIT so
    that a wrong build cannot pass."""
    expected = os.environ.get("PYSHM_EXPECT_WAIT")
    if expected:
        assert pyshm.CHANNEL_WAIT == expected
    assert pyshm.CHANNEL_WAIT in ("futex", "fallback", "win32")


# ---- construction and attributes ---------------------------------------------------

def test_attributes_and_repr(pyshm_name):
    with pyshm.Slot(pyshm_name, create=True, size=100) as s:
        assert s.name == pyshm_name and s.size == 100
        assert s.generation == 0 and not s.closed
        assert repr(s) == f"<pyshm.Slot name={pyshm_name!r} size=100 generation=0>"
        s.publish(b"abc")
        assert "generation=1" in repr(s)
    assert s.closed and "closed" in repr(s)
    s.close()                                   # idempotent
    assert s.size == 100                        # still readable after close
    for call in (s.read, s.snapshot, lambda: s.readinto(bytearray(8)),
                 lambda: s.publish(b"x"), s.reserve, lambda: s.wait(timeout=0),
                 lambda: s.generation, lambda: pickle.dumps(s), s.__enter__):
        with pytest.raises(ValueError, match="closed Slot"):
            call()


def test_opened_slot_reports_its_creators_size(pyshm_name):
    with pyshm.Slot(pyshm_name, create=True, size=4000) as s, pyshm.Slot(pyshm_name) as t:
        assert t.size == 4000
        s.publish(b"from the creator")
        assert t.read() == b"from the creator" and t.generation == 1


def test_random_name():
    with pyshm.Slot(create=True, size=8) as s:
        try:
            assert s.name.startswith("psm_") and len(s.name) == 14
            with pyshm.Slot(s.name) as again:
                assert again.size == 8
        finally:
            s.unlink()


def test_subclass_with_own_init_and_attributes(pyshm_name):
    class State(pyshm.Slot):
        def __init__(self, name, fields):
            super().__init__(name, create=True, size=8 * fields)
            self.fields = fields

        def put(self, *values):
            return self.publish(struct.pack(f"<{self.fields}q", *values))

    with State(pyshm_name, 3) as s:
        assert isinstance(s, pyshm.Slot) and s.fields == 3
        assert s.put(1, 2, 3) == 1
        assert struct.unpack("<3q", s.read()) == (1, 2, 3)
        assert repr(s).startswith("<pyshm.Slot")
        ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None


def test_init_runs_once_and_unopened_objects_say_so(pyshm_name):
    s = pyshm.Slot.__new__(pyshm.Slot)
    assert repr(s) == "<pyshm.Slot not opened>" and s.name is None and s.closed
    with pytest.raises(ValueError, match="__init__ has not run"):
        s.read()
    with pytest.raises(ValueError, match="__init__ has not run"):
        s.unlink()
    s.__init__(pyshm_name, create=True, size=16)
    with pytest.raises(TypeError, match="already initialised"):
        s.__init__(pyshm_name)
    s.close()


def test_pickles_by_name(pyshm_slot):
    s = pyshm_slot(32)
    data = pickle.dumps(s)
    assert len(data) < 200 and s.name.encode() in data
    with pickle.loads(data) as again:
        assert type(again) is pyshm.Slot and again.name == s.name and again is not s
        again.publish(b"through the copy")
        assert s.read() == b"through the copy"


def test_context_manager_closes_but_keeps_name_and_value(pyshm_name):
    # A second handle: on Windows a name lives only while a handle does.
    with pyshm.Slot(pyshm_name, create=True, size=8) as keeper:
        with pyshm.Slot(pyshm_name) as s:
            s.publish(b"kept")
        assert s.closed and not keeper.closed
        with pyshm.Slot(pyshm_name) as again:
            assert again.snapshot() == (1, b"kept")


def test_exist_ok_opens_with_the_same_size_or_creates(pyshm_name, pyshm_names):
    with pyshm.Slot(pyshm_name, create=True, size=64) as s:
        s.publish(b"first")
        with pyshm.Slot(pyshm_name, create=True, exist_ok=True, size=64) as again:
            assert again.read() == b"first" and again.generation == 1
    with pyshm.Slot(pyshm_names(), create=True, exist_ok=True, size=8) as fresh:
        assert fresh.size == 8 and fresh.generation == 0


def test_track_registers_creators_and_unlink_forgets(pyshm_name):
    from pyshm import _track
    with pyshm.Slot(pyshm_name, create=True, size=8, track=True) as s:
        if not WINDOWS:
            assert pyshm_name in _track.tracked()
        with pyshm.Slot(pyshm_name, track=True):   # only opened: nothing to track
            pass
        s.unlink()
        assert pyshm_name not in _track.tracked()


# ---- values ------------------------------------------------------------------------

def test_nothing_published_yet(pyshm_slot):
    s = pyshm_slot(16)
    buf = bytearray(b"\xee" * 16)
    assert s.read() == b"" and s.snapshot() == (0, b"") and s.generation == 0
    assert s.readinto(buf) == 0 and buf == b"\xee" * 16
    with pytest.raises(TimeoutError):
        s.wait(timeout=0)


@pytest.mark.parametrize("size", [1, 64, 100, 4096, 70000, 1 << 20])
def test_values_of_every_length_round_trip(pyshm_slot, size):
    """Lengths 0 to size (small ones, the cell's padding, the copies made
    without the GIL from 64 KiB on); each publish is the next generation."""
    s = pyshm_slot(size)
    lengths = sorted({0, 1, size // 2, max(size - 1, 0), size} |
                     set(range(0, min(size, 130))))
    for n, length in enumerate(lengths, 1):
        data = os.urandom(length)
        assert s.publish(data) == n
        assert s.read() == data and s.snapshot() == (n, data) and s.generation == n
        buf = bytearray(size + 1)
        assert s.readinto(buf) == length and buf[:length] == data
        assert buf[length:] == bytes(size + 1 - length)     # the rest untouched


@pytest.mark.parametrize("data", [bytearray(b"bytearray"), memoryview(b"a memoryview"),
                                  array.array("i", [1, 2, 3]), b""])
def test_publish_takes_any_bytes_like(pyshm_slot, data):
    s = pyshm_slot(64)
    s.publish(data)
    assert s.read() == bytes(memoryview(data).cast("B"))


def test_readinto_a_ctypes_structure(pyshm_slot):
    class State(ctypes.Structure):
        _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("n", ctypes.c_int64)]

    s = pyshm_slot(ctypes.sizeof(State))
    s.publish(bytes(State(1.5, -2.25, 7)))
    got = State()
    assert s.readinto(got) == ctypes.sizeof(State)
    assert (got.x, got.y, got.n) == (1.5, -2.25, 7)


def test_numpy_arrays_both_ways(pyshm_slot, numpy):
    s = pyshm_slot(8 * 1000)
    values = numpy.arange(1000, dtype=numpy.float64)
    s.publish(values)
    out = numpy.zeros(1000, dtype=numpy.float64)
    assert s.readinto(out) == values.nbytes
    assert (out == values).all()
    assert numpy.frombuffer(s.read(), dtype=numpy.float64).tolist() == values.tolist()


def test_another_object_sees_each_value(pyshm_slot):
    s = pyshm_slot(32)
    with pyshm.Slot(s.name) as other:
        for i in range(100):
            assert s.publish(b"value %d" % i) == i + 1
            assert other.snapshot() == (i + 1, b"value %d" % i)
        assert other.publish(b"the other way") == 101
        assert s.read() == b"the other way"


# ---- reserve() --------------------------------------------------------------------

def test_reserve_publishes_on_a_normal_exit(pyshm_slot):
    s = pyshm_slot(16)
    s.publish(b"before")
    loan = s.reserve()
    assert loan.size == 16 and not loan.active
    with loan as buf:
        assert isinstance(buf, memoryview) and len(buf) == 16 and not buf.readonly
        assert loan.active
        buf[:] = b"0123456789abcdef"
        assert s.read() == b"before"            # not seen before the block ends
    assert not loan.active
    assert s.snapshot() == (2, b"0123456789abcdef")
    with pytest.raises(ValueError):
        buf[0]                                  # released at the end
    with s.reserve(3) as buf:                   # a shorter value
        buf[:] = b"xyz"
    assert s.snapshot() == (3, b"xyz")
    with s.reserve(0) as buf:
        assert len(buf) == 0
    assert s.snapshot() == (4, b"")
    assert lock_word(s.name) == 0


def test_reserve_discards_on_an_exception(pyshm_slot):
    s = pyshm_slot(8)
    s.publish(b"kept")
    with pytest.raises(KeyError):
        with s.reserve() as buf:
            buf[:] = b"XXXXXXXX"
            raise KeyError("no")
    assert s.snapshot() == (1, b"kept")
    assert lock_word(s.name) == 0              # the lock was let go
    assert s.publish(b"next") == 2


def test_reserve_with_exports_alive_ends_when_they_go(pyshm_slot):
    """As a channel's loans: an export alive at the end refuses it
    (BufferError); it ends as a failed block when the export goes."""
    s = pyshm_slot(8)
    s.publish(b"kept")
    with pytest.raises(BufferError, match="nothing is published"):
        with s.reserve() as buf:
            buf[:] = b"YYYYYYYY"
            kept = buf[2:5]
    assert lock_word(s.name) != 0              # held until the export goes
    assert s.snapshot() == (1, b"kept")
    kept.release()
    assert lock_word(s.name) == 0
    assert s.snapshot() == (1, b"kept") and s.publish(b"next") == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="private copies in place need Linux's mremap; elsewhere the "
                           "loan keeps its lock until its exports go (docs/windows.md)")
def test_a_refused_reserve_ends_at_close(pyshm_name):
    """close() ends a refused block at the latest: its export is made private
    memory (still valid, no longer the cell) and the write lock is let go."""
    s = pyshm.Slot(pyshm_name, create=True, size=8192)
    s.publish(b"kept")
    loan = s.reserve(100)
    with pytest.raises(BufferError):
        with loan as buf:
            buf[:4] = b"ZZZZ"
            kept = buf[:4]
    s.close()
    assert "ended at close()" in repr(loan)
    assert lock_word(pyshm_name) == 0
    with pyshm.Slot(pyshm_name) as again:
        assert again.publish(b"the lock is free") == 2
        kept[:] = b"late"                       # the export's own memory now
        assert again.read() == b"the lock is free"
    assert bytes(kept) == b"late"
    kept.release()


def test_calls_inside_the_own_block_are_refused(pyshm_slot):
    s = pyshm_slot(8)
    with s.reserve() as buf:
        with pytest.raises(RuntimeError, match="would wait for itself"):
            s.publish(b"x")
        with pytest.raises(RuntimeError, match="would wait for itself"):
            with s.reserve():
                pass
        assert s.read() == b"" and s.generation == 0    # readers never wait
        buf[:2] = b"ok"
    assert s.snapshot() == (1, b"ok" + bytes(6))


# ---- wait() -----------------------------------------------------------------------

def test_wait_for_a_newer_generation(pyshm_slot):
    s = pyshm_slot(8)
    with pyshm.Slot(s.name) as other:
        with pytest.raises(TimeoutError):
            other.wait(timeout=0)
        with pytest.raises(TimeoutError):
            other.wait(timeout=0.02)
        s.publish(b"one")
        assert other.wait(timeout=0) == 1
        # after=None: newer than what this object returned or saw last.
        with pytest.raises(TimeoutError):
            other.wait(timeout=0)
        s.publish(b"two")
        s.publish(b"three")
        assert other.wait() == 3                # several at once: the newest
        assert other.wait(after=0, timeout=0) == 3
        assert other.wait(after=2, timeout=0) == 3
        with pytest.raises(TimeoutError):
            other.wait(after=3, timeout=0)
        # Every way of seeing a generation counts as seen.
        s.publish(b"four")
        assert other.read() == b"four"
        with pytest.raises(TimeoutError):
            other.wait(timeout=0)
        s.publish(b"five")
        assert other.generation == 5
        with pytest.raises(TimeoutError):
            other.wait(timeout=0)
        other.publish(b"six")
        with pytest.raises(TimeoutError):
            other.wait(timeout=0)


def test_wait_wakes_for_a_publish_in_another_thread(pyshm_slot):
    s = pyshm_slot(8)
    with pyshm.Slot(s.name) as waiter:
        got, tid = [], []

        def wait():
            tid.append(threading.get_native_id())
            got.append(waiter.wait(timeout=DEADLINE))

        t = threading.Thread(target=wait)
        t.start()
        while not tid:
            pass
        wait_until_in_slot_wait(s.name, tid[0])
        s.publish(b"wake up")
        t.join(DEADLINE)
        assert not t.is_alive() and got == [1]


def test_close_from_another_thread_ends_a_blocked_wait(pyshm_name):
    s = pyshm.Slot(pyshm_name, create=True, size=8)
    result, tid = [], []

    def blocked():
        tid.append(threading.get_native_id())
        try:
            s.wait()
        except ValueError as e:
            result.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    try:
        while not tid:
            pass
        wait_until_in_slot_wait(pyshm_name, tid[0])
    finally:
        s.close()
        t.join(DEADLINE)
    assert not t.is_alive()
    assert len(result) == 1 and "closed" in str(result[0])


# ---- unlink ------------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists /dev/shm (Linux)")
def test_unlink_leaves_nothing_and_the_mapping_works_on(pyshm_name):
    s = pyshm.Slot(pyshm_name, create=True, size=8)
    s.unlink()
    assert not os.path.exists(f"/dev/shm/{pyshm_name}")
    assert s.publish(b"mapped") == 1 and s.read() == b"mapped"
    s.close()
    with pytest.raises(FileNotFoundError):
        pyshm.Slot(pyshm_name)


@pytest.mark.skipif(not WINDOWS, reason="the Windows rule")
def test_name_lives_while_a_handle_is_open(pyshm_name):
    s = pyshm.Slot(pyshm_name, create=True, size=8)
    s.unlink()                                  # does nothing on Windows
    s.publish(b"kept")
    with pyshm.Slot(pyshm_name) as other:
        assert other.read() == b"kept"
    s.close()
    with pytest.raises(FileNotFoundError):
        pyshm.Slot(pyshm_name)


def test_signature_for_help():
    import inspect
    sig = inspect.signature(pyshm.Slot)
    assert list(sig.parameters) == ["name", "create", "size", "exist_ok", "mode", "track",
                                    "wait"]
    assert str(sig.parameters["mode"].default) == "0o600"
    assert list(inspect.signature(pyshm.Slot.wait).parameters) == ["self", "after", "timeout"]
