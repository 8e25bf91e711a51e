"""SharedMemory between Python processes: the design card's test.

Process A creates a segment and writes; process B opens it by name, checks
what A wrote and replies at another offset; A reads the reply.  The parent
(pytest) only starts them (the roles are in peer.py), relays the handshake
and compares digests.  Peers that are not pyshm (the standard library, a C
program) are in test_interop.py.  At the end: why a raw segment written by
another process can be read torn, against a Slot (docs/native.md, "A native program
on the other end").
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

import pyshm
from pyshm.pytest_plugin import DEADLINE

from .peer import pattern, regions

PEER = Path(__file__).with_name("peer.py")     # the child roles

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux: /dev/shm, tmpfs posix_fallocate")

SIZES = [1, 2, 4095, 4096, 4097, 0x100, 1 << 20, (1 << 20) + 3]


def exchange(pyshm_child, name: str, size: int) -> None:
    a = pyshm_child.script(PEER, "create", name, str(size), "7")
    a.expect("ready")
    b = pyshm_child.script(PEER, "answer", name, str(size), "7", "11")
    b.expect("ok")
    b.finish()
    a.send_line("go")
    digest = a.line()
    a.finish()
    _, _, reply = regions(size)
    assert digest == hashlib.sha256(pattern(11, reply[1])).hexdigest()


@pytest.mark.parametrize("size", SIZES)
def test_two_processes_exchange_both_ways(pyshm_child, pyshm_name, size):
    exchange(pyshm_child, pyshm_name, size)


def test_two_processes_one_gib(pyshm_child, pyshm_name):
    # 1 GiB: reserved up front on tmpfs (no SIGBUS later), touched only at
    # the ends and in the middle.
    exchange(pyshm_child, pyshm_name, 1 << 30)


def test_seed_scenario_strings(pyshm_child, pyshm_name):
    """The Windows recipe's exchange: a NUL-terminated string each way."""
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100) as shm:
        shm.write(b"data from process 1\0")
        b = pyshm_child.script(PEER, "poke", pyshm_name, "128", b"reply from process 2\0".hex())
        b.expect("done")
        b.finish()
        assert shm.read(21, 128) == b"reply from process 2\0"
        text = pyshm_child((
            "import pyshm, sys; s = pyshm.SharedMemory(sys.argv[1]); "
            "print(s.read().split(b'\\0')[0].decode(), flush=True); s.close()"
        ), pyshm_name)
        assert text.finish().strip() == "data from process 1"


def test_child_writes_while_parent_holds_memoryview(pyshm_child, pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8192) as shm:
        view = memoryview(shm)      # a view of the user's own: it pins the mapping
        try:
            assert view[4000:4004] == b"\0\0\0\0"
            child = pyshm_child.script(PEER, "poke", pyshm_name, "4000", "deadbeef")
            child.expect("done")
            child.finish()
            # The parent's long-lived view sees the child's write: same pages.
            assert view[4000:4004] == bytes.fromhex("deadbeef")
            with pytest.raises(BufferError):
                shm.close()
            assert not shm.closed
            assert shm.read(4, 4000) == bytes.fromhex("deadbeef")
        finally:
            view.release()


# ---- creation seen from other processes -------------------------------------------

def test_racing_creators_and_openers(creation_race):
    # Six processes create the same names with exist_ok=True while two poll
    # for them with plain opens: every open gets the whole segment (it used
    # to give ValueError "size 0" between the creator's shm_open and its
    # ftruncate).
    assert creation_race("SharedMemory", 1 << 20) == []


# A creator that does not publish whole (another library: shm_open, then
# ftruncate) is seen by an opener with size 0 for a moment: the opener waits.
OPEN_EMPTY = r"""
import signal, sys, pyshm
name, how = sys.argv[1], sys.argv[2]
class Stop(Exception):
    pass
def handler(signum, frame):
    raise Stop
if how == "alarm":
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
try:
    with pyshm.SharedMemory(name) as shm:
        print("opened", shm.size, flush=True)
except Stop:
    print("stopped", flush=True)
except ValueError as exc:
    print("ValueError:", exc, flush=True)
"""


def _empty_object(name: str) -> None:
    """What shm_open(O_CREAT) makes before its creator's ftruncate."""
    os.close(os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))


def _wait_until_asleep(pid: int) -> None:
    """Until process PID sleeps in nanosleep or clock_nanosleep (x86-64 and
    aarch64 numbers), by /proc/PID/syscall; fails at the deadline."""
    sleeps = {35, 230} if os.uname().machine == "x86_64" else {101, 115}
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
        if fields and fields[0].isdigit() and int(fields[0]) in sleeps:
            return
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess
    pytest.fail(f"process {pid} never slept waiting")


@linux_only
def test_open_waits_for_the_creator_to_size_it(pyshm_name, pyshm_child):
    _empty_object(pyshm_name)
    with pyshm_child(OPEN_EMPTY, pyshm_name, "wait") as child:
        _wait_until_asleep(child.pid)       # waiting, not failed
        os.truncate(f"/dev/shm/{pyshm_name}", 4096)
        assert child.line() == "opened 4096"
        child.finish()


@linux_only
def test_open_of_an_object_that_stays_empty(pyshm_name, pyshm_child):
    _empty_object(pyshm_name)
    with pyshm_child(OPEN_EMPTY, pyshm_name, "wait") as child:
        assert child.line().startswith("ValueError: segment has size 0")
        child.finish()


@linux_only
def test_signal_handler_that_raises_ends_the_wait(pyshm_name, pyshm_child):
    _empty_object(pyshm_name)
    with pyshm_child(OPEN_EMPTY, pyshm_name, "alarm") as child:
        assert child.line() == "stopped"
        child.finish()


# Linux creates whole through linkat(2): AT_EMPTY_PATH needs
# CAP_DAC_READ_SEARCH, so an unprivileged creator links /proc/self/fd/N.
UNPRIVILEGED_CREATE = r"""
import os, sys, pyshm
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
shm_name, chan_name = sys.argv[1:3]
with pyshm.SharedMemory(shm_name, create=True, size=5000) as shm, \
        pyshm.Channel(chan_name, create=True, capacity=4096) as chan:
    try:
        pyshm.SharedMemory(shm_name, create=True, size=10)
    except FileExistsError:
        pass
    chan.send(b"x")
    with pyshm.SharedMemory(shm_name) as again, pyshm.Channel(chan_name) as other:
        print(again.size, other.recv(timeout=0), os.stat("/dev/shm/" + shm_name).st_uid,
              flush=True)
"""


@linux_only
def test_unprivileged_creator(pyshm_names, pyshm_child):
    shm_name, chan_name = pyshm_names(), pyshm_names()
    with pyshm_child(UNPRIVILEGED_CREATE, shm_name, chan_name) as child:
        uid = 65534 if os.geteuid() == 0 else os.geteuid()
        assert child.line() == f"5000 b'x' {uid}"
        child.finish()


# ---- signals during a create ------------------------------------------------------

# Create 2 GiB (posix_fallocate takes a good part of a second) while SIGALRM
# comes: once, with a handler that raises; or every 10 ms, with one that
# does not.
INTERRUPTED_CREATE = r"""
import os, signal, sys, pyshm
name, how = sys.argv[1], sys.argv[2]
calls = []
class Stop(Exception):
    pass
def handler(signum, frame):
    calls.append(signum)
    if how == "raise":
        raise Stop
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.02, 0.01 if how == "count" else 0)
try:
    shm = pyshm.SharedMemory(name, create=True, size=2 << 30)
except Stop:
    signal.setitimer(signal.ITIMER_REAL, 0)
    print("stopped, left:", os.path.exists("/dev/shm/" + name), flush=True)
else:
    signal.setitimer(signal.ITIMER_REAL, 0)
    print("created", shm.size == 2 << 30, "signals:", len(calls) > 0, flush=True)
    shm.close()
"""


@linux_only
def test_signal_handler_that_raises_stops_a_create(pyshm_name, pyshm_child):
    # The handler runs during the create (the interrupted posix_fallocate
    # comes back to Python), its exception ends it, and nothing is left:
    # before, the create ran to its end and the exception came after it,
    # with the segment made.
    with pyshm_child(INTERRUPTED_CREATE, pyshm_name, "raise") as child:
        assert child.line() == "stopped, left: False"
        child.finish()


@linux_only
def test_signals_without_exception_let_a_create_finish(pyshm_name, pyshm_child):
    # A signal every 10 ms (a profiler's timer, say): each interrupted call
    # is made again, in smaller pieces, and the create ends.
    with pyshm_child(INTERRUPTED_CREATE, pyshm_name, "count") as child:
        assert child.line() == "created True signals: True"
        child.finish()


# ---- track=True: the creator's segment goes when the creator does ------------------

TRACKED_CHILD = (
    "import pyshm, sys\n"
    "kind, name, how = sys.argv[1:]\n"
    "make = {'channel': pyshm.Channel, 'slot': pyshm.Slot}.get(kind, pyshm.SharedMemory)\n"
    "args = {'capacity': 4096} if kind == 'channel' else {'size': 4096}\n"
    "obj = make(name, create=True, track=True, **args)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "if how == 'unlink':\n"
    "    obj.unlink()\n"
    "    print('unlinked', flush=True)\n"
    "    sys.stdin.readline()\n"
)


def wait_until_gone(name: str, deadline: float = 60.0) -> bool:
    """Poll (with a deadline) until NAME no longer opens: the resource
    tracker removes it once it sees its creator's pipe close."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            pyshm.SharedMemory(name).close()
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def until_tracker_done(child) -> str:
    """Let CHILD exit and return its stderr.  The resource tracker it started
    inherited that pipe: its end means the tracker is done too."""
    out, err = child.communicate(input="\n", timeout=60)
    assert child.returncode == 0, err
    return err


posix_only = pytest.mark.skipif(sys.platform == "win32",
                                reason="Windows names die with their last handle anyway")


@posix_only
@pytest.mark.parametrize("kind", ["segment", "channel", "slot"])
def test_track_removes_the_segment_when_the_creator_is_killed(pyshm_child, pyshm_name, kind):
    child = pyshm_child(TRACKED_CHILD, kind, pyshm_name, "crash")
    child.expect("ready")
    with pyshm.SharedMemory(pyshm_name):
        pass                            # it exists while the creator lives
    child.kill()
    child.wait(timeout=60)
    assert wait_until_gone(pyshm_name)


@posix_only
def test_track_removes_the_segment_at_a_normal_exit_and_warns(pyshm_child, pyshm_name):
    child = pyshm_child(TRACKED_CHILD, "segment", pyshm_name, "exit")
    child.expect("ready")
    err = until_tracker_done(child)
    assert "leaked shared_memory" in err        # as the standard library warns
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


@posix_only
def test_track_forgets_an_unlinked_name(pyshm_child, pyshm_name):
    child = pyshm_child(TRACKED_CHILD, "segment", pyshm_name, "unlink")
    child.expect("ready")
    child.send_line("")
    child.expect("unlinked")
    # The name made again by someone else: the tracker must leave it alone.
    with pyshm.SharedMemory(pyshm_name, create=True, size=8) as mine:
        err = until_tracker_done(child)
        assert "leaked" not in err and "Traceback" not in err, err
        with pyshm.SharedMemory(pyshm_name) as again:
            assert again.size == mine.size == 8


@posix_only
def test_track_never_removes_what_it_only_opened(pyshm_child, pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        shm.write(b"mine")
        child = pyshm_child(
            "import pyshm, sys\n"
            "a = pyshm.SharedMemory(sys.argv[1], track=True)\n"
            "b = pyshm.SharedMemory(sys.argv[1], create=True, size=8, exist_ok=True,"
            " track=True)\n"
            "c = pyshm.Channel(create=True, capacity=64, track=True)\n"
            "from pyshm import _track\n"
            "print(sorted(_track.tracked()) == [c.name], flush=True)\n"
            "c.unlink()\n", pyshm_name)
        assert child.finish() == "True\n"
        with pyshm.SharedMemory(pyshm_name) as again:
            assert again.read(4) == b"mine"


# ---- a write caught halfway: raw bytes against a Slot ----------------------------------
#
# Why a raw segment written by another process can be read torn (docs/native.md, "A
# native program on the other end"): a write is several stores, and nothing
# hides the ones done from a reader until the last.  A writer stopped
# between two stores -- descheduled inside its memcpy, or killed there --
# is the same thing, made to happen every time: the writer below stores the
# first field of a new 24-byte struct, says "halfway" and waits.  The raw
# reader then sees the new first field and the old rest; a Slot's reader
# sees the old value whole until the publish ends, and still sees it when
# the writer is killed halfway, after which another writer goes on.

HALFWAY_WRITER = """if True:
    import pyshm, struct, sys
    kind, name = sys.argv[1:3]
    new = struct.pack("=3Q", 2, 2, 2)
    if kind == "raw":
        shm = pyshm.SharedMemory(name)
        shm.write(new[:8])              # the first field's store
        print("halfway", flush=True)
        sys.stdin.readline()
        shm.write(new[8:], 8)           # the rest
    else:
        slot = pyshm.Slot(name)
        with slot.reserve() as buf:     # published whole when the block ends
            buf[:8] = new[:8]
            print("halfway", flush=True)
            sys.stdin.readline()
            buf[8:] = new[8:]
    print("done", flush=True)
"""

OLD, TORN, NEW = (1, 1, 1), (2, 1, 1), (2, 2, 2)


def fields(data: bytes) -> tuple:
    import struct

    return struct.unpack("=3Q", data)


def test_a_write_caught_halfway_tears_a_raw_read(pyshm_child, pyshm_name):
    import struct

    with pyshm.SharedMemory(pyshm_name, create=True, size=24) as shm:
        shm.write(struct.pack("=3Q", *OLD))
        writer = pyshm_child(HALFWAY_WRITER, "raw", pyshm_name)
        writer.expect("halfway")
        assert fields(shm.read(24)) == TORN      # half of one value, half of another
        writer.send_line("")
        writer.expect("done")
        assert fields(shm.read(24)) == NEW


@pytest.mark.parametrize("end", ["finished", "killed"])
def test_a_publish_caught_halfway_is_never_seen(pyshm_child, pyshm_name, end):
    import struct

    with pyshm.Slot(pyshm_name, create=True, size=24) as slot:
        assert slot.publish(struct.pack("=3Q", *OLD)) == 1
        writer = pyshm_child(HALFWAY_WRITER, "slot", pyshm_name)
        writer.expect("halfway")
        generation, value = slot.snapshot()
        assert (generation, fields(value)) == (1, OLD)
        if end == "finished":
            writer.send_line("")
            writer.expect("done")
            generation, value = slot.snapshot()
            assert (generation, fields(value)) == (2, NEW)
            return
        writer.kill()           # halfway, holding the write lock
        writer.wait()
        generation, value = slot.snapshot()
        assert (generation, fields(value)) == (1, OLD)
        # The next writer takes the lock over from the dead one.
        assert slot.publish(struct.pack("=3Q", 3, 3, 3)) == 2
        assert fields(slot.read()) == (3, 3, 3)
