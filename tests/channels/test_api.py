"""pyshm.Channel: messages between processes through a named segment.

Run against the build on sys.path (the worktree's); test_channel_fallback.py
runs this same file again against a build with PYSHM_WAIT=fallback.
"""

import hashlib
import json
import math
import os
import random
import signal
import struct
import sys
import threading
import time

import pytest

import pyshm
from channel_helpers import (Child, DEADLINE, sigint, unique_name, unlink_quietly,
                             wait_until_sleeping)

HEADER = 512    # chan.h: CHAN_HEADER_SIZE
WRITE_CURSOR, READ_CURSOR = 64, 128
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /dev/shm")


@pytest.fixture
def name():
    n = unique_name()
    yield n
    unlink_quietly(n)


@pytest.fixture
def chan(name):
    with pyshm.Channel(name, create=True, capacity=4096) as c:
        yield c


def test_build_uses_expected_wait():
    """The fallback run sets PYSHM_EXPECT_WAIT so a wrong build cannot pass."""
    expected = os.environ.get("PYSHM_EXPECT_WAIT")
    if expected:
        assert pyshm.CHANNEL_WAIT == expected
    assert pyshm.CHANNEL_WAIT in ("futex", "fallback", "win32")


# ---- construction and attributes --------------------------------------------

def test_attributes_and_repr(name):
    with pyshm.Channel(name, create=True, capacity=1001) as c:
        assert c.name == name
        assert c.capacity == 1008                # rounded up to a multiple of 8
        assert c.max_message_size == 1000
        assert not c.closed
        r = repr(c)
        assert name in r and "capacity=1008" in r and "queued=0" in r
        c.send(b"abc")
        assert "queued=16" in repr(c) and c.queued == 16
    assert c.closed
    assert "closed" in repr(c)
    c.close()                                   # idempotent
    for call in (lambda: c.send(b"x"), c.recv, lambda: c.recv_into(bytearray(8)),
                 lambda: c.capacity):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_default_capacity(name):
    with pyshm.Channel(name, create=True) as c:
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


def test_constructor_errors(name):
    with pytest.raises(ValueError):
        pyshm.Channel()
    with pytest.raises(FileNotFoundError):
        pyshm.Channel(name)
    with pytest.raises(ValueError, match="capacity"):
        pyshm.Channel(name, create=True, capacity=8)
    with pytest.raises(ValueError):
        pyshm.Channel(name, create=True, capacity=-1)
    with pytest.raises(TypeError):
        pyshm.Channel(name, create=True, capacity=1.5)
    with pytest.raises(TypeError):
        pyshm.Channel(b"bytes", create=True)
    with pytest.raises(ValueError):
        pyshm.Channel("a/b", create=True)
    assert not os.path.exists(f"/dev/shm/{name}")
    with pyshm.Channel(name, create=True, capacity=128) as c:
        with pytest.raises(FileExistsError):
            pyshm.Channel(name, create=True)
        with pyshm.Channel(name, create=True, capacity=4096, exist_ok=True) as d:
            assert d.capacity == 128                # the existing channel's
            d.send(b"via exist_ok")
        assert c.recv(timeout=0) == b"via exist_ok"


@posix_only
def test_mode(name):
    with pyshm.Channel(name, create=True, capacity=64, mode=0o640):
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o640


def test_not_picklable(chan):
    import pickle
    with pytest.raises(TypeError, match="name"):
        pickle.dumps(chan)


# ---- messages in one process ------------------------------------------------

def test_sizes_from_zero_to_max(name):
    with pyshm.Channel(name, create=True, capacity=256) as c:
        rng = random.Random(1)
        # Every size, at every ring offset the cursors pass through (wraps).
        for size in list(range(0, c.max_message_size + 1)) * 2:
            data = rng.randbytes(size)
            c.send(data, timeout=0)
            assert c.recv(timeout=0) == data
        big = b"\xab" * c.max_message_size
        c.send(big, timeout=0)
        assert c.recv() == big


def test_too_large_is_valueerror_and_nothing_sent(chan):
    with pytest.raises(ValueError, match="larger"):
        chan.send(b"x" * (chan.max_message_size + 1))
    with pytest.raises(TimeoutError):
        chan.recv(timeout=0)


def test_recv_into_too_small_keeps_message(chan):
    chan.send(b"0123456789")
    buf = bytearray(4)
    with pytest.raises(ValueError, match="stays queued"):
        chan.recv_into(buf, timeout=0)
    big = bytearray(32)
    assert chan.recv_into(big, timeout=0) == 10
    assert bytes(big[:10]) == b"0123456789"
    chan.send(b"")
    assert chan.recv_into(bytearray(0)) == 0


def test_argument_types(chan):
    with pytest.raises(TypeError, match="encode"):
        chan.send("text")
    with pytest.raises(TypeError):
        chan.recv_into(b"read-only bytes")
    with pytest.raises(TypeError):
        chan.recv(timeout="1")
    with pytest.raises(TypeError):
        chan.send()
    with pytest.raises(TypeError):
        chan.recv(1, 2)
    chan.send(memoryview(b"abcdef")[1:4])
    chan.send(data=bytearray(b"kw"), timeout=1)
    assert chan.recv(timeout=0) == b"bcd"
    assert chan.recv(timeout=None) == b"kw"


@pytest.mark.parametrize("bad", [-1, -0.001, float("nan"), float("-inf")])
def test_bad_timeouts(chan, bad):
    with pytest.raises(ValueError):
        chan.recv(timeout=bad)
    with pytest.raises(ValueError):
        chan.send(b"x", timeout=bad)
    with pytest.raises(ValueError):
        chan.recv_into(bytearray(8), timeout=bad)


def test_timeout_on_empty_and_full(chan):
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


def test_large_copies_without_gil(name):
    with pyshm.Channel(name, create=True, capacity=1 << 20) as c:
        data = os.urandom(c.max_message_size)
        c.send(data)
        buf = bytearray(len(data))
        assert c.recv_into(buf) == len(data) and buf == data
        c.send(data[:300000])
        assert c.recv() == data[:300000]


def test_threads_in_one_process(name):
    """Two sender and two receiver threads; a blocked wait releases the GIL."""
    n = 2000
    with pyshm.Channel(name, create=True, capacity=1024) as c:
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


def test_close_from_another_thread_ends_blocked_recv(name):
    c = pyshm.Channel(name, create=True, capacity=256)
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
        wait_until_sleeping(os.getpid(), tid[0])
    finally:
        c.close()
        t.join(DEADLINE)
    assert not t.is_alive()
    assert len(result) == 1 and "closed" in str(result[0])
    assert c.closed


# ---- unlink, not-a-channel, corruption --------------------------------------

@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_unlink_leaves_nothing(name):
    c = pyshm.Channel(name, create=True, capacity=128)
    assert os.path.exists(f"/dev/shm/{name}")
    c.unlink()
    assert not os.path.exists(f"/dev/shm/{name}")
    assert not [f for f in os.listdir("/dev/shm") if name in f]
    c.send(b"still mapped")             # existing mappings keep working
    assert c.recv() == b"still mapped"
    c.close()
    with pytest.raises(FileNotFoundError):
        pyshm.Channel(name)
    with pytest.raises(FileNotFoundError):
        c.unlink()


@pytest.mark.parametrize("content", ["random", "zeros", "small", "version", "capacity"])
def test_not_a_channel_is_refused(name, content):
    size = 64 if content == "small" else 8192
    with pyshm.SharedMemory(name, create=True, size=size) as shm:
        if content == "random":
            shm.write(random.Random(5).randbytes(size))
        elif content in ("version", "capacity"):
            with pyshm.Channel(name + "x", create=True, capacity=1024) as good:
                try:
                    raw = pyshm.SharedMemory(name + "x")
                    header = bytearray(raw.read(HEADER))
                    raw.close()
                finally:
                    good.unlink()
            if content == "version":
                header[4:8] = struct.pack("<I", 99)
            else:
                header[8:16] = struct.pack("<Q", 1 << 40)
            shm.write(header)
        with pytest.raises(pyshm.ProtocolError):
            pyshm.Channel(name)
        with pytest.raises(pyshm.ProtocolError):
            pyshm.Channel(name, create=True, exist_ok=True)


def _raw(name):
    return pyshm.SharedMemory(name)


@pytest.mark.parametrize("where", ["write_cursor", "read_cursor", "both", "length"])
def test_corrupt_cursor_or_length(name, where):
    with pyshm.Channel(name, create=True, capacity=1024) as c, _raw(name) as raw:
        c.send(b"first")
        if where == "write_cursor":
            raw.write(struct.pack("<Q", 1 << 50), WRITE_CURSOR)
        elif where == "read_cursor":
            raw.write(struct.pack("<Q", 12345), READ_CURSOR)
        elif where == "both":
            raw.write(struct.pack("<Q", 2**64 - 8), WRITE_CURSOR)
            raw.write(struct.pack("<Q", 2**64 - 8 - 4096), READ_CURSOR)
        else:
            raw.write(struct.pack("<Q", 10**12), HEADER)   # the first record's length
        with pytest.raises(pyshm.ProtocolError):
            c.recv(timeout=0.2)
        if where == "read_cursor":
            # A sender checks the receivers' cursor only when the one it saw
            # last no longer shows room (it only ever understates the room):
            # the corruption is found once it must look, at the latest when
            # the ring would be full.
            with pytest.raises(pyshm.ProtocolError):
                for _ in range(c.capacity // 8 + 1):
                    c.send(b"x", timeout=0.2)
        elif where != "length":
            with pytest.raises(pyshm.ProtocolError):
                c.send(b"x", timeout=0.2)
        repr(c)


def test_random_garbage_never_crashes(name):
    """Scribble random bytes over header and ring; every call must end with a
    result, ProtocolError or TimeoutError -- never a crash or a hang."""
    rng = random.Random(1234)
    outcomes = set()
    for round_ in range(60):
        n = f"{name}{round_}"
        try:
            with pyshm.Channel(n, create=True, capacity=512) as c, _raw(n) as raw:
                for i in range(rng.randrange(0, 6)):
                    c.send(rng.randbytes(rng.randrange(0, 100)), timeout=0)
                for _ in range(rng.randrange(1, 8)):
                    off = rng.randrange(0, raw.size)
                    raw.write(rng.randbytes(min(rng.randrange(1, 64), raw.size - off)), off)
                for op in range(6):
                    try:
                        if op % 3 == 0:
                            c.send(rng.randbytes(rng.randrange(0, 200)), timeout=0.02)
                        elif op % 3 == 1:
                            c.recv(timeout=0.02)
                        else:
                            c.recv_into(bytearray(rng.randrange(0, 600)), timeout=0.02)
                        outcomes.add("ok")
                    except (pyshm.ProtocolError, TimeoutError, ValueError) as e:
                        outcomes.add(type(e).__name__)
                repr(c)
                try:
                    pyshm.Channel(n).close()
                except pyshm.ProtocolError:
                    outcomes.add("refused")
        finally:
            unlink_quietly(n)
    assert "ProtocolError" in outcomes


# ---- between processes ----------------------------------------------------------

ECHO = """
import hashlib, sys, pyshm
req, rep = pyshm.Channel(sys.argv[1]), pyshm.Channel(sys.argv[2])
print("ready", flush=True)
buf = bytearray(req.max_message_size)
while True:
    n = req.recv_into(buf)
    data = bytes(buf[:n])
    if data == b"stop":
        break
    rep.send(hashlib.sha256(data).digest() + data[:8])
print("done", flush=True)
"""


def test_cross_process_echo_with_checksums(name):
    rep_name = name + "r"
    try:
        with pyshm.Channel(name, create=True, capacity=1 << 16) as req, \
                pyshm.Channel(rep_name, create=True, capacity=4096) as rep, \
                Child(ECHO, name, rep_name) as child:
            child.expect("ready")
            rng = random.Random(7)
            top = req.max_message_size
            sizes = [0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096, 4097, top - 1, top]
            sizes += [rng.randrange(0, top + 1) for _ in range(300)]
            for size in sizes:
                data = rng.randbytes(size)
                req.send(data, timeout=DEADLINE)
                answer = rep.recv(timeout=DEADLINE)
                assert answer == hashlib.sha256(data).digest() + data[:8], size
            req.send(b"stop")
            child.expect("done")
            child.finish()
    finally:
        unlink_quietly(rep_name)


SENDER = """
import struct, sys, pyshm
c = pyshm.Channel(sys.argv[1])
tag, n = int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    c.send(struct.pack("<II", tag, i) + bytes(i % 300), timeout=60)
print("sent", flush=True)
"""

RECEIVER = """
import json, struct, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
got = []
while True:
    m = c.recv(timeout=60)
    if m == b"stop":
        break
    tag, i = struct.unpack_from("<II", m)
    assert m[8:] == bytes(i % 300)
    got.append([tag, i])
print(json.dumps(got), flush=True)
"""


def test_many_senders_many_receivers(name):
    senders, receivers, n = 3, 3, 3000
    children = []
    try:
        with pyshm.Channel(name, create=True, capacity=2048) as c:
            for r in range(receivers):
                children.append(Child(RECEIVER, name))
            for s in range(senders):
                children.append(Child(SENDER, name, s, n))
            for ch in children:
                ch.expect("ready")
            for ch in children[receivers:]:
                ch.send_line("go")
            for ch in children[receivers:]:
                ch.expect("sent")
                ch.finish()
            for _ in range(receivers):
                c.send(b"stop", timeout=DEADLINE)
            everything = []
            for ch in children[:receivers]:
                got = [tuple(x) for x in json.loads(ch.line())]
                ch.finish()
                for tag in range(senders):          # each sender's order kept
                    seq = [i for t, i in got if t == tag]
                    assert seq == sorted(seq)
                everything += got
            assert len(everything) == senders * n                     # no loss
            assert set(everything) == {(t, i) for t in range(senders) for i in range(n)}
    finally:
        for ch in children:
            ch.close()


KILLED_SENDER = """
import hashlib, os, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    body = os.urandom(1000 + (i * 7919) % 60000)
    c.send(hashlib.sha256(body).digest() + body)
    i += 1
"""


@posix_only
def test_sigkill_sender_mid_stream_repeatedly(name):
    rng = random.Random(3)
    with pyshm.Channel(name, create=True, capacity=200000) as c:
        total = 0
        for round_ in range(8):
            with Child(KILLED_SENDER, name) as child, Child(KILLED_SENDER, name) as other:
                child.expect("ready")
                other.expect("ready")
                want = rng.randrange(1, 40)
                for _ in range(want):
                    m = c.recv(timeout=DEADLINE)
                    assert hashlib.sha256(m[32:]).digest() == m[:32]
                    total += 1
                # Kill one sender while both are streaming: it dies at whatever
                # instant, possibly holding the send lock mid-record.
                os.kill(child.pid, signal.SIGKILL)
                child.kill()
                # The other sender (and we) must go on: no partial message,
                # no stuck lock.
                for _ in range(30):
                    m = c.recv(timeout=DEADLINE)
                    assert hashlib.sha256(m[32:]).digest() == m[:32]
                    total += 1
                other.kill()
            # Drain what the dead ones left: all whole.
            while True:
                try:
                    m = c.recv(timeout=0)
                except TimeoutError:
                    break
                assert hashlib.sha256(m[32:]).digest() == m[:32]
            c.send(b"after round %d" % round_, timeout=DEADLINE)
            assert c.recv(timeout=0) == b"after round %d" % round_
        assert total > 0


BLOCKED_RECEIVER = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
c.recv()
print("got one", flush=True)
"""


@posix_only
def test_sigkill_blocked_receiver_blocks_nobody(name):
    with pyshm.Channel(name, create=True, capacity=256) as c:
        for _ in range(3):
            with Child(BLOCKED_RECEIVER, name) as child:
                child.expect("ready")
                wait_until_sleeping(child.pid)
                os.kill(child.pid, signal.SIGKILL)
                child.kill()
        with Child(BLOCKED_RECEIVER, name) as child:
            child.expect("ready")
            c.send(b"one", timeout=DEADLINE)
            child.expect("got one")
            child.finish()
        c.send(b"two", timeout=0)
        assert c.recv(timeout=0) == b"two"


INTERRUPTED = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
mode = sys.argv[2]
if mode == "send":
    while True:
        try:
            c.send(b"f" * 40, timeout=0)
        except TimeoutError:
            break
print("ready", flush=True)
try:
    if mode == "send":
        c.send(b"f" * 40)
    else:
        c.recv()
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
print("again", flush=True)
if mode == "send":
    c.send(b"after", timeout=60)
    print("sent after", flush=True)
else:
    print(c.recv(timeout=60).decode(), flush=True)
"""


@posix_only
@pytest.mark.parametrize("mode", ["recv", "send"])
def test_sigint_interrupts_blocked_call(name, mode):
    with pyshm.Channel(name, create=True, capacity=256) as c, \
            Child(INTERRUPTED, name, mode) as child:
        child.expect("ready")
        wait_until_sleeping(child.pid)
        sigint(child.pid)
        child.expect("KeyboardInterrupt")
        child.expect("again")
        if mode == "recv":
            c.send(b"hello after", timeout=DEADLINE)
            child.expect("hello after")
        else:
            got = []
            while len(got) < 20 and b"after" not in got:
                got.append(c.recv(timeout=DEADLINE))
            assert b"after" in got
            child.expect("sent after")
        child.finish()


GIL_PROBE = """
import sys, threading, pyshm
c = pyshm.Channel(sys.argv[1])
t = threading.Thread(target=lambda: print("thread got", c.recv().decode(), flush=True))
t.start()
# While the thread waits in recv() the main thread keeps running Python code.
total = sum(range(3_000_000))
print("main ran", total > 0, flush=True)
c.send(b"ping")
t.join()
"""


def test_blocked_recv_releases_gil(name):
    with pyshm.Channel(name, create=True, capacity=256), Child(GIL_PROBE, name) as child:
        assert child.line() == "main ran True"
        assert child.line() == "thread got ping"
        child.finish()


def test_protocol_error_is_runtime_error():
    assert issubclass(pyshm.ProtocolError, RuntimeError)


def test_timeout_math_is_sane(chan):
    # A huge timeout is "for ever"; inf too.  Both must still return data.
    chan.send(b"x")
    assert chan.recv(timeout=1e300) == b"x"
    chan.send(b"y")
    assert chan.recv(timeout=math.inf) == b"y"
