"""pyshm.Channel between processes: echo with checksums, many senders and
receivers, a blocked call interrupted by SIGINT, SIGINT at random instants
of waiting (spinning or asleep) with nothing lost or sent twice, a blocked
recv that lets the other threads run, processes that are each PID 1 of
their own PID namespace (containers sharing /dev/shm).  Children are Python
processes that import the same build (test_fallback.py runs this file again
against the fallback build).
"""

import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

import pyshm

from .slots import SEND_LOCK, have_ofd_locks, live_slots
from .waits import DEADLINE, wait_until_sleeping

posix_only = pytest.mark.skipif(
    sys.platform == "win32",
    reason="sends SIGINT to another process, which Windows cannot (Ctrl-C there: "
           "tests/windows/test_channels.py::test_ctrl_c_interrupts_a_blocked_recv)")


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


def test_cross_process_echo_with_checksums(pyshm_names, pyshm_child):
    req_name, rep_name = pyshm_names(), pyshm_names()
    with pyshm.Channel(req_name, create=True, capacity=1 << 16) as req, \
            pyshm.Channel(rep_name, create=True, capacity=4096) as rep, \
            pyshm_child(ECHO, req_name, rep_name) as child:
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


def test_many_senders_many_receivers(pyshm_name, pyshm_child):
    senders, receivers, n = 3, 3, 3000
    with pyshm.Channel(pyshm_name, create=True, capacity=2048) as c:
        children = [pyshm_child(RECEIVER, pyshm_name) for r in range(receivers)]
        children += [pyshm_child(SENDER, pyshm_name, s, n) for s in range(senders)]
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


INTERRUPTED = """
import signal, sys, pyshm
# A child of a background job inherits SIGINT ignored, and Python then
# installs no handler: take the default one, as an interactive run has it.
signal.signal(signal.SIGINT, signal.default_int_handler)
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
def test_sigint_interrupts_blocked_call(pyshm_name, pyshm_child, mode):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c, \
            pyshm_child(INTERRUPTED, pyshm_name, mode) as child:
        child.expect("ready")
        wait_until_sleeping(child.pid)
        os.kill(child.pid, signal.SIGINT)
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


@posix_only
def test_sigint_ends_cli_recv_follow(pyshm_name, pyshm_child):
    """`pyshm recv --follow` prints every message until Ctrl-C, then exits 130."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        follower = pyshm_child.module("pyshm", "recv", pyshm_name, "--follow")
        for i in range(3):
            chan.send(f"message {i}".encode())
            follower.expect(f"message {i}")
        wait_until_sleeping(follower.pid)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=DEADLINE)
        assert follower.returncode == 130, err
        assert err.strip() == "pyshm recv: interrupted"


# SIGINT at random instants.  The child makes its calls from C (list.extend
# over iter(c.recv, None) or map(c.send, ...)): no bytecode runs between two
# calls, so a KeyboardInterrupt can only come out of a call itself -- and a
# call that raises must have taken or sent nothing.  (From Python code the
# interpreter may raise it right after a call returned, which no library
# can prevent.)  Each round the child reports what it got or sent; a
# KeyboardInterrupt that is lost (seen by no check before the call goes
# back to sleep) hangs the round and fails it at the child's deadline.

SIGINT_RECEIVER = r"""
import json, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
while sys.stdin.readline().strip() == "go":
    got = []
    try:
        print("in", flush=True)
        got.extend(iter(c.recv, None))
    except KeyboardInterrupt:
        pass
    print(json.dumps([m.decode() for m in got]), flush=True)
"""

SIGINT_SENDER = r"""
import json, sys, pyshm
c = pyshm.Channel(sys.argv[1])
msgs = [b"%08d" % i for i in range(int(sys.argv[2]))]
todo, sent = iter(msgs), []
print("ready", flush=True)
while sys.stdin.readline().strip() == "go":
    try:
        print("in", flush=True)
        sent.extend(map(c.send, todo))
    except KeyboardInterrupt:
        pass
    # sends that returned, messages taken from the list
    print(json.dumps([len(sent), len(msgs) - todo.__length_hint__()]), flush=True)
"""

SIGINT_ROUNDS = int(os.environ.get("PYSHM_SIGINT_ROUNDS", 60))


def _pace(rng):
    """Let the child reach a random point of its wait: right away, a few
    microseconds into it (spinning), or asleep in the kernel."""
    how = rng.choice(["now", "spin", "spin", "asleep"])
    if how == "spin":
        until = time.perf_counter() + rng.uniform(0, 0.0003)
        while time.perf_counter() < until:      # pacing, not waiting for an outcome
            pass
    return how


@posix_only
def test_sigint_at_random_instants_loses_no_message(pyshm_name, pyshm_child):
    """Issue 13, point 4: a SIGINT that came while the receiver spun (after it
    released the GIL, before it slept) was never seen, and the
    KeyboardInterrupt came only with the next message, after recv had
    consumed it.  Now every SIGINT ends the wait, and a recv that raises
    leaves its message queued: what the child got plus what is left is
    exactly what was sent, in order."""
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    sent, got = [], []
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c, \
            pyshm_child(SIGINT_RECEIVER, pyshm_name) as child:
        child.expect("ready")
        for round_ in range(SIGINT_ROUNDS):
            child.send_line("go")
            child.expect("in")
            # A few messages: the child wakes, takes them, and waits again
            # (spins, then sleeps) while the SIGINT is on its way.
            for k in range(rng.randrange(0, 4)):
                msg = f"{round_}.{k}"
                c.send(msg.encode(), timeout=DEADLINE)
                sent.append(msg)
            how = _pace(rng)
            if how == "asleep":
                wait_until_sleeping(child.pid)
            os.kill(child.pid, signal.SIGINT)
            got += json.loads(child.line())
        child.finish()
        while True:
            try:
                got.append(c.recv(timeout=0).decode())
            except TimeoutError:
                break
    assert got == sent


@posix_only
def test_sigint_at_random_instants_sends_nothing_twice(pyshm_name, pyshm_child):
    """The send side: a SIGINT ends a send blocked on a full channel (also
    one that hit the spin), and a send that raises has sent nothing: what
    arrives is exactly the messages whose send returned, in order."""
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    total = 100_000
    received, returned = [], []
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c, \
            pyshm_child(SIGINT_SENDER, pyshm_name, total) as child:
        child.expect("ready")
        done = taken = 0
        for _ in range(SIGINT_ROUNDS):
            child.send_line("go")
            child.expect("in")
            # Make room now and then: the child wakes, sends, and waits
            # again for space while the SIGINT is on its way.
            for _ in range(rng.randrange(0, 4)):
                try:
                    received.append(c.recv(timeout=DEADLINE))
                except TimeoutError:
                    pytest.fail("the sender sent nothing for a whole deadline")
            how = _pace(rng)
            if how == "asleep":
                wait_until_sleeping(child.pid)
            os.kill(child.pid, signal.SIGINT)
            n_sent, n_taken = json.loads(child.line())
            # The sends that returned this round are the messages taken this
            # round, except one that raised (the last taken) if any.
            this_round = n_sent - done
            assert n_taken - taken in (this_round, this_round + 1), (n_sent, n_taken)
            returned += range(taken, taken + this_round)
            done, taken = n_sent, n_taken
        child.finish()
        while True:
            try:
                received.append(c.recv(timeout=0))
            except TimeoutError:
                break
    assert received == [b"%08d" % i for i in returned]


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


def test_blocked_recv_releases_gil(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=256), \
            pyshm_child(GIL_PROBE, pyshm_name) as child:
        assert child.line() == "main ran True"
        assert child.line() == "thread got ping"
        child.finish()


# ---- pickling by name into 'spawn' children ------------------------------------------

def test_channel_and_segment_travel_to_a_spawn_process(pyshm_names):
    """multiprocessing.Process(args=(ch, shm)) under 'spawn': both arrive
    pickled by name (spin=False and readonly=True with them) and reopen the
    same objects in the child."""
    import multiprocessing

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    name, seg_name = pyshm_names(), pyshm_names()
    with pyshm.Channel(name, create=True, capacity=1 << 16) as ch, \
            pyshm.SharedMemory(seg_name, create=True, size=64) as shm:
        shm.write(b"hello")
        for spin, readonly in ((True, False), (False, True)):
            quiet = pyshm.Channel(name, spin=spin)
            seen = pyshm.SharedMemory(seg_name, readonly=readonly)
            proc = ctx.Process(target=spawned.report, args=(quiet, seen))
            proc.start()
            try:
                got = ch.recv_obj(timeout=DEADLINE)
            finally:
                proc.join(DEADLINE)
            quiet.close()
            seen.close()
            assert proc.exitcode == 0
            assert got["pid"] == proc.pid != os.getpid()
            assert got["channel"] == (name, spin, 1 << 16)
            assert got["segment"] == (seg_name, readonly, b"hello")


def test_spawned_echo_of_objects(pyshm_names, numpy):
    import multiprocessing

    np = numpy

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    with pyshm.Channel(pyshm_names(), create=True, capacity=1 << 22) as req, \
            pyshm.Channel(pyshm_names(), create=True, capacity=1 << 22) as rep:
        cargo = [np.arange(1000.0).reshape(10, 100, order="F"), {"k": [1, 2]}, b"\0" * 5000]
        proc = ctx.Process(target=spawned.echo, args=(req, rep, len(cargo)))
        proc.start()
        try:
            for obj in cargo:
                req.send_obj(obj, timeout=DEADLINE)
                back = rep.recv_obj(timeout=DEADLINE)
                if isinstance(obj, np.ndarray):
                    assert back.flags.f_contiguous and (back == obj).all()
                else:
                    assert back == obj
        finally:
            proc.join(DEADLINE)
        assert proc.exitcode == 0


def test_pool_initializer_gets_the_channel(pyshm_name):
    """A Pool initializer under 'spawn' receives the channel by name; every
    worker sends through it."""
    import multiprocessing

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    with pyshm.Channel(pyshm_name, create=True, capacity=1 << 16) as ch:
        with ctx.Pool(2, initializer=spawned.pool_init, initargs=(ch,)) as pool:
            pids = pool.map(spawned.pool_work, range(6))
        got = [ch.recv_obj(timeout=DEADLINE) for _ in range(6)]
        assert sorted(x for _, x in got) == list(range(6))
        assert {pid for pid, _ in got} == set(pids) and os.getpid() not in pids
        assert ch.queued == 0


# ---- creation seen from other processes -------------------------------------------

def test_racing_creators_and_openers(creation_race):
    # Six processes create the same channels with exist_ok=True while two
    # poll for them with plain opens: every open gets the whole channel
    # (ProtocolError and ValueError came from headers seen half-written).
    assert creation_race("Channel", 1 << 20) == []


BIG_CREATOR = """
import sys, pyshm
print("starting", flush=True)
c = pyshm.Channel(sys.argv[1], create=True, capacity=1 << 30)
print("created", flush=True)
sys.stdin.readline()
c.close()
"""


def test_open_a_large_channel_while_it_is_created(pyshm_name, pyshm_child):
    # Reserving 1 GiB takes a while: an opener polling meanwhile finds no
    # channel, then the whole channel -- never a half-made one (it used to
    # get ProtocolError after waiting 200 ms for the header).
    with pyshm_child(BIG_CREATOR, pyshm_name) as creator:
        creator.expect("starting")
        end = time.monotonic() + DEADLINE
        while True:
            try:
                c = pyshm.Channel(pyshm_name)
                break
            except FileNotFoundError:
                assert time.monotonic() < end, "the channel never appeared"
        with c:
            assert c.capacity == 1 << 30
            c.send(b"hello")
            assert c.recv(timeout=0) == b"hello"
        creator.expect("created")
        creator.send_line("done")
        creator.finish()


# ---- PID namespaces ----------------------------------------------------------------

# Each child runs as PID 1 of a PID namespace of its own (and its own /proc),
# as in two containers of one pod that share /dev/shm.
UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]


def _namespaces_or_skip():
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux and unshare(1)")
    probe = subprocess.run(UNSHARE + [sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, timeout=DEADLINE)
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.skip(f"cannot make PID namespaces here: {probe.stderr.strip()[:200]}")


NS_PEER = r"""
import json, os, sys, threading, pyshm
name, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    c = pyshm.Channel(name)
except pyshm.ProtocolError as e:
    print("refused", e, flush=True)
    sys.exit(0)
print("ready", os.getpid(), flush=True)
sys.stdin.readline()            # go: both peers are attached
def send():
    for i in range(n):
        c.send(json.dumps([me, i]).encode(), timeout=60)
t = threading.Thread(target=send)
t.start()
got = [json.loads(c.recv(timeout=60)) for _ in range(n)]
t.join()
print(json.dumps(got), flush=True)
"""


@pytest.mark.parametrize("messages", [3000])
def test_pid_1_of_two_namespaces_share_a_channel(pyshm_name, pyshm_child, messages):
    """Issue 13, point 10: two processes that are each PID 1 of their own PID
    namespace.  The robust mutexes saw the other's owner TID (1) as their
    own: EDEADLK, thousands of ProtocolErrors.  The futex build names lock
    owners by liveness slots (byte-range locks on the shared file), which
    mean the same in every namespace: both send and receive through one
    small channel, every message arrives once, in each sender's order.  The
    fallback build names owners by pid, which cannot work across namespaces:
    a process of another namespace is refused at attach, with the reason."""
    _namespaces_or_skip()
    with pyshm.Channel(pyshm_name, create=True, capacity=512):
        peers = [pyshm_child.command(*UNSHARE, sys.executable, "-c", NS_PEER, pyshm_name,
                                     me, messages) for me in (0, 1)]
        if pyshm.CHANNEL_WAIT == "fallback":
            for p in peers:
                line = p.line()
                assert line.startswith("refused") and "PID namespace" in line, line
                p.finish()
            return
        for p in peers:
            assert p.line() == "ready 1"
        for p in peers:
            p.send_line("go")
        got = [json.loads(p.line()) for p in peers]
        for p in peers:
            p.finish()
    delivered = [tuple(m) for lst in got for m in lst]
    assert sorted(delivered) == [(me, i) for me in (0, 1) for i in range(messages)]
    for lst in got:                     # each sender's order, as each receiver saw it
        for me in (0, 1):
            seq = [i for who, i in lst if who == me]
            assert seq == sorted(seq)


NS_HOLDER = r"""
import os, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", os.getpid(), flush=True)
sys.stdin.readline()            # killed while waiting here
"""

NS_SENDER = r"""
import os, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    try:
        c.send(b"through", timeout=float(line))
        print("ok", flush=True)
    except (TimeoutError, pyshm.ProtocolError) as e:
        print(type(e).__name__, flush=True)
"""


@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex" or not have_ofd_locks,
                    reason="liveness slots of the futex build")
def test_dead_owner_in_another_namespace_is_recovered(pyshm_name, pyshm_child):
    """A lock whose owner lives in another PID namespace is that owner's for
    as long as it lives, and free once it dies: no pid is compared.  The
    holder is simulated: its slot is written into the send lock's word."""
    _namespaces_or_skip()
    with pyshm.Channel(pyshm_name, create=True, capacity=512) as c:
        mine = live_slots(pyshm_name)
        holder = pyshm_child.command(*UNSHARE, sys.executable, "-c", NS_HOLDER, pyshm_name)
        assert holder.line() == "ready 1"
        slot, = live_slots(pyshm_name) - mine
        with pyshm.SharedMemory(pyshm_name) as raw:
            raw.write(struct.pack("<I", slot), SEND_LOCK)
        sender = pyshm_child.command(*UNSHARE, sys.executable, "-c", NS_SENDER, pyshm_name)
        assert sender.line() == "ready 1"
        sender.send_line("0.2")
        assert sender.line() == "TimeoutError"      # its owner lives
        holder.kill()                               # unshare, and with it its PID 1
        holder.reap()
        sender.send_line(str(DEADLINE))
        assert sender.line() == "ok"                # taken over from the dead owner
        assert c.recv(timeout=DEADLINE) == b"through"
        sender.finish()


def test_channel_users_counts_attached_objects(pyshm_name, pyshm_child):
    """_pyshm._channel_users, what `pyshm rm --stale` asks (issue 19, point
    7): how many Channel objects have the channel open now -- in this
    process or another -- read from the liveness slots without attaching;
    0 once all are gone.  None in the builds that keep no such record (the
    fallback's pid locks, Windows)."""
    from pyshm import _pyshm

    with pyshm.Channel(pyshm_name, create=True, capacity=512) as c:
        if pyshm.CHANNEL_WAIT != "futex":
            assert _pyshm._channel_users(pyshm_name) is None
            return
        assert _pyshm._channel_users(pyshm_name) == 1
        with pyshm.Channel(pyshm_name):
            assert _pyshm._channel_users(pyshm_name) == 2
        assert _pyshm._channel_users(pyshm_name) == 1
        other = pyshm_child(NS_HOLDER, pyshm_name)
        assert other.line() == f"ready {other.pid}"
        assert _pyshm._channel_users(pyshm_name) == 2
        other.kill()                    # a killed user's slot goes with it
        other.reap()
        assert _pyshm._channel_users(pyshm_name) == 1
        c.send(b"intact")
    assert _pyshm._channel_users(pyshm_name) == 0
    with pyshm.Channel(pyshm_name) as again:    # counting changed nothing
        assert again.recv(timeout=0) == b"intact"


# ---- without /proc ---------------------------------------------------------------------

# Runs with /proc hidden (a tmpfs over it, in a mount namespace of its own).
# Attaches, forks a child that keeps its copy of the memory but lets go of
# every descriptor (as a daemonising child does) and lives on until stdin
# closes, then holds the send lock in a reserve() block until it is killed.
NO_PROC_HOLDER = r"""
import os, sys, pyshm
assert not os.path.exists("/proc/self/fd"), "/proc is still mounted"
c = pyshm.Channel(sys.argv[1])
c.send(b"from the holder", timeout=60)
r, w = os.pipe()
if os.fork() == 0:
    os.closerange(3, w)
    os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))
    os.write(1, f"child {os.getpid()}\n".encode())
    os.close(w)                 # the last descriptor: the parent goes on
    sys.stdin.read()
    os._exit(0)
os.close(w)
os.read(r, 1)                   # the end: the child has closed everything
os.write(1, b"forked\n")
with c.reserve(8) as buf:
    buf[:] = b"never!!!"
    os.write(1, b"holding\n")
    sys.stdin.read()            # killed while waiting here
"""


@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex" or not have_ofd_locks,
                    reason="liveness slots of the futex build")
def test_channel_users_sees_objects_in_another_namespace(pyshm_name, pyshm_child):
    """A Channel object held by PID 1 of another PID namespace counts, seen
    from this namespace; and it counts in that namespace what this one holds."""
    from pyshm import _pyshm

    _namespaces_or_skip()
    count = ("import sys; from pyshm import _pyshm; "
             "print(_pyshm._channel_users(sys.argv[1]))")
    with pyshm.Channel(pyshm_name, create=True, capacity=512):
        far = pyshm_child.command(*UNSHARE, sys.executable, "-c", NS_HOLDER, pyshm_name)
        assert far.line() == "ready 1"
        assert _pyshm._channel_users(pyshm_name) == 2
        there = pyshm_child.command(*UNSHARE, sys.executable, "-c", count, pyshm_name)
        assert there.finish() == "2\n"
        far.finish()                    # unshare waits for its PID 1 to exit
        assert _pyshm._channel_users(pyshm_name) == 1


@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex",
                    reason="liveness slots of the futex build (the fallback's locks hold pids, "
                    "and its PID-namespace check reads /proc)")
def test_without_proc_the_slot_lives_on_a_description_of_its_own(pyshm_name, pyshm_child):
    """Without /proc an object cannot reopen its segment through
    /proc/self/fd: it reopens it by name (same device and inode), so that
    its slot's lock is not on the description its mapping holds.  Here a
    fork child keeps the mapping (and so that description) but closes its
    descriptors; the parent dies holding the send lock.  The lock must be
    free at once -- on the mapped description it would stay held for as
    long as the child lives."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to hide /proc in a mount namespace")
    probe = subprocess.run([unshare, "--mount", "sh", "-c",
                            "mount -t tmpfs tmpfs /proc && test ! -e /proc/self"],
                           capture_output=True, text=True, timeout=DEADLINE)
    if probe.returncode != 0:
        pytest.skip(f"cannot hide /proc here: {probe.stderr.strip()[:200]}")
    script = (f"mount -t tmpfs tmpfs /proc && "
              f"exec {shlex.quote(sys.executable)} -c {shlex.quote(NO_PROC_HOLDER)} \"$@\"")
    with pyshm.Channel(pyshm_name, create=True, capacity=512) as c:
        holder = pyshm_child.command(unshare, "--mount", "sh", "-c", script, "sh", pyshm_name)
        try:
            said = holder.line()
            assert said.startswith("child "), said
            child = int(said.split()[1])
            holder.expect("forked")
            holder.expect("holding")
            with pytest.raises(TimeoutError):
                c.send(b"while it holds the lock", timeout=0)
            holder.kill()
            holder.wait()
            os.kill(child, 0)           # the fork child lives on, mapping and all
            c.send(b"after the holder died", timeout=DEADLINE)
            assert c.recv(timeout=0) == b"from the holder"
            assert c.recv(timeout=0) == b"after the holder died"
            os.kill(child, 0)
        finally:
            holder.stdin.close()        # the child's too: it exits
            holder.reap()
