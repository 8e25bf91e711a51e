"""pyshm.Slot between processes: reads never torn under a writer that
publishes flat out (small values and 64 KiB ones: the reader still gets its
reads done), the generation and the value always together, writers in
several processes taking turns (every generation handed out once), waiters
in other processes woken by a publish, a blocked wait interrupted by
SIGINT, a slot passed to a 'spawn' child by name.
"""

import json
import os
import signal
import struct
import sys

import pytest

import pyshm

from .waits import DEADLINE, wait_until_in_slot_wait

posix_only = pytest.mark.skipif(
    sys.platform == "win32",
    reason="sends SIGINT to another process, which Windows cannot (Ctrl-C there: "
           "tests/windows/test_channels.py)")

# A value the writer of generation G publishes: G in its first 8 bytes, then
# LEN - 8 bytes that G and the position decide.  A read that mixes two
# values (or a value with another generation) shows at once.
VALUE = r"""
import struct
def value(g, size):
    n = 8 + (g * 7919) % (size - 7)
    body = bytes(((g + i * 31) & 0xFF for i in range(64)))
    return (struct.pack("<Q", g) + body * (n // 64 + 1))[:n]
"""
exec(VALUE)     # value(g, size), for this process too


def whole(gen, data, size):
    return data == value(gen, size)     # noqa: F821 (defined by exec above)


WRITER = VALUE + r"""
import sys, pyshm
s = pyshm.Slot(sys.argv[1])
size = s.size
print("ready", flush=True)
g = s.generation
while True:
    # The only writer: each publish returns the next generation.
    published = s.publish(value(g + 1, size))
    assert published == g + 1, (published, g + 1)
    g = published
"""


@pytest.mark.parametrize("size,reads", [(24, 20000), (4096, 10000), (65536, 2000)],
                         ids=["24B", "4KiB", "64KiB"])
def test_reads_are_never_torn_under_a_writer_publishing_flat_out(pyshm_name, pyshm_child,
                                                                  size, reads):
    """Issue 20: a raw segment rewritten by another process tears (626 torn
    reads in 200,000 of a 24-byte struct).  Every read of a slot is one
    value some publish wrote, with that publish's generation -- read(),
    snapshot() and readinto() alike, the 64 KiB copies (made without the
    GIL) included -- and the reader gets its reads done while the writer
    never pauses (readers never starve)."""
    with pyshm.Slot(pyshm_name, create=True, size=size) as s, \
            pyshm_child(WRITER, pyshm_name) as writer:
        writer.expect("ready")
        s.wait(after=0, timeout=DEADLINE)       # the writer is publishing
        buf = bytearray(size)
        last = 0
        for i in range(reads):
            if i % 3 == 0:
                gen, data = s.snapshot()
            elif i % 3 == 1:
                n = s.readinto(buf)
                data = bytes(buf[:n])
                gen = struct.unpack_from("<Q", data)[0] if n >= 8 else 0
            else:
                data = s.read()
                gen = struct.unpack_from("<Q", data)[0] if len(data) >= 8 else 0
            if gen == 0:
                assert data == b""          # before the writer's first publish
                continue
            assert whole(gen, data, size), f"read {i} is torn (generation {gen})"
            assert gen >= last              # never an older value than one seen
            last = gen
        assert writer.poll() is None, "the writer stopped"
        assert last > 0


MANY_WRITERS = r"""
import json, sys, pyshm
s = pyshm.Slot(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
got = [s.publish(b"w%s %d" % (sys.argv[2].encode(), i)) for i in range(int(sys.argv[3]))]
print(json.dumps(got), flush=True)
"""


def test_writers_in_several_processes_take_turns(pyshm_name, pyshm_child):
    """Every generation is handed out once: the writers' returns are 1..N,
    disjoint, each writer's increasing; the last value is whole."""
    writers, per = 3, 3000
    with pyshm.Slot(pyshm_name, create=True, size=32) as s:
        children = [pyshm_child(MANY_WRITERS, pyshm_name, w, per) for w in range(writers)]
        for child in children:
            child.expect("ready")
        for child in children:
            child.send_line("go")
        got = []
        for child in children:
            mine = json.loads(child.line())
            assert mine == sorted(mine)
            got += mine
            child.finish()
        assert sorted(got) == list(range(1, writers * per + 1))
        gen, data = s.snapshot()
        assert gen == writers * per and data.endswith(b" %d" % (per - 1))


WAITER = r"""
import sys, pyshm
s = pyshm.Slot(sys.argv[1])
after = s.generation
print("ready", flush=True)
g = s.wait()
print(g, s.read().decode(), flush=True)
"""


def test_waiters_in_other_processes_wake_for_a_publish(pyshm_name, pyshm_child):
    with pyshm.Slot(pyshm_name, create=True, size=64) as s:
        waiters = [pyshm_child(WAITER, pyshm_name) for _ in range(3)]
        for child in waiters:
            child.expect("ready")
            # Asleep in the wait (registered in the header, or napping).
            wait_until_in_slot_wait(pyshm_name, child.pid, pid=child.pid)
        s.publish(b"news")
        for child in waiters:
            assert child.line() == "1 news"
            child.finish()


INTERRUPTED = r"""
import signal, sys, pyshm
signal.signal(signal.SIGINT, signal.default_int_handler)
s = pyshm.Slot(sys.argv[1])
print("ready", flush=True)
try:
    s.wait()
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
print("waiting again", flush=True)
print(s.wait(timeout=60), s.read().decode(), flush=True)
"""


@posix_only
def test_sigint_interrupts_a_blocked_wait(pyshm_name, pyshm_child):
    with pyshm.Slot(pyshm_name, create=True, size=16) as s, \
            pyshm_child(INTERRUPTED, pyshm_name) as child:
        child.expect("ready")
        wait_until_in_slot_wait(pyshm_name, child.pid, pid=child.pid)
        os.kill(child.pid, signal.SIGINT)
        child.expect("KeyboardInterrupt")
        child.expect("waiting again")
        s.publish(b"after")
        child.expect("1 after")
        child.finish()


def test_a_slot_travels_to_a_spawn_process(pyshm_name):
    """multiprocessing.Process(args=(slot,)) under 'spawn': pickled by name,
    the child opens the same slot and publishes through it."""
    import multiprocessing

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    with pyshm.Slot(pyshm_name, create=True, size=64) as s:
        s.publish(b"from the parent")
        proc = ctx.Process(target=spawned.answer, args=(s,))
        proc.start()
        try:
            assert s.wait(after=1, timeout=DEADLINE) == 2
        finally:
            proc.join(DEADLINE)
        assert proc.exitcode == 0
        assert s.read() == b"child %d read: from the parent" % proc.pid
