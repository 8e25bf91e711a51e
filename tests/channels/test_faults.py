"""Faults: channel peers die (SIGKILL) at any instant; nothing is lost or torn.

Killed with ``Popen.kill()``: SIGKILL on POSIX, TerminateProcess on Windows
(where a lock's named mutex is then reported WAIT_ABANDONED to the next
owner) -- no chance to clean up either way.

First hand-picked instants: a sender killed mid-stream while another goes
on, a receiver killed while blocked, a sender and a receiver killed while
they hold a loan (reserve / recv_view).  Then the campaign: senders and
receivers -- half of them with loans, some of which fork inside the block
-- SIGKILLed at random instants, many rounds.

Each round starts several sender and receiver processes on one channel and
kills every one of them with SIGKILL, one after another, at random points
of the traffic (while copying, while holding a lock, while blocked on a
full or empty ring).  Messages carry the sender's id, a sequence number and
a SHA-256 of both plus a random body.

What the protocol promises (src/core/ring.h, "Publishing"), and what is checked:

* a sender that dies before publishing leaves nothing visible, so no
  message is torn;
* a receiver that dies before its commit leaves the message queued, so
  *nothing* is lost: every message whose ``send`` returned is delivered,
  and none twice;
* the channel stays usable: the test process drains it, sends and receives
  once more, and ``queued`` is 0 at the end.

Knowing what "returned" and "delivered" mean across a SIGKILL needs care.
A sender bumps a counter in a shared log segment right after each send
returns, so every sequence number below the counter was sent (the one at
the counter may or may not have been).  A receiver calls ``recv_into``
straight into the next slot of its own log segment, then bumps its count:
the message is in the slot *before* the channel's read cursor moves, so a
receiver killed between its commit and its count still shows the message
in slot ``count``.  That slot is either a committed delivery or a copy of a
message still queued (killed before the commit), which someone else then
receives; either way the union is exact.

A counter must never read lower than it was, even when its writer is
killed while writing it.  ``struct.pack_into`` zero-fills its target before
it packs the value (CPython's does), so a writer killed in between left 0
behind: a sender whose messages were all delivered then looked as if it had
sent none ("phantom messages"), a receiver as if it had received none.  So
the counters are stored through a ``Q``-cast memoryview (one 8-byte copy of
the value, nothing written before it), twice, one copy after the other, and
read as the larger copy: whatever a kill interrupts, one copy is whole.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import struct
import sys
import time

import pytest

import pyshm

from .slots import SEND_LOCK, SLOT_HOG, WAITERS, have_ofd_locks, live_slots, slot_held
from .waits import wait_until_sleeping

# ---- hand-picked instants --------------------------------------------------------

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


def test_sigkill_sender_mid_stream_repeatedly(pyshm_name, pyshm_child):
    rng = random.Random(3)
    with pyshm.Channel(pyshm_name, create=True, capacity=200000) as c:
        total = 0
        for round_ in range(8):
            with pyshm_child(KILLED_SENDER, pyshm_name) as child, \
                    pyshm_child(KILLED_SENDER, pyshm_name) as other:
                child.expect("ready")
                other.expect("ready")
                want = rng.randrange(1, 40)
                for _ in range(want):
                    m = c.recv(timeout=DEADLINE)
                    assert hashlib.sha256(m[32:]).digest() == m[:32]
                    total += 1
                # Kill one sender while both are streaming: it dies at whatever
                # instant, possibly holding the send lock mid-record.
                child.kill()
                child.reap()
                # The other sender (and we) must go on: no partial message,
                # no stuck lock.
                for _ in range(30):
                    m = c.recv(timeout=DEADLINE)
                    assert hashlib.sha256(m[32:]).digest() == m[:32]
                    total += 1
                other.reap()
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


def test_sigkill_blocked_receiver_blocks_nobody(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c:
        for _ in range(3):
            with pyshm_child(BLOCKED_RECEIVER, pyshm_name) as child:
                child.expect("ready")
                wait_until_sleeping(child.pid)
                child.kill()
                child.reap()
        with pyshm_child(BLOCKED_RECEIVER, pyshm_name) as child:
            child.expect("ready")
            c.send(b"one", timeout=DEADLINE)
            child.expect("got one")
            child.finish()
        c.send(b"two", timeout=0)
        assert c.recv(timeout=0) == b"two"


LOAN_SENDER = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
size = int(sys.argv[2])
with c.reserve(size) as buf:
    buf[:] = b"\\xab" * size
    print("holding", flush=True)
    sys.stdin.readline()        # killed here, in the block
"""

LOAN_RECEIVER = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
with c.recv_view() as view:
    print("holding", bytes(view).decode(), flush=True)
    sys.stdin.readline()        # killed here, in the block
"""


@pytest.mark.parametrize("offset,size", [(0, 16), (0, 2040), (1000, 2000), (3000, 2000),
                                         (4000, 3000)])
def test_sigkill_mid_loan(pyshm_name, pyshm_child, offset, size):
    """A sender killed holding a loan leaves nothing visible (not even the
    padding laid before a wrapped loan) and no stuck lock; a receiver killed
    holding a view leaves the message queued."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c:
        if offset:
            c.send(bytes(offset - 8))       # the loans start at OFFSET
            c.recv()
        for round_ in range(2):
            with pyshm_child(LOAN_SENDER, pyshm_name, size) as child:
                child.expect("holding")
                child.kill()
                child.reap()
            assert c.queued == 0
            c.send(b"message %d" % round_, timeout=DEADLINE)   # the send lock is free
            with pyshm_child(LOAN_RECEIVER, pyshm_name) as child:
                child.expect("holding message %d" % round_)
                child.kill()
                child.reap()
            assert c.messages == 1
            assert c.recv(timeout=DEADLINE) == b"message %d" % round_
        assert c.queued == 0


WAKE_SENDER = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
for _ in range(int(sys.argv[2])):
    c.send(b"x" * 16, timeout=0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or pyshm.CHANNEL_WAIT != "futex",
                    reason="counts futex(2) wake calls")
def test_dead_blocked_receivers_cost_one_wake_at_most(pyshm_name, pyshm_child, tmp_path):
    """Issue 13, point 11: a receiver killed while blocked left the waiter
    count raised, and every later send made a futex wake system call for
    the rest of the channel's life.  Now the waiters are a bit in the wait
    word that the next send clears: three receivers killed while blocked
    cost that sender one FUTEX_WAKE in all.  Counted with strace (shared
    futexes only: the interpreter's own are FUTEX_*_PRIVATE)."""
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI")
        pytest.skip("needs strace")
    sends = 300
    trace = tmp_path / "futex.trace"
    with pyshm.Channel(pyshm_name, create=True, capacity=8192) as c:
        for _ in range(3):
            with pyshm_child(BLOCKED_RECEIVER, pyshm_name) as child:
                child.expect("ready")
                wait_until_sleeping(child.pid)
                child.kill()
                child.reap()
        sender = pyshm_child.command("strace", "-f", "-qq", "-e", "trace=futex", "-o",
                                     str(trace), sys.executable, "-c", WAKE_SENDER,
                                     pyshm_name, sends)
        sender.finish()
        assert c.queued == sends * 24
    calls = trace.read_text().splitlines()
    wakes = [line for line in calls if "FUTEX_WAKE," in line]
    assert len(wakes) <= 1, f"{len(wakes)} wake calls for {sends} sends:\n" + "\n".join(wakes[:5])


FORKING_HOLDER = r"""
import os, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("attached", flush=True)
sys.stdin.readline()
if os.fork() == 0:
    # The child: a copy of everything, its own liveness slot; it uses the
    # channel, then lives on until its stdin (shared) closes.
    c.send(b"from the child", timeout=60)
    os.write(1, b"child ready\n")      # one write: the pipe is shared
    sys.stdin.read()
    os._exit(0)
os.write(1, b"forked\n")
sys.stdin.read()
"""


@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex" or not have_ofd_locks,
                    reason="liveness slots of the futex build")
def test_dead_parent_lock_is_recovered_while_its_fork_child_lives(pyshm_name, pyshm_child):
    """A forked child shares its parent's open file descriptions, and so the
    byte-range lock that says the parent's slot is alive.  A fork handler
    gives the child its own description and slot: a parent killed while
    holding a lock (simulated: its slot in the send lock's word) loses it
    at once, although the child lives on."""
    with pyshm.Channel(pyshm_name, create=True, capacity=512) as c:
        mine = live_slots(pyshm_name)
        holder = pyshm_child(FORKING_HOLDER, pyshm_name)
        try:
            holder.expect("attached")
            parent_slot, = live_slots(pyshm_name) - mine
            holder.send_line("fork")
            assert sorted(holder.line() for _ in range(2)) == ["child ready", "forked"]
            # The child has a slot of its own, next to its parent's.
            slots = live_slots(pyshm_name) - mine
            assert parent_slot in slots and len(slots) == 2, (parent_slot, slots)
            with pyshm.SharedMemory(pyshm_name) as raw:
                raw.write(struct.pack("<I", parent_slot), SEND_LOCK)
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()           # reaped; its pipes (the child's too) stay open
            assert live_slots(pyshm_name) - mine == slots - {parent_slot}
            c.send(b"after the parent died", timeout=DEADLINE)
            assert c.recv(timeout=0) == b"from the child"
            assert c.recv(timeout=0) == b"after the parent died"
        finally:
            holder.stdin.close()    # the child's too: it exits
            holder.reap()



@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex" or not have_ofd_locks,
                    reason="liveness slots of the futex build")
def test_an_object_on_a_dead_owners_slot_frees_its_lock(pyshm_name, pyshm_child):
    """A process died holding the send lock, with a waiter's bit set: the
    word names its slot.  The next object that claims that slot (the kernel
    let it lock the slot's byte: the owner is gone) must free the word at
    once -- its own slot in a lock word would otherwise read as "another
    thread of mine holds it", which no one ever probes.  The claim is made
    certain by a process that holds every other slot."""
    keep = 4242
    pyshm.Channel(pyshm_name, create=True, capacity=256).close()
    hog = pyshm_child(SLOT_HOG, pyshm_name, keep)
    hog.expect("holding")
    with pyshm.SharedMemory(pyshm_name) as raw:
        raw.write(struct.pack("<I", keep | WAITERS), SEND_LOCK)
        assert not slot_held(pyshm_name, keep)
        with pyshm.Channel(pyshm_name) as c:
            assert slot_held(pyshm_name, keep)          # the one it could claim
            assert raw.read(4, SEND_LOCK) == bytes(4)
            c.send(b"at once", timeout=0)
            assert c.recv(timeout=0) == b"at once"
    hog.send_line("done")
    hog.finish()

# ---- random instants -----------------------------------------------------------------

ROUNDS = int(os.environ.get("PYSHM_FAULT_ROUNDS", 32))
SENDERS, RECEIVERS = 3, 3
CAPACITY = 8192                 # small: senders block on a full ring often
SLOT, SLOTS = 4096, 600         # receiver log: slots of SLOT bytes after a 64-byte head
HEAD = struct.Struct("<IIH")    # sender id, sequence, body length
COUNTS = struct.Struct("=2Q")   # one counter, stored twice (see the top)
DEADLINE = 120.0

# Every second sender writes its messages in place with reserve(), every
# second receiver reads them in place with recv_view(): a loan killed at any
# instant must behave as a send or a receive does.  Now and then such a
# process forks inside its block (FORK_IN_LOAN): the child scribbles on its
# copy of the view and leaves the block -- the loan is dead there, so that
# must neither tear the parent's message nor publish or consume anything
# (which would lose or duplicate messages) -- and exits; the parent waits
# for it, still in its block, then goes on.  A kill may come at any point
# of that too (the child then ends by itself).
FORK_IN_LOAN = r"""
def fork_in_loan(view):
    pid = os.fork()
    if pid == 0:
        try:
            if not view.readonly:
                view[:] = bytes([0xEE]) * len(view)
            view.obj.__exit__(None, None, None)
        except RuntimeError:
            pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
"""

SENDER = r"""
import hashlib, os, random, struct, sys, pyshm
chan, log, sid, slot = pyshm.Channel(sys.argv[1]), pyshm.SharedMemory(sys.argv[2]), \
    int(sys.argv[3]), int(sys.argv[4])
loans = slot % 2 == 1
counts = log.buf[16 * slot:16 * slot + 16].cast("Q")
rng = random.Random(sid)
sizes = (0, 0, 1, 7, 8, 100, 500, 1000, 3000)
""" + FORK_IN_LOAN + r"""
print("ready", flush=True)
sys.stdin.readline()        # "go": traffic starts when the killer watches
seq = 0
while True:
    body = rng.randbytes(rng.choice(sizes))
    head = struct.pack("<IIH", sid, seq, len(body))
    msg = head + body + hashlib.sha256(head + body).digest()
    if loans:
        with chan.reserve(len(msg)) as buf:
            buf[:len(head)] = head      # written in pieces: a kill may tear the loan
            if hasattr(os, "fork") and rng.random() < 0.02:
                fork_in_loan(buf)
            buf[len(head):] = msg[len(head):]
    else:
        chan.send(msg)
    counts[0] = seq + 1     # sends that returned, stored twice (see the top)
    counts[1] = seq + 1
    seq += 1
"""

RECEIVER = r"""
import os, random, sys, pyshm
chan, log = pyshm.Channel(sys.argv[1]), pyshm.SharedMemory(sys.argv[2])
SLOT, SLOTS, loans = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
buf = log.buf
counts = buf[:16].cast("Q")
rng = random.Random(SLOT * 1000 + int(sys.argv[5]))
""" + FORK_IN_LOAN + r"""
print("ready", flush=True)
for k in range(SLOTS):
    # The copy lands in the log before the read cursor moves (core/ring.h;
    # for a view: inside the block, before it ends).
    slot = buf[64 + k * SLOT:64 + (k + 1) * SLOT]
    if loans:
        with chan.recv_view() as view:
            if hasattr(os, "fork") and rng.random() < 0.02:
                fork_in_loan(view)
            slot[:len(view)] = view
    else:
        chan.recv_into(slot)
    counts[0] = k + 1       # stored twice (see the top)
    counts[1] = k + 1
sys.stdin.readline()        # log full: wait to be killed
"""


def parse(raw: bytes):
    """(sender, seq) of a whole message at the start of RAW, else None."""
    if len(raw) < HEAD.size:
        return None
    sid, seq, blen = HEAD.unpack_from(raw)
    end = HEAD.size + blen
    if end + 32 > len(raw) or hashlib.sha256(raw[:end]).digest() != raw[end:end + 32]:
        return None
    return sid, seq


def exact(msg: bytes):
    key = parse(msg)
    assert key is not None and HEAD.size + HEAD.unpack_from(msg)[2] + 32 == len(msg), \
        "torn or garbled message"
    return key


def count_at(raw: bytes, offset: int = 0) -> int:
    """The counter stored twice at OFFSET of RAW: the larger copy (see the top)."""
    return max(COUNTS.unpack_from(raw, offset))


def sent_counts(send_log) -> list[int]:
    raw = send_log.read(COUNTS.size * SENDERS)
    return [count_at(raw, COUNTS.size * s) for s in range(SENDERS)]


def progress(send_log, recv_logs) -> int:
    return sum(sent_counts(send_log)) + sum(count_at(lg.read(COUNTS.size)) for lg in recv_logs)


def kill_at_random_instants(rng, procs, send_log, recv_logs) -> None:
    """SIGKILL every child, in random order, each after a random amount of
    further traffic -- or, once traffic has stopped (all receivers dead, or
    all senders), right away: any instant is a valid one to die at."""
    order = list(procs)
    rng.shuffle(order)
    for child in order:
        target = progress(send_log, recv_logs) + rng.randrange(1, 150)
        last, still_since = -1, time.monotonic()
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            now = progress(send_log, recv_logs)
            if now >= target:
                break
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since > 0.02:
                break           # no traffic: this child dies while idle or blocked
            time.sleep(0.0002)  # pacing the poll, not waiting for an outcome
        child.kill()
        child.reap()


def one_round(rng, chan, round_, names, children) -> tuple[int, int]:
    send_log_name = names()
    recv_log_names = [names() for _ in range(RECEIVERS)]
    procs = []
    with pyshm.SharedMemory(send_log_name, create=True, size=COUNTS.size * SENDERS) as send_log:
        recv_logs = [pyshm.SharedMemory(n, create=True, size=64 + SLOT * SLOTS)
                     for n in recv_log_names]
        try:
            base = 100 * round_
            for r in range(RECEIVERS):
                procs.append(children(RECEIVER, chan.name, recv_log_names[r], SLOT, SLOTS,
                                      r % 2))
            for s in range(SENDERS):
                procs.append(children(SENDER, chan.name, send_log_name, base + s, s))
            for p in procs:
                p.expect("ready")
            for p in procs[RECEIVERS:]:
                p.send_line("go")
            kill_at_random_instants(rng, procs, send_log, recv_logs)

            # Everyone is dead.  Drain what is left: it must all be whole.
            committed = []
            while True:
                try:
                    msg = chan.recv(timeout=0)
                except TimeoutError:
                    break
                committed.append(exact(msg))
            partial = []
            for lg in recv_logs:
                data = lg.read()
                count = count_at(data)
                last = {}
                for k in range(count):
                    key = parse(data[64 + k * SLOT:64 + (k + 1) * SLOT])
                    assert key is not None, f"round {round_}: torn message in a receiver"
                    assert key[1] > last.get(key[0], -1), "a sender's order was broken"
                    last[key[0]] = key[1]
                    committed.append(key)
                if count < SLOTS:
                    key = parse(data[64 + count * SLOT:64 + (count + 1) * SLOT])
                    if key is not None:
                        partial.append(key)
            sent = sent_counts(send_log)
        finally:
            for p in procs:
                p.reap()
            for lg in recv_logs:
                lg.close()
            for n in recv_log_names:
                names.remove(n)
    names.remove(send_log_name)

    dupes = len(committed) - len(set(committed))
    assert dupes == 0, f"round {round_}: {dupes} messages delivered twice"
    delivered = set(committed) | set(partial)
    for s, n in enumerate(sent):
        sid = base + s
        got = {seq for (i, seq) in delivered if i == sid}
        lost = set(range(n)) - got
        assert not lost, f"round {round_}: sender {sid} lost {sorted(lost)[:10]} of {n}"
        assert got <= set(range(n + 1)), \
            f"round {round_}: sender {sid}: phantom messages (its log says {n} sends returned)"
    return sum(sent), len(delivered)


def test_sigkill_senders_and_receivers_at_random_instants(pyshm_names, pyshm_child):
    # A fresh seed each run (more instants covered over time), shown on failure;
    # PYSHM_FAULT_SEED replays one.
    seed = int(os.environ.get("PYSHM_FAULT_SEED", int.from_bytes(os.urandom(4), "little")))
    rng = random.Random(seed)
    name = pyshm_names()
    total_sent = total_delivered = 0
    with pyshm.Channel(name, create=True, capacity=CAPACITY) as chan:
        for round_ in range(ROUNDS):
            try:
                sent, delivered = one_round(rng, chan, round_, pyshm_names, pyshm_child)
            except AssertionError as e:
                raise AssertionError(f"PYSHM_FAULT_SEED={seed}: {e}") from e
            total_sent += sent
            total_delivered += delivered
        # Usable afterwards, nothing left behind in the ring.
        chan.send(b"after all the killing", timeout=DEADLINE)
        assert chan.recv(timeout=DEADLINE) == b"after all the killing"
        assert chan.queued == 0
    assert total_sent > ROUNDS, (seed, total_sent)   # the rounds had traffic
    assert total_delivered >= total_sent
