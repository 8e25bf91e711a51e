"""pyshm.Channel in one process, used as documented: the API of DESIGN.md.

Bad arguments are in test_bad_input.py, corrupted shared memory in
test_hostile_memory.py, other processes in test_processes.py, dying peers
in test_faults.py.  test_fallback.py runs these files again against a build
with PYSHM_WAIT=fallback.
"""

import math
import os
import random
import struct
import sys
import threading

import pytest

import pyshm

from .waits import DEADLINE, wait_until_in_channel_wait

WINDOWS = sys.platform == "win32"


def test_build_uses_expected_wait():
    """The fallback run sets PYSHM_EXPECT_WAIT so a wrong build cannot pass."""
    expected = os.environ.get("PYSHM_EXPECT_WAIT")
    if expected:
        assert pyshm.CHANNEL_WAIT == expected
    assert pyshm.CHANNEL_WAIT in ("futex", "fallback", "win32")


# ---- construction and attributes --------------------------------------------

def test_attributes_and_repr(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=1001) as c:
        assert c.name == pyshm_name
        assert c.capacity == 1008                # rounded up to a multiple of 8
        assert c.max_message_size == 1000
        assert not c.closed
        r = repr(c)
        assert pyshm_name in r and "capacity=1008" in r and "queued=0" in r
        c.send(b"abc")
        assert "queued=16" in repr(c) and c.queued == 16
    assert c.closed
    assert "closed" in repr(c)
    c.close()                                   # idempotent
    # capacity stays readable after close (as the stdlib's size does)
    assert c.capacity == 1008 and c.max_message_size == 1000
    for call in (lambda: c.send(b"x"), c.recv, lambda: c.recv_into(bytearray(8)),
                 lambda: c.queued, lambda: c.messages, lambda: c.creator_pid):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_messages_counts_what_is_queued(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c, \
            pyshm.Channel(pyshm_name) as other:
        assert c.messages == 0
        for i, payload in enumerate([b"", b"a", b"x" * 100]):
            c.send(payload)
            assert c.messages == other.messages == i + 1
        assert c.queued == 8 + 16 + 112
        assert other.recv() == b""
        assert c.messages == 2
        other.recv()
        other.recv()
        assert c.messages == 0 and c.queued == 0
        # Round and round the ring: the counters keep matching.
        for i in range(100):
            c.send(b"y" * (i % 20), timeout=0)
            if i % 3 == 0:
                other.recv(timeout=0)
            else:
                while c.queued > 128:
                    other.recv(timeout=0)
            assert c.messages == _count_records(c)


def _count_records(c):
    """The messages queued, counted by walking the ring (this process is the
    only peer, so the bytes hold still); padding records (core/ring.h: bit
    63 of the length word) are no message."""
    with pyshm.SharedMemory(c.name, readonly=True) as raw:
        header = raw.read(512)
        write, = struct.unpack_from("=Q", header, 64)
        read, = struct.unpack_from("=Q", header, 128)
        count = 0
        while read < write:
            at = 512 + read % c.capacity
            word, = struct.unpack("=Q", raw.read(8, at))
            length = word & ((1 << 48) - 1)
            read += 8 + (length + 7) // 8 * 8
            count += not word >> 63
        return count


def test_messages_is_clamped_to_what_the_bytes_allow(pyshm_name):
    """The counters live in shared memory: garbage in them never gives a
    count that the queued bytes cannot hold, nor 0 while bytes are queued."""
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c:
        c.send(b"abc")
        with pyshm.SharedMemory(pyshm_name) as raw:
            sent = raw.read(8, 64 + 24)
            raw.write(struct.pack("=Q", 2**64 - 5), 64 + 24)       # far behind
            assert c.messages == 1
            raw.write(struct.pack("=Q", 10**6), 64 + 24)           # far ahead
            assert c.messages == 16 // 8
            raw.write(sent, 64 + 24)
        assert c.messages == 1


def test_creator_pid(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=64) as c:
        assert c.creator_pid == os.getpid()
        child = pyshm_child("import pyshm, sys\n"
                            "print(pyshm.Channel(sys.argv[1]).creator_pid)", pyshm_name)
        assert int(child.finish()) == os.getpid()


class Jobs(pyshm.Channel):
    """A subclass with its own __init__ and attributes."""

    def __init__(self, name: str, owner: str, create: bool = False) -> None:
        super().__init__(name, create=create, capacity=4096)
        self.owner = owner
        self.me = self              # a cycle: collected all the same

    def submit(self, text: str) -> None:
        self.send(text.encode())


def test_subclass_with_own_init_and_attributes(pyshm_name):
    import gc
    import weakref

    jobs = Jobs(pyshm_name, "alice", create=True)
    assert isinstance(jobs, pyshm.Channel) and jobs.owner == "alice"
    jobs.submit("resize")
    with Jobs(pyshm_name, "bob") as other:
        assert other.recv(timeout=0) == b"resize" and other.capacity == 4096
    ref = weakref.ref(jobs)
    jobs.close()
    del jobs, other
    gc.collect()
    assert ref() is None

    class Lazy(pyshm.Channel):
        def __init__(self) -> None:
            pass

    lazy = Lazy()
    assert lazy.name is None and lazy.closed and "not opened" in repr(lazy)
    with pytest.raises(ValueError, match="__init__ has not run"):
        lazy.send(b"x")
    # (Windows: the name went with the last handle above; make it again.)
    with Jobs(pyshm_name, "carol", create=WINDOWS) as again:
        with pytest.raises(TypeError, match="already initialised"):
            pyshm.Channel.__init__(again, pyshm_name)


def test_default_capacity(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True) as c:
        assert c.capacity == 1 << 20


def test_random_name():
    with pyshm.Channel(create=True, capacity=64) as c:
        try:
            assert len(c.name) <= 14
            with pyshm.Channel(c.name) as other:
                other.send(b"hi")
            assert c.recv(timeout=0) == b"hi"
        finally:
            c.unlink()


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="POSIX permission bits, read back from /dev/shm (Linux)")
def test_mode(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=64, mode=0o640):
        assert os.stat(f"/dev/shm/{pyshm_name}").st_mode & 0o777 == 0o640


def test_pickles_by_name(pyshm_channel):
    """A pickle holds the name (and spin=False when set), never the mapping:
    loading it opens the same channel (tests/channels/test_objects.py takes
    one to other processes)."""
    import pickle
    chan = pyshm_channel(4096)
    data = pickle.dumps(chan)
    assert len(data) < 200 and chan.name.encode() in data
    with pickle.loads(data) as again:
        assert again is not chan and again.name == chan.name and again.spin
        again.send(b"through the copy")
        assert chan.recv(timeout=0) == b"through the copy"
    with pyshm.Channel(chan.name, spin=False) as quiet:
        with pickle.loads(pickle.dumps(quiet)) as again:
            assert again.spin is False


def test_wait_policy(pyshm_name):
    """spin=True (the default) spins adaptively before blocking; spin=False
    blocks at once.  A property of this object, not of the channel: another
    handle of the same channel keeps its own."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as busy, \
            pyshm.Channel(pyshm_name, spin=False) as quiet:
        assert busy.spin is True and quiet.spin is False
        assert "spin=False" in repr(quiet) and "spin" not in repr(busy)
        busy.send(b"to the quiet one")
        assert quiet.recv(timeout=0) == b"to the quiet one"
        with pytest.raises(TimeoutError):
            quiet.recv(timeout=0.01)        # a timed wait, blocking at once
        quiet.send_obj({"back": True})
        assert busy.recv_obj() == {"back": True}
        assert pyshm.Channel(pyshm_name, spin=True).spin


# ---- messages in one process ------------------------------------------------

def test_sizes_from_zero_to_max(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c:
        rng = random.Random(1)
        # Every size, at every ring offset the cursors pass through (wraps).
        for size in list(range(0, c.max_message_size + 1)) * 2:
            data = rng.randbytes(size)
            c.send(data, timeout=0)
            assert c.recv(timeout=0) == data
        big = b"\xab" * c.max_message_size
        c.send(big, timeout=0)
        assert c.recv() == big


def test_timeout_on_empty_and_full(pyshm_channel):
    chan = pyshm_channel(4096)
    for t in (0, 0.05):
        with pytest.raises(TimeoutError):
            chan.recv(timeout=t)
        with pytest.raises(TimeoutError):
            chan.recv_into(bytearray(64), timeout=t)
    n = 0
    while True:
        try:
            chan.send(b"y" * 100, timeout=0)
        except TimeoutError:
            break
        n += 1
    assert n == chan.capacity // (8 + 104)     # length word + padded payload
    for t in (0, 0.05):
        with pytest.raises(TimeoutError):
            chan.send(b"y" * 100, timeout=t)
    for _ in range(n):                  # nothing lost or duplicated by the timeouts
        assert chan.recv(timeout=0) == b"y" * 100
    with pytest.raises(TimeoutError):
        chan.recv(timeout=0)


def test_large_copies_without_gil(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=1 << 20) as c:
        data = os.urandom(c.max_message_size)
        c.send(data)
        buf = bytearray(len(data))
        assert c.recv_into(buf) == len(data) and buf == data
        c.send(data[:300000])
        assert c.recv() == data[:300000]


@pytest.mark.parametrize("method", ["send", "recv", "recv_into"])
def test_large_copies_release_the_gil(pyshm_name, gil_released_during, method):
    # One long copy (a 64 MiB message): a second thread must make progress
    # while it runs; a copy under the GIL gives it none (preemption is off).
    with pyshm.Channel(pyshm_name, create=True, capacity=(64 << 20) + 8) as c:
        data = os.urandom(1 << 20) * 64
        buf = bytearray(len(data))
        got = []
        call = {"send": lambda: c.send(data),
                "recv": lambda: got.append(c.recv()),
                "recv_into": lambda: got.append(c.recv_into(buf))}[method]
        progressed = []
        for _ in range(5):      # a loaded machine may miss one copy, never five
            if method != "send":
                c.send(data)
            progressed.append(gil_released_during(call))
            if method == "send":
                c.recv_into(buf)
            if progressed[-1]:
                break
        assert any(progressed), progressed
        assert buf == data or got[-1] == data


def test_threads_in_one_process(pyshm_name):
    """Two sender and two receiver threads; a blocked wait releases the GIL."""
    n = 2000
    with pyshm.Channel(pyshm_name, create=True, capacity=1024) as c:
        got = [[], []]

        def sender(tag):
            for i in range(n):
                c.send(struct.pack("<II", tag, i))

        def receiver(k):
            while True:
                m = c.recv()
                if m == b"stop":
                    return
                got[k].append(struct.unpack("<II", m))

        threads = [threading.Thread(target=receiver, args=(k,)) for k in range(2)]
        threads += [threading.Thread(target=sender, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        for t in threads[2:]:
            t.join(DEADLINE)
        c.send(b"stop")
        c.send(b"stop")
        for t in threads[:2]:
            t.join(DEADLINE)
        assert not any(t.is_alive() for t in threads)
        for k in range(2):
            for tag in range(2):
                seq = [i for (t, i) in got[k] if t == tag]
                assert seq == sorted(seq)
        assert sorted(got[0] + got[1]) == sorted((t, i) for t in range(2) for i in range(n))


def test_close_from_another_thread_ends_blocked_recv(pyshm_name):
    c = pyshm.Channel(pyshm_name, create=True, capacity=256)
    result, tid = [], []
    started = threading.Event()

    def blocked():
        tid.append(threading.get_native_id())
        started.set()
        try:
            c.recv()
        except ValueError as e:
            result.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    try:
        assert started.wait(DEADLINE)
        # In the channel's wait: close() must cancel it (before, recv()
        # would only find the channel closed).
        wait_until_in_channel_wait(pyshm_name, tid[0], pyshm.CHANNEL_WAIT)
    finally:
        c.close()
        t.join(DEADLINE)
    assert not t.is_alive()
    assert len(result) == 1 and "closed" in str(result[0])
    assert c.closed


# ---- unlink ----------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="lists /dev/shm (Linux); Windows: test_name_lives_while_a_handle_is_open")
def test_unlink_leaves_nothing(pyshm_name):
    c = pyshm.Channel(pyshm_name, create=True, capacity=128)
    assert os.path.exists(f"/dev/shm/{pyshm_name}")
    c.unlink()
    assert not os.path.exists(f"/dev/shm/{pyshm_name}")
    assert not [f for f in os.listdir("/dev/shm") if pyshm_name in f]
    c.send(b"still mapped")             # existing mappings keep working
    assert c.recv() == b"still mapped"
    c.close()
    with pytest.raises(FileNotFoundError):
        pyshm.Channel(pyshm_name)
    with pytest.raises(FileNotFoundError):
        c.unlink()



@pytest.mark.skipif(not WINDOWS, reason="the Windows rule; POSIX: test_unlink_leaves_nothing")
def test_name_lives_while_a_handle_is_open(pyshm_name):
    c = pyshm.Channel(pyshm_name, create=True, capacity=128)
    c.unlink()                          # does nothing on Windows
    c.send(b"queued")
    with pyshm.Channel(pyshm_name) as other:
        assert other.recv(timeout=0) == b"queued"
    c.close()                           # the last handle: the name goes
    with pytest.raises(FileNotFoundError):
        pyshm.Channel(pyshm_name)
    c.unlink()                          # still harmless


def test_protocol_error_is_runtime_error():
    assert issubclass(pyshm.ProtocolError, RuntimeError)


def test_timeout_math_is_sane(pyshm_channel):
    chan = pyshm_channel(4096)
    # A huge timeout is "for ever"; inf too.  Both must still return data.
    chan.send(b"x")
    assert chan.recv(timeout=1e300) == b"x"
    chan.send(b"y")
    assert chan.recv(timeout=math.inf) == b"y"
