"""A native program on the C API and Python, across processes: Python ->
native -> Python over two channels, thousands of messages in order; a native
receiver blocked in pyshm_channel_recv (no timeout) woken by Python's send; a
native slot writer publishing flat out, read whole by another process and
killed mid-publish (the previous value stays, the next writer goes on); a
native waiter woken by a publish.  (Python reads the native writer once the
Python Slot type exists; the peer's values are self-describing for that.)"""

from __future__ import annotations

import random
import struct
import subprocess
import sys

import pyshm
from pyshm.pytest_plugin import DEADLINE

from .peer import capi_peer  # noqa: F401 (a fixture)

# Channel header (docs/format.md): the data wait word and its waiter count.
DATA_SEQ = 72
DATA_WAITERS = 76
SYNC_WAITERS = 0x80000000


def wait_until(predicate, what: str) -> None:
    """Poll PREDICATE (a cheap look at shared memory) until it holds, with a
    deadline; the other side's state is what is waited for, not a time."""
    import time

    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, f"{what}: not within {DEADLINE} s"
        time.sleep(0.001)


def test_python_native_python_over_two_channels(capi_peer, pyshm_names, pyshm_child):
    req_name, rep_name = pyshm_names(), pyshm_names()
    rng = random.Random(20)
    with pyshm.Channel(req_name, create=True, capacity=1 << 16) as req, \
            pyshm.Channel(rep_name, create=True, capacity=1 << 16) as rep:
        peer = pyshm_child.command(capi_peer, "echo", req_name, rep_name)
        peer.expect("ready")
        sent, received = [], 0
        count = 5000
        while received < count:
            # Up to 20 messages in flight, both channels see queues; 20 of the
            # largest (3 KiB) fit either ring, so neither side can block the
            # other for good.
            while len(sent) - received < 20 and len(sent) < count:
                i = len(sent)
                size = rng.choice([0, 1, 7, 8, 9, 100, 3000]) if i % 10 == 0 else \
                    rng.randrange(0, 300)
                body = struct.pack("<I", i) + bytes([i % 251]) * size
                req.send(body, timeout=DEADLINE)
                sent.append(body)
            reply = rep.recv(timeout=DEADLINE)
            assert reply == b"echo:" + sent[received], f"reply {received} out of order or torn"
            received += 1
        req.send(b"stop", timeout=DEADLINE)
        assert peer.finish().splitlines()[-1] == "all passed"


def test_native_receiver_blocked_without_timeout_is_woken(capi_peer, pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as ch, \
            pyshm.SharedMemory(pyshm_name) as raw:
        peer = pyshm_child.command(capi_peer, "recv", pyshm_name)
        peer.expect("ready")
        # Wait until it sleeps in the kernel: its registration is visible in
        # the header (the waiter bit of the futex word; the waiter count of
        # the Windows semaphore).  The fallback registers nothing: it naps.
        if pyshm.CHANNEL_WAIT == "futex":
            wait_until(lambda: struct.unpack_from("<I", raw.buf, DATA_SEQ)[0] & SYNC_WAITERS,
                       "the native receiver sleeps on the data word")
        elif sys.platform == "win32":
            wait_until(lambda: struct.unpack_from("<I", raw.buf, DATA_WAITERS)[0] >= 1,
                       "the native receiver waits on the data semaphore")
        ch.send(b"wake up")
        assert peer.finish() == "got wake up\n"


def read_value(capi_peer, name):
    """(generation, length) of one native read; it must be whole."""
    out = subprocess.run([str(capi_peer), "read", name], capture_output=True, text=True,
                         timeout=DEADLINE).stdout.split()
    assert out[0] == "value" and out[3] == "whole", out
    return int(out[1]), int(out[2])


def test_native_writer_read_and_killed_mid_publish(capi_peer, pyshm_name, pyshm_child):
    """A native writer publishing 4 KiB values flat out: every read by another
    native process is whole, generations grow; killed at any instant, the
    previous value stays readable and the next writer goes on."""
    keep = None
    try:
        last = 0
        for round_ in range(6):
            writer = pyshm_child.command(capi_peer, "publish", pyshm_name, 4096, 0)
            writer.expect("ready")
            if keep is None:
                keep = pyshm.SharedMemory(pyshm_name)   # Windows: the name lives with a handle
            for _ in range(3):
                gen, _ = read_value(capi_peer, pyshm_name)
                assert gen >= max(last, 1)      # never older than a value seen
                last = gen
            writer.kill()                               # mid-publish, most likely
            writer.wait()
            gen, _ = read_value(capi_peer, pyshm_name)
            assert gen >= last
            last = gen
        # The next writer goes on: its first value is a new generation.
        writer = pyshm_child.command(capi_peer, "publish", pyshm_name, 4096, 1)
        writer.expect("ready")
        assert writer.finish() == "all passed\n"
        gen, _ = read_value(capi_peer, pyshm_name)
        assert gen == last + 1
    finally:
        if keep is not None:
            keep.close()


def test_native_waiter_woken_by_a_publish(capi_peer, pyshm_name, pyshm_child):
    # The first writer holds the slot open (on Windows the name lives only
    # while a handle does) until its stdin ends.
    first = pyshm_child.command(capi_peer, "publish", pyshm_name, 256, 1, "hold")
    first.expect("ready")
    first.expect("all passed")
    waiter = pyshm_child.command(capi_peer, "wait", pyshm_name, 1, DEADLINE)
    waiter.expect("ready")
    second = pyshm_child.command(capi_peer, "publish", pyshm_name, 256, 1)
    assert second.finish() == "ready\nall passed\n"
    assert waiter.finish() == "generation 2\n"
    timeout = pyshm_child.command(capi_peer, "wait", pyshm_name, 2, 0.05)
    timeout.expect("ready")
    code_line = timeout.line()
    assert code_line.startswith("error -2 ") and "no new value before the timeout" in code_line
    timeout.wait(DEADLINE)
    assert timeout.returncode == 1
    assert first.finish() == ""
