"""Faults: slot writers and readers die (SIGKILL; TerminateProcess on
Windows) at any instant; the value stays whole and readable.

What core/slot.h promises ("Publishing", "Why marks"), and what is checked:

* a writer never writes the cell ``latest`` names, so a writer killed at any
  instant -- copying, committing, holding the write lock in a reserve()
  block -- leaves the previous value readable at once, whole;
* the write lock is a lock word naming the writer's liveness slot, which
  dies with it: the next writer takes it over and goes on, its generation
  the next one;
* a reader killed mid-read leaves a mark behind: a hint that steers
  writers, never a wait; the writers go on, forced publishes clear it, and
  later readers read whole values.

Values are self-checking (their head says who wrote them and how long they
are, their tail is a SHA-256 of the rest), so a torn read shows at once,
whoever made it.  Reader children check every read and print a line
(flushed) at once if one is torn; what they printed before they were
killed is read afterwards.
"""

from __future__ import annotations

import os
import random

import pytest

import pyshm

from .layout import lock_word
from .values import is_whole, value
from .waits import DEADLINE

ROUNDS = int(os.environ.get("PYSHM_FAULT_ROUNDS", 24))

# What every child starts with: the values' helpers (values.py, by path).
CHECKS = r"""
import os, random, sys, pyshm
sys.path.insert(0, sys.argv[-1])
from values import is_whole, value
"""
HERE = os.path.dirname(os.path.abspath(__file__))

# A writer: publishes self-checking values as fast as it can; with "loans"
# it writes them in place, in pieces, inside reserve() blocks -- now and
# then forking inside the block (the child scribbles on its copy and leaves
# the dead loan, which must publish nothing).
WRITER = CHECKS + r"""
s = pyshm.Slot(sys.argv[1])
tid, loans = int(sys.argv[2]), sys.argv[3] == "loans"
rng = random.Random(tid)
print("ready", flush=True)
seq = 0
while True:
    data = value(tid, seq, s.size)
    if loans:
        with s.reserve(len(data)) as buf:
            buf[:12] = data[:12]            # in pieces: a kill may come between
            if hasattr(os, "fork") and rng.random() < 0.01:
                pid = os.fork()
                if pid == 0:
                    buf[:] = b"\xee" * len(buf)
                    try:
                        buf.obj.__exit__(None, None, None)
                    except RuntimeError:
                        pass
                    os._exit(0)
                os.waitpid(pid, 0)
            buf[12:] = data[12:]
    else:
        s.publish(data)
    seq += 1
"""

# A reader: reads in every way, checks each read, says so at once if one is
# torn; never stops (it is killed).
READER = CHECKS + r"""
s = pyshm.Slot(sys.argv[1])
buf = bytearray(s.size)
print("ready", flush=True)
last, i = 0, 0
while True:
    if i % 3 == 0:
        gen, data = s.snapshot()
    elif i % 3 == 1:
        data = bytes(buf[:s.readinto(buf)])
        gen = last
    else:
        data, gen = s.read(), last
    if not is_whole(data) or gen < last:
        print("TORN", i, gen, last, data[:16].hex(), flush=True)
    last = gen
    i += 1
"""

# A writer that dies holding the write lock: inside a reserve() block,
# half-way through its value.
HOLDER = r"""
import sys, pyshm
s = pyshm.Slot(sys.argv[1])
with s.reserve() as buf:
    buf[:len(buf) // 2] = b"\xab" * (len(buf) // 2)
    print("holding", flush=True)
    sys.stdin.readline()        # killed here, in the block
"""


def test_a_writer_killed_holding_the_lock_leaves_the_value_and_the_lock(pyshm_name,
                                                                         pyshm_child):
    with pyshm.Slot(pyshm_name, create=True, size=4096) as s:
        for round_ in range(4):
            before = s.snapshot()
            with pyshm_child(HOLDER, pyshm_name) as child:
                child.expect("holding")
                assert lock_word(pyshm_name) != 0
                assert s.snapshot() == before       # readers never wait
                child.kill()
                child.reap()
            assert s.snapshot() == before           # the previous value, at once
            gen = s.publish(b"after round %d" % round_)     # the lock taken over
            assert gen == before[0] + 1
            assert s.snapshot() == (gen, b"after round %d" % round_)


@pytest.mark.parametrize("mode", ["publish", "loans"])
def test_writers_killed_at_random_instants(pyshm_name, pyshm_child, mode):
    """Each round two writers publish flat out and one of them is killed at
    a random point; the value is whole at once, the other writer and the
    test process go on, and generations only grow."""
    rng = random.Random(7)
    size = 4096
    with pyshm.Slot(pyshm_name, create=True, size=size) as s:
        last = 0
        for round_ in range(ROUNDS):
            with pyshm_child(WRITER, pyshm_name, 2 * round_, mode, HERE) as victim, \
                    pyshm_child(WRITER, pyshm_name, 2 * round_ + 1, mode, HERE) as other:
                victim.expect("ready")
                other.expect("ready")
                # Let the victim publish a random number of values first.
                target = s.generation + rng.randrange(1, 300)
                while s.generation < target:
                    gen, data = s.snapshot()
                    assert is_whole(data) and gen >= last
                    last = gen
                victim.kill()
                victim.reap()
                gen, data = s.snapshot()
                assert is_whole(data) and gen >= last
                last = gen
                # The other writer goes on: newer values come, whole.
                assert s.wait(after=gen, timeout=DEADLINE) > gen
                gen, data = s.snapshot()
                assert is_whole(data) and gen > last
                last = gen
            gen = s.publish(value(99, round_, size))
            assert gen > last and s.snapshot() == (gen, value(99, round_, size))
            last = gen


def test_readers_killed_mid_read_never_hold_up_writers(pyshm_name, pyshm_child):
    """Readers of 64 KiB values killed at random instants leave marks on
    cells; writers never wait for them and readers after them read whole
    values -- while a writer publishes flat out, and after."""
    rng = random.Random(11)
    size = 65536
    with pyshm.Slot(pyshm_name, create=True, size=size) as s, \
            pyshm_child(WRITER, pyshm_name, 1000, "publish", HERE) as writer:
        writer.expect("ready")
        for round_ in range(ROUNDS):
            readers = [pyshm_child(READER, pyshm_name, HERE) for _ in range(3)]
            for reader in readers:
                reader.expect("ready")
            target = s.generation + rng.randrange(1, 50)
            while s.generation < target:
                assert is_whole(s.read())
            for reader in readers:
                reader.kill()
                out, _ = reader.communicate(timeout=DEADLINE)
                assert "TORN" not in out, out
                reader.reap()
            gen = s.generation
            assert s.wait(after=gen, timeout=DEADLINE) > gen    # the writer goes on
        writer.kill()
        writer.reap()
        # Every cell may carry a dead reader's mark: publishes still go
        # through (the oldest cell is forced) and read back whole.
        for i in range(20):
            gen = s.publish(value(7, i, size))
            assert s.snapshot() == (gen, value(7, i, size))


def test_the_campaign(pyshm_name, pyshm_child):
    """Writers (half with reserve() blocks, some forking inside them) and
    readers, all killed at random instants, round after round: no read is
    ever torn (the readers' own checks and ours), the lock is never left
    stuck, the slot is usable after every round."""
    rng = random.Random(2024)
    size = 2048
    with pyshm.Slot(pyshm_name, create=True, size=size) as s:
        for round_ in range(ROUNDS):
            writers = [pyshm_child(WRITER, pyshm_name, 10 * round_ + w,
                                   "loans" if w % 2 else "publish", HERE) for w in range(3)]
            readers = [pyshm_child(READER, pyshm_name, HERE) for _ in range(2)]
            everyone = writers + readers
            for child in everyone:
                child.expect("ready")
            rng.shuffle(everyone)
            for child in everyone:
                target = s.generation + rng.randrange(0, 40)
                while s.generation < target:
                    assert is_whole(s.read())
                    if all(w.poll() is not None for w in writers):
                        break
                child.kill()
                out, _ = child.communicate(timeout=DEADLINE)
                assert "TORN" not in out, out
                child.reap()
            gen, data = s.snapshot()
            assert is_whole(data)
            mine = value(500, round_, size)
            assert s.publish(mine) == gen + 1       # the lock was free or taken over
            assert s.snapshot() == (gen + 1, mine)
