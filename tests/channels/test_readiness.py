"""Readiness for other loops and many objects (issue 21, points 2 and 3):
fileno() and wait_handle with the documented protocol, pyshm.wait(), and
the engines behind them (platform/ready.h).

The asyncio layer is test_asyncio.py; this file also runs it again with the
watcher-thread engine (PYSHM_READY=thread) and where a seccomp filter
refuses io_uring.
"""

import os
import select
import selectors
import signal
import subprocess
import sys
import threading
import time

import pytest

import pyshm

from .waits import DEADLINE, wait_until_in_channel_wait, wait_until_sleeping

WINDOWS = sys.platform == "win32"
HERE = os.path.dirname(os.path.abspath(__file__))


def test_fileno_protocol_with_selectors(pyshm_name):
    """Readable when a message may be queued; after taking with timeout=0
    until TimeoutError it is armed again and not readable."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as ch, \
            pyshm.Channel(pyshm_name) as peer, selectors.DefaultSelector() as sel:
        sel.register(ch, selectors.EVENT_READ)
        assert sel.select(0) == []
        peer.send(b"one")
        peer.send(b"two")
        assert [key.fileobj for key, _ in sel.select(DEADLINE)] == [ch]
        got = []
        while True:
            try:
                got.append(ch.recv(timeout=0))
            except TimeoutError:
                break
        assert got == [b"one", b"two"]
        assert sel.select(0) == []          # armed again, nothing new
        peer.send(b"three")
        assert sel.select(DEADLINE) != []
        assert ch.recv(timeout=0) == b"three"
        sel.unregister(ch)


def test_fileno_is_ready_at_once_when_a_message_is_queued(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as ch:
        pyshm.Channel(pyshm_name).send(b"early")
        with selectors.DefaultSelector() as sel:
            sel.register(ch, selectors.EVENT_READ)
            assert sel.select(DEADLINE) != []
            sel.unregister(ch)
        assert isinstance(ch.wait_handle, int)


FD_SENDER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
c.send(b"from afar")
"""


@pytest.mark.skipif(WINDOWS, reason="select() on POSIX descriptors")
def test_fileno_wakes_across_processes_and_close_closes_it(pyshm_name, pyshm_child):
    ch = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    fd = ch.fileno()
    child = pyshm_child(FD_SENDER, pyshm_name)
    child.expect("ready")
    assert select.select([fd], [], [], 0)[0] == []
    child.send_line("go")
    assert select.select([fd], [], [], DEADLINE)[0] == [fd]
    assert ch.recv(timeout=0) == b"from afar"
    child.finish()
    ch.close()
    with pytest.raises(OSError):
        os.fstat(fd)                        # the descriptor went with the channel
    with pytest.raises(ValueError, match="closed"):
        ch.fileno()


@pytest.mark.skipif(WINDOWS, reason="select() on POSIX descriptors")
def test_a_disarmed_watch_leaves_no_readiness_behind(pyshm_name):
    """A watch whose arm ended (its message came) and that is then taken
    back leaves the descriptor unreadable: no needless wake-up of a loop."""
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as ch, \
            pyshm.Channel(pyshm_name) as peer:
        fd, _, token = ch._hold()
        try:
            assert ch._arm(0) == 0
            peer.send(b"x")
            assert select.select([fd], [], [], DEADLINE)[0] == [fd]
            ch._disarm()
            assert select.select([fd], [], [], 0)[0] == []
            assert ch._take(token) == 0
        finally:
            ch._release()


@pytest.mark.skipif(WINDOWS, reason="select() on POSIX descriptors")
def test_a_wake_survives_another_watchs_disarm(pyshm_name):
    """fileno() with a message queued makes the descriptor ready at once (a
    wake, no watch of its own); pyshm.asyncio taking back a watch of the
    other side meanwhile keeps it ready."""
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as ch, \
            pyshm.Channel(pyshm_name) as peer:
        peer.send(b"x" * 200)                       # queued; too little room for 200 more
        fd = ch.fileno()
        assert select.select([fd], [], [], DEADLINE)[0] == [fd]
        assert ch._arm(1, 200) == 0                 # a send of 200 bytes would wait
        ch._disarm()
        assert select.select([fd], [], [], 0)[0] == [fd]
        assert ch.recv(timeout=0) == b"x" * 200


def test_wait_returns_the_ready_subset_in_order(pyshm_names):
    names = [pyshm_names() for _ in range(10)]
    chans = [pyshm.Channel(n, create=True, capacity=256) for n in names]
    try:
        assert pyshm.wait(chans, timeout=0) == []
        assert pyshm.wait(chans, timeout=0.02) == []
        for i in (7, 2, 5):
            pyshm.Channel(names[i]).send(b"x")
        assert pyshm.wait(chans, timeout=DEADLINE) == [chans[2], chans[5], chans[7]]
        assert pyshm.wait(tuple(c for c in chans if c is not chans[5])) == [chans[2], chans[7]]
        for i in (2, 5, 7):
            chans[i].recv(timeout=0)
        assert pyshm.wait(iter(chans), timeout=0) == []
    finally:
        for c in chans:
            c.close()


WAIT_SENDER = r"""
import sys, pyshm
names = sys.argv[2:]
chans = [pyshm.Channel(n) for n in names]
print("ready", flush=True)
sys.stdin.readline()
chans[int(sys.argv[1])].send(b"wake")
"""


@pytest.mark.parametrize("count", [1, 10, 200])
def test_wait_wakes_across_processes(pyshm_names, pyshm_child, count):
    """One channel, ten, and more than one futex_waitv or
    WaitForMultipleObjects call takes (the descriptors are polled then, the
    thread pool waits on Windows)."""
    names = [pyshm_names() for _ in range(count)]
    chans = [pyshm.Channel(n, create=True, capacity=64) for n in names]
    try:
        which = count // 2
        child = pyshm_child(WAIT_SENDER, which, *names)
        child.expect("ready")
        result = []
        waiter = threading.Thread(target=lambda: result.append(pyshm.wait(chans, DEADLINE)))
        waiter.start()
        child.send_line("go")
        waiter.join(DEADLINE)
        assert result == [[chans[which]]]
        child.finish()
    finally:
        for c in chans:
            c.close()


def test_wait_bad_input(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as ch:
        with pytest.raises(ValueError, match="timeout must not be negative"):
            pyshm.wait([ch], timeout=-1)
        with pytest.raises(TypeError, match="not a pyshm Channel"):
            pyshm.wait([ch, object()])
        with pytest.raises(TypeError, match="not a pyshm Channel"):
            with pyshm.SharedMemory(pyshm_name + "m", create=True, size=64) as shm:
                try:
                    pyshm.wait([shm])
                finally:
                    shm.unlink()
        with pytest.raises(TypeError, match="iterable of Channels"):
            pyshm.wait(ch)
        with pytest.raises(ValueError, match="no objects"):
            pyshm.wait([])
        with pytest.raises(TypeError):
            pyshm.wait([ch], timeout="soon")
    with pytest.raises(ValueError, match="closed"):
        pyshm.wait([ch], timeout=0)


def test_wait_ends_when_another_thread_closes(pyshm_name):
    ch = pyshm.Channel(pyshm_name, create=True, capacity=256)
    errors = []

    def waiter():
        try:
            pyshm.wait([ch], DEADLINE)
        except ValueError as e:
            errors.append(str(e))

    t = threading.Thread(target=waiter)
    t.start()
    # Inside the wait (registered as a sleeper), then closed.
    while t.native_id is None:
        time.sleep(0.001)   # pacing a poll with a deadline (the thread starts)
    wait_until_in_channel_wait(pyshm_name, t.native_id, pyshm.CHANNEL_WAIT)
    ch.close()
    t.join(DEADLINE)
    assert not t.is_alive()
    assert errors and "closed" in errors[0]


CTRL_C_WAITER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
try:
    pyshm.wait([c])
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.skipif(WINDOWS, reason="SIGINT to a child: Windows delivers Ctrl-C to a console")
def test_wait_is_interrupted_by_ctrl_c(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=256):
        child = pyshm_child(CTRL_C_WAITER, pyshm_name)
        child.expect("ready")
        # Inside the wait: registered as a sleeper in the header (the
        # fallback registers nothing: asleep in its naps).
        if pyshm.CHANNEL_WAIT == "fallback":
            wait_until_sleeping(child.pid)
        else:
            wait_until_in_channel_wait(pyshm_name, 0, pyshm.CHANNEL_WAIT)
        child.send_signal(signal.SIGINT)
        child.expect("interrupted")
        child.finish()


# ---- the engines ------------------------------------------------------------------

SECCOMP_NO_IO_URING = r"""
import ctypes, struct, sys
# A seccomp filter that answers io_uring_setup (425) with EPERM, as
# container runtimes' default profiles do; everything else is allowed.
libc = ctypes.CDLL(None, use_errno=True)
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[__import__("platform").machine()]
def ins(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)
prog = b"".join([
    ins(0x20, 0, 0, 4),                 # A = arch
    ins(0x15, 1, 0, AUDIT_ARCH),        # == arch ? skip : kill-less allow
    ins(0x06, 0, 0, 0x7FFF0000),        # other arch: allow
    ins(0x20, 0, 0, 0),                 # A = nr
    ins(0x15, 0, 1, 425),               # io_uring_setup ?
    ins(0x06, 0, 0, 0x00050000 | 1),    # ERRNO(EPERM)
    ins(0x06, 0, 0, 0x7FFF0000),        # allow
])
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(len(prog) // 8, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0       # PR_SET_SECCOMP, FILTER
import pyshm, select
c = pyshm.Channel(sys.argv[1])
fd = c.fileno()
print(c._ready_engine, flush=True)
other = pyshm.Channel(sys.argv[1])
other.send(b"x")
assert select.select([fd], [], [], 60)[0] == [fd]
print(c.recv(timeout=0).decode(), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or pyshm.CHANNEL_WAIT != "futex",
                    reason="io_uring: the Linux futex build")
def test_io_uring_refused_falls_back_to_the_thread_engine(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=256):
        child = pyshm_child(SECCOMP_NO_IO_URING, pyshm_name)
        assert child.line() == "thread"
        assert child.line() == "x"
        child.finish()


MANY_WATCHES = r"""
import os, select, sys, time, pyshm
# More armed watches than one futex_waitv takes (127 besides the control
# word): the thread engine shares them out among watchers, each asleep in
# the kernel with no timeout (no naps, no polling).
before = set(os.listdir("/proc/self/task"))
names = sys.argv[1:]
chans = [pyshm.Channel(n) for n in names]
fds = [c.fileno() for c in chans]           # arms each receive side
assert chans[0]._ready_engine == "thread", chans[0]._ready_engine
watchers = sorted(set(os.listdir("/proc/self/task")) - before)
print("watchers", len(watchers), flush=True)
WAITV = {"x86_64": 449, "aarch64": 449}[os.uname().machine]
end = time.monotonic() + 60
for tid in watchers:
    while True:
        fields = open(f"/proc/self/task/{tid}/syscall").read().split()
        # "449 waiters nr flags timeout clockid ...": asleep in futex_waitv
        if fields[0] == str(WAITV):
            assert int(fields[2], 16) <= 128, fields
            assert int(fields[4], 16) == 0, fields      # no timeout: no naps
            break
        assert time.monotonic() < end, fields
        time.sleep(0.001)       # pacing a poll with a deadline, not a guess
print("asleep", flush=True)
sys.stdin.readline()
ready = set()
while len(ready) < len(fds):
    r, _, _ = select.select([f for f in fds if f not in ready], [], [], 60)
    assert r, f"{len(fds) - len(ready)} never became readable"
    ready.update(r)
print("woken", len(ready), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or pyshm.CHANNEL_WAIT != "futex",
                    reason="the thread engine's futex_waitv watchers (Linux futex build)")
def test_thread_engine_sleeps_in_the_kernel_beyond_127_watches(pyshm_names, pyshm_child,
                                                               monkeypatch):
    """300 receive sides armed at once with the thread engine: three
    watcher threads (127 + 127 + 46), each asleep in futex_waitv with no
    timeout, and every descriptor woken by a send from another process."""
    names = [pyshm_names() for _ in range(300)]
    chans = [pyshm.Channel(n, create=True, capacity=64) for n in names]
    try:
        monkeypatch.setenv("PYSHM_READY", "thread")
        child = pyshm_child(MANY_WATCHES, *names)
        assert child.line() == "watchers 3"
        child.expect("asleep")
        child.send_line("go")
        for c in chans:
            c.send(b"x")
        assert child.line() == "woken 300"
        child.finish()
    finally:
        for c in chans:
            c.close()


@pytest.mark.skipif(WINDOWS or os.environ.get("PYSHM_READY") == "thread"
                    or pyshm.CHANNEL_WAIT != "futex",
                    reason="runs the asyncio tests again with the thread engine (the "
                           "portable build has no other; Windows has its own)")
def test_asyncio_tests_with_the_thread_engine(tmp_path):
    """test_asyncio.py again, where the watcher thread serves readiness (as
    where io_uring is refused), in a fresh interpreter."""
    env = dict(os.environ, PYSHM_READY="thread")
    tests = os.path.join(HERE, "test_asyncio.py")
    here = os.path.join(HERE, "test_readiness.py")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-x", tests, here + "::test_fileno_protocol_with_selectors",
                           here + "::test_a_disarmed_watch_leaves_no_readiness_behind",
                           here + "::test_a_wake_survives_another_watchs_disarm"],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
