"""One Channel object used by several threads of one process at once.

Any method may be called from any thread, close() included, while another
thread is inside a call; loans too (the stress below), whose views may be
released in any thread and whose blocks may fork.  A blocked receive runs without the GIL; when its
message comes it must take the GIL back holding nothing of the channel: no
lock (other processes' receivers would wait for this process's GIL) and no
message that close() in another thread could unmap under it.
"""

from __future__ import annotations

import collections
import os
import random
import struct
import sys
import threading
import time

import pytest

import pyshm

from .waits import DEADLINE, wait_until_in_channel_wait

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/task/TID/syscall")

# A child whose receiving thread is stopped exactly where it takes the GIL
# back after its wait.  The main thread keeps the GIL from the send on
# (switch interval 1000 s, and every call it makes keeps the GIL: ctypes'
# PyDLL does not release it), watches the receiver in
# /proc/self/task/TID/syscall until it blocks in a futex outside the
# channel's mapping -- the GIL's -- and then says "waiting" and waits for a
# line from the parent.  ACTION "close" then closes the channel before
# letting the receiver run.
STOPPED_RECEIVER = r"""
import ctypes, sys, threading, time, pyshm
name, method, action = sys.argv[1:4]
libc = ctypes.PyDLL(None)       # calls made with the GIL held
c = pyshm.Channel(name)
result = []

def receiver():
    try:
        if method == "recv":
            result.append(c.recv().decode())
        else:
            buf = bytearray(64)
            result.append(bytes(buf[:c.recv_into(buf)]).decode())
    except ValueError as exc:
        result.append(f"ValueError: {exc}")

def mapping():
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("/dev/shm/" + name):
                lo, hi = line.split()[0].split("-")
                return int(lo, 16), int(hi, 16)
    raise SystemExit("channel mapping not found")

def syscall(tid):
    # (number, first argument) of the call the thread is blocked in, or None.
    fd = libc.open(f"/proc/self/task/{tid}/syscall".encode(), 0)
    buf = ctypes.create_string_buffer(512)
    n = libc.read(fd, buf, 511)
    libc.close(fd)
    fields = buf.raw[:max(n, 0)].split()
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), int(fields[1], 16)

def waits_for_gil(call):
    return call is not None and call[0] == 202 and not lo <= call[1] < hi   # futex

def say(text):
    data = (text + "\n").encode()
    libc.write(1, data, len(data))

lo, hi = mapping()
t = threading.Thread(target=receiver)
t.start()
end = time.monotonic() + 60
seen = 0
while seen < 3:                 # blocked in the channel's wait, three looks in a row
    call = syscall(t.native_id)
    seen = seen + 1 if call is not None and not waits_for_gil(call) else 0
    if time.monotonic() > end:
        raise SystemExit("the receiver never blocked")
    time.sleep(0.001)

sys.setswitchinterval(1000.0)   # from here on this thread keeps the GIL
c.send(b"one")                  # small: sent with the GIL held; wakes the receiver
while not waits_for_gil(syscall(t.native_id)):
    if time.monotonic() > end:
        raise SystemExit("the receiver never came back for the GIL")
say("waiting")
line = ctypes.create_string_buffer(16)
libc.read(0, line, 15)          # the parent's go, still holding the GIL
if action == "close":
    c.close()
sys.setswitchinterval(0.005)
t.join()
print(result[0], flush=True)
"""


@linux_only
@pytest.mark.parametrize("method", ["recv", "recv_into"])
def test_receiver_takes_the_gil_back_without_the_lock(pyshm_name, pyshm_child, method):
    # While the child's receiver waits for its GIL, another process receives.
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c, \
            pyshm_child(STOPPED_RECEIVER, pyshm_name, method, "none") as child:
        child.expect("waiting")
        c.send(b"two")
        # The child's receiver must hold no lock now; whichever message it
        # saw, one is here for us at once.
        first = c.recv(timeout=10).decode()
        child.send_line("go")
        assert {first, child.line()} == {"one", "two"}
        child.finish()
        with pytest.raises(TimeoutError):
            c.recv(timeout=0)


@linux_only
@pytest.mark.parametrize("method", ["recv", "recv_into"])
def test_close_while_receiver_takes_the_gil_back(pyshm_name, pyshm_child, method):
    # close() runs while the receiver has found its message and waits for the
    # GIL: the receiver ends with ValueError, the mapping was not taken from
    # under it (no crash) and the message stays queued.
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c, \
            pyshm_child(STOPPED_RECEIVER, pyshm_name, method, "close") as child:
        child.expect("waiting")
        child.send_line("go")
        assert child.line().startswith("ValueError:")
        child.finish()
        assert c.recv(timeout=DEADLINE) == b"one"


def test_close_and_dealloc_unmap_without_the_gil(pyshm_names, gil_released_during):
    # Tearing down a large populated mapping takes a while: the GIL is let go.
    def fresh():
        name = pyshm_names()
        c = pyshm.Channel(name, create=True, capacity=(64 << 20) + 8)
        c.send(bytes(64 << 20))          # every page of the ring mapped in
        pyshm.unlink(name)
        return c

    assert any(gil_released_during(fresh().close) for _ in range(5))
    holder, progressed = [], []
    for _ in range(5):
        holder.append(fresh())
        progressed.append(gil_released_during(holder.clear))    # the last reference
        if progressed[-1]:
            break
    assert any(progressed), progressed


@linux_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
def test_fork_during_a_blocked_recv(pyshm_name, is_mapped):
    # A thread waits in recv() when the process forks: the child has no such
    # thread; its close() must unmap, and until then the channel works there.
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c:
        got, tid = [], []

        def receiver():
            tid.append(threading.get_native_id())
            got.append(c.recv(timeout=DEADLINE))

        thread = threading.Thread(target=receiver)
        thread.start()
        while not tid:
            time.sleep(0.001)
        # Inside the channel's wait, and so pinned: the child must then drop
        # a pin that its parent's thread holds (a thread still on its way,
        # waiting for the GIL, holds none and proves nothing).
        wait_until_in_channel_wait(pyshm_name, tid[0], pyshm.CHANNEL_WAIT)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                c.send(b"from the child")
                c.close()
                code = 0 if c.closed and not is_mapped(pyshm_name) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        thread.join(DEADLINE)
        assert os.waitstatus_to_exitcode(status) == 0
        assert got == [b"from the child"]


# ---- stress: one object, eight threads ----------------------------------------------

can_fork = hasattr(os, "fork")


def _fork_in_loan(view, check):
    """Fork inside a loan's block.  The child checks its copy of VIEW with
    CHECK(view), leaves at once (os._exit: the block is left by the caller
    in the parent only) -- but first leaves the loan as a block would, which
    must raise "dead in this child" and end nothing of the ring.  The parent
    waits for it (still inside its block) and fails if the child did."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            check(view)
            loan = view.obj
            try:
                loan.__exit__(None, None, None)
            except RuntimeError as exc:
                code = 0 if "dead in this child" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "fork child inside a loan failed"


def _stress_round(thread_stress, name: str, rng: random.Random) -> None:
    """Eight threads share one Channel (capacity 4096: it fills up and runs
    dry) and make 150 calls each: send (0 to 600 bytes), recv, recv_into
    (sometimes with a buffer too small), reserve() and recv_view() loans --
    some of whose blocks end with a slice of the view alive (BufferError),
    the slice then released by whichever thread comes next; some forking
    inside the block (the child writes into its copy and leaves the loan,
    which is dead there) -- close(), ``with`` exits, each with a short
    timeout.  Every message sent is received exactly once, by a thread or
    by the drain at the end, whole; every exception is a documented one."""
    sent, received, slices = [], [], []
    # How often a call is close() or a with-exit: never in some rounds, so
    # that all the work is done; late or early in the others.
    closing = rng.choice([0.0, 0.0005, 0.002, 0.01])

    def release_a_slice(own):
        try:
            slices.pop(own.randrange(len(slices))).release()
        except (IndexError, ValueError):    # none there (another thread was quicker)
            pass

    def loan_send(chan, body, timeout, own):
        keep = own.random() < 0.1
        fork = can_fork and own.random() < 0.03
        with chan.reserve(len(body), timeout=timeout) as buf:
            buf[:] = body
            if fork:
                # The child's writes land in its private copy, never here.
                _fork_in_loan(buf, lambda view: view.__setitem__(
                    slice(None), b"\xee" * len(view)))
            if keep:
                slices.append(buf[:])       # the block ends with BufferError
        sent.append(body)

    def loan_recv(chan, timeout, own):
        keep = own.random() < 0.1
        fork = can_fork and own.random() < 0.03
        with chan.recv_view(timeout=timeout) as view:
            data = bytes(view)
            if fork:
                _fork_in_loan(view, lambda copy: None if bytes(copy) == data else 1 / 0)
            if keep:
                slices.append(view[:])      # BufferError: the message stays queued
        received.append(data)

    def call(chan, tid, seq, own):
        try:
            one_call(chan, tid, seq, own)
        except RuntimeError as exc:
            # This thread's own loan, its block over but a slice of it not
            # yet released (by any thread): a call on that side would wait
            # for itself (documented).
            if "would wait for itself" not in str(exc):
                raise

    def one_call(chan, tid, seq, own):
        what, timeout = own.random(), own.choice([0, 0.01])
        if slices and own.random() < 0.3:
            release_a_slice(own)
        size = own.choice([0, 0, 8, 100, 600])
        body = b"" if size == 0 else struct.pack("<II", tid, seq).ljust(size, b"p")
        if what < 0.30:
            chan.send(body, timeout=timeout)
            sent.append(body)
        elif what < 0.40:
            loan_send(chan, body, timeout, own)
        elif what < 0.55:
            received.append(chan.recv(timeout=timeout))
        elif what < 0.65:
            loan_recv(chan, timeout, own)
        elif what < 1 - 2 * closing:
            buf = bytearray(own.choice([0, 7, 64, 700]))
            received.append(bytes(buf[:chan.recv_into(buf, timeout=timeout)]))
        elif what < 1 - closing:
            with chan:
                pass
        else:
            chan.close()

    # The drain is made first: on Windows it also keeps the name, which lives
    # only while some handle does.
    with pyshm.Channel(name, create=True, capacity=4096) as drain:
        # Empty, full, too small, closed: TimeoutError and ValueError; a
        # block that ends with a slice alive: BufferError (and RuntimeError
        # for its thread's next call on that side, filtered in call()).
        thread_stress.share(lambda: pyshm.Channel(name), call,
                            150, (TimeoutError, ValueError, BufferError), rng)
        while slices:                       # the loans still held end now
            slices.pop().release()
        while True:
            try:
                received.append(drain.recv(timeout=0))
            except TimeoutError:
                break
    # Each message once, whole: the non-empty ones are unique; the empty ones
    # counted.
    missing = collections.Counter(sent) - collections.Counter(received)
    extra = collections.Counter(received) - collections.Counter(sent)
    assert not missing and not extra, (
        f"lost: {[m[:12] for m in missing.elements()]}, "
        f"unexpected (torn, twice, or a fork child's): {[m[:12] for m in extra.elements()]}")


def test_eight_threads_share_one_channel(thread_stress, pyshm_names):
    thread_stress.run(lambda rng: _stress_round(thread_stress, pyshm_names(), rng))
