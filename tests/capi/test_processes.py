"""A native program on the C API and Python, across processes: Python ->
native -> Python over two channels, thousands of messages in order; a native
receiver blocked in pyshm_channel_recv (no timeout) woken by Python's send; a
native slot writer publishing flat out, read whole by another process and
killed mid-publish (the previous value stays, the next writer goes on); a
native waiter woken by a publish.  And the same with Python's Slot on the
other end: a native writer publishing flat out read 200,000 times from
Python, none torn (the peer's values are self-describing: see whole());
native writers stopped and killed mid-publish while Python reads, then a
native and a Python writer going on; a native waiter woken by Python's
publish, and Python's wait() woken by a native publish."""

from __future__ import annotations

import random
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Optional

import pyshm
from pyshm.pytest_plugin import DEADLINE

from .peer import capi_peer  # noqa: F401 (a fixture)

# Channel header (docs/format.md): the data wait word and its waiter count.
DATA_SEQ = 72
DATA_WAITERS = 76
SYNC_WAITERS = 0x80000000
# Slot header (docs/format.md): its wait word and waiter count.
GEN_SEQ = 72
GEN_WAITERS = 76


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


# ---- Python's Slot on the other end ---------------------------------------------------

# capi_peer.c's fill(): word 0 the length, word 1 the writer's sequence
# number SEQ, word i >= 2 SEQ * K + i (64-bit, wrapping).
K = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def seq_of(value: bytes) -> Optional[int]:
    """The sequence number of a value the peer's fill() wrote, or None when
    VALUE is not one whole such value (a mix of two, or a wrong length)."""
    n = len(value)
    if n < 16 or n % 8:
        return None
    words = struct.unpack(f"={n // 8}Q", value)
    if words[0] != n:
        return None
    seq = words[1]
    if any(words[i] != (seq * K + i) & MASK for i in range(2, n // 8)):
        return None
    return seq


def wait_until_sleeping_on(name: str) -> None:
    """Until some waiter sleeps on slot NAME, registered in its header (the
    futex build's waiter bit, Windows' waiter count); the fallback's waiters
    nap without registering: at once there."""
    if pyshm.CHANNEL_WAIT == "fallback":
        return
    offset, bit = (GEN_WAITERS, 0xFFFFFFFF) if sys.platform == "win32" else \
        (GEN_SEQ, SYNC_WAITERS)
    with pyshm.SharedMemory(name, readonly=True) as raw:
        wait_until(lambda: struct.unpack_from("=I", raw.buf, offset)[0] & bit,
                   f"a waiter sleeps on {name}")


READS = 200_000


def test_python_reads_a_native_writer_publishing_flat_out(capi_peer, pyshm_name, pyshm_child):
    """Issue 20's figure from the other side: a 24-byte value (16 or 24 bytes
    long) rewritten flat out by a native process, read 200,000 times by
    Python -- and on until 1,000 different values were seen, so the writer
    really wrote meanwhile: every read is one whole value, its generation the
    one its publish got (SEQ + 1: one writer since the slot was made), and
    generations never go back."""
    writer = pyshm_child.command(capi_peer, "publish", pyshm_name, 24, 0)
    writer.expect("ready")
    with pyshm.Slot(pyshm_name) as slot:
        snapshot = slot.snapshot
        reads = distinct = last = 0
        end = time.monotonic() + DEADLINE
        while reads < READS or distinct < 1000:
            generation, value = snapshot()
            seq = seq_of(value)
            assert seq is not None, f"read {reads} torn: generation {generation}, {value.hex()}"
            assert generation == seq + 1 and generation >= last, (generation, seq, last)
            distinct += generation != last
            last = generation
            reads += 1
            if reads % 10_000 == 0:
                assert time.monotonic() < end, f"{distinct} values in {reads} reads"
    writer.reap()


def test_native_writers_killed_mid_publish_while_python_reads(capi_peer, pyshm_name,
                                                              pyshm_child):
    """A native writer publishing 4 KiB values flat out, frozen (SIGSTOP, most
    likely inside a publish, holding the write lock) and killed: Python reads
    the previous value at once, whole, the same every time; six writers in
    turn, each taking the lock over from its killed predecessor; then a
    native writer and Python's own publish go on from the last generation.
    (Windows: TerminateProcess, without a freeze first.)"""
    slot: Optional[pyshm.Slot] = None
    try:
        last = 0
        for _ in range(6):
            writer = pyshm_child.command(capi_peer, "publish", pyshm_name, 4096, 0)
            writer.expect("ready")
            if slot is None:
                slot = pyshm.Slot(pyshm_name)   # Windows: the name lives with a handle
            assert slot.wait(last, timeout=DEADLINE) > last     # this writer's values
            if hasattr(signal, "SIGSTOP"):
                writer.send_signal(signal.SIGSTOP)
                first = slot.snapshot()
                assert seq_of(first[1]) is not None and first[0] > last
                for _ in range(100):     # nothing moves; no read waits for the writer
                    assert slot.snapshot() == first
            writer.kill()
            writer.wait()
            generation, value = slot.snapshot()
            assert seq_of(value) is not None and generation > last
            assert slot.snapshot() == (generation, value)
            last = generation
        writer = pyshm_child.command(capi_peer, "publish", pyshm_name, 4096, 1)
        assert writer.finish() == "ready\nall passed\n"
        generation, value = slot.snapshot()
        assert generation == last + 1 and seq_of(value) == 0
        assert slot.publish(b"from python") == last + 2
        assert slot.read() == b"from python"
    finally:
        if slot is not None:
            slot.close()


def test_native_waiter_woken_by_a_python_publish(capi_peer, pyshm_name, pyshm_child):
    with pyshm.Slot(pyshm_name, create=True, size=64) as slot:
        slot.publish(b"one")
        waiter = pyshm_child.command(capi_peer, "wait", pyshm_name, 1, DEADLINE)
        waiter.expect("ready")
        wait_until_sleeping_on(pyshm_name)
        assert slot.publish(b"two") == 2
        assert waiter.finish() == "generation 2\n"


def test_python_wait_woken_by_a_native_publish(capi_peer, pyshm_name, pyshm_child):
    """Slot.wait() in a thread of this process, asleep (registered in the
    header), woken by a native writer in another process."""
    with pyshm.Slot(pyshm_name, create=True, size=256) as slot:
        slot.publish(b"x" * 16)
        woken = []
        waiter = threading.Thread(target=lambda: woken.append(slot.wait(1, timeout=DEADLINE)))
        waiter.start()
        try:
            wait_until_sleeping_on(pyshm_name)
            writer = pyshm_child.command(capi_peer, "publish", pyshm_name, 256, 1)
            assert writer.finish() == "ready\nall passed\n"
        finally:
            waiter.join(DEADLINE)
        assert woken == [2]
        generation, value = slot.snapshot()
        assert generation == 2 and seq_of(value) == 0
