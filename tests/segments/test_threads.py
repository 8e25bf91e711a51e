"""One SharedMemory object used by several threads of one process, and fork.

Any method may be called from any thread, close() included, while another
thread is inside a call: a copy running without the GIL keeps the mapping
until it ends.  A fork child has only the thread that forked: copies that
other threads were running are not its own, memoryviews are, and no lock
another thread held at the fork stays taken there (track=True's).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

import pytest

import pyshm

from pyshm.pytest_plugin import DEADLINE

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")

BIG = 64 << 20


def while_copying(shm: pyshm.SharedMemory, data: bytes, then):
    """Run THEN in this thread while another thread is inside one large
    shm.write(data), and return what THEN returned.  Preemption is off from
    the moment the copier starts: this thread can only run once the copier
    has released the GIL for its copy, and the copier cannot finish its call
    before this thread lets go of the GIL again."""
    started = threading.Event()
    written = []

    def copier():
        started.set()               # keeps the GIL until the copy lets it go
        written.append(shm.write(data))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    thread = threading.Thread(target=copier)
    try:
        thread.start()
        started.wait()
        result = then()
    finally:
        sys.setswitchinterval(interval)
        thread.join(DEADLINE)
    assert written == [len(data)]
    return result


@linux_only
def test_close_during_a_copy_waits_for_it(pyshm_name, is_mapped):
    data = os.urandom(1 << 20) * (BIG >> 20)
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=BIG)
    try:
        # close() succeeds at once (it used to raise BufferError, counting
        # the copy as an export); the copy ends normally and unmaps.
        while_copying(shm, data, shm.close)
        assert shm.closed
        assert not is_mapped(pyshm_name)
        with pytest.raises(ValueError, match="closed"):
            shm.read(1)
        with pyshm.SharedMemory(pyshm_name) as again:
            assert again.read() == data
    finally:
        shm.close()


def test_close_and_dealloc_unmap_without_the_gil(pyshm_name, gil_released_during):
    # Tearing down a large populated mapping takes a while: the GIL is let go.
    def fresh():
        shm = pyshm.SharedMemory(pyshm_name, create=True, size=BIG)
        shm.write(b"\1" * BIG)           # every page mapped in
        pyshm.unlink(pyshm_name)
        return shm

    assert any(gil_released_during(fresh().close) for _ in range(5))
    holder = []
    progressed = []
    for _ in range(5):
        holder.append(fresh())
        progressed.append(gil_released_during(holder.clear))    # the last reference
        if progressed[-1]:
            break
    assert any(progressed), progressed


def _in_child(body) -> None:
    """Fork; run BODY in the child, whose exit status says how it went."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the fork child failed (see stderr)"


@needs_fork
@linux_only
def test_fork_during_a_copy_child_can_close(pyshm_name, is_mapped):
    # The child inherits the object in the middle of another thread's copy;
    # that thread does not exist there: its close() must work and unmap.
    data = bytes(BIG)
    with pyshm.SharedMemory(pyshm_name, create=True, size=BIG) as shm:
        def child():
            shm.close()
            assert shm.closed and not is_mapped(pyshm_name)

        while_copying(shm, data, lambda: _in_child(child))


@needs_fork
@linux_only
def test_fork_keeps_exports(pyshm_name, is_mapped):
    # A memoryview lives on in the child: close() still refuses there until
    # it is released (a view of its own: close() releases `buf` itself).
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096) as shm:
        view = memoryview(shm)

        def child():
            with pytest.raises(BufferError):
                shm.close()
            view[0] = 7
            assert shm.read(1) == b"\7"
            view.release()
            shm.close()
            assert not is_mapped(pyshm_name)

        _in_child(child)
        view.release()


# ---- stress: one object, eight threads ----------------------------------------------

REGION = 1 << 20        # each thread's own part of the segment


def _stress_round(thread_stress, name: str, rng: random.Random) -> None:
    """Eight threads share one SharedMemory and make 120 calls each: write,
    read and readinto in their own region (0 bytes, small, and large enough
    to run without the GIL), views of `buf` and memoryviews of their own
    taken and released, close(), ``with`` exits.  What a thread wrote it
    reads back; every exception is a documented one."""
    closing = rng.choice([0.0, 0.0005, 0.002, 0.01])

    def call(shm, tid, seq, own):
        what = own.random()
        size = own.choice([0, 1, 100, 70_000, REGION - 64])
        offset = tid * REGION + own.randrange(REGION - size + 1)
        data = bytes([tid + 1, seq % 256]) * (size // 2) + b"x" * (size % 2)
        if what < 0.45:
            assert shm.write(data, offset) == size
            assert shm.read(size, offset) == data
        elif what < 0.7:
            buf = bytearray(size)
            assert shm.write(data, offset) == size
            assert shm.readinto(buf, offset) == size and buf == data
        elif what < 1 - 2 * closing:
            # The shared cached `buf` (None once closed) or a view of one's own.
            whole = shm.buf if own.random() < 0.5 else memoryview(shm)
            if whole is None:
                return
            with whole[offset:offset + size] as view:
                view[:] = data
                assert shm.read(size, offset) == data
        elif what < 1 - closing:
            with shm:
                pass
        else:
            shm.close()

    # Closed, or close() while views are alive: ValueError, BufferError.
    thread_stress.share(lambda: pyshm.SharedMemory(name, create=True,
                                                   size=thread_stress.threads * REGION),
                        call, 120, (ValueError, BufferError), rng)


def test_eight_threads_share_one_segment(thread_stress, pyshm_names):
    thread_stress.run(lambda rng: _stress_round(thread_stress, pyshm_names(), rng))


@needs_fork
def test_fork_while_another_thread_holds_the_tracking_lock(pyshm_name):
    """track=True keeps its names under a lock (pyshm._track), which another
    thread may hold at the instant of a fork.  That thread is not in the
    child: the lock must not stay taken there, or the child's unlink() --
    which updates those names -- would wait for ever."""
    import pyshm._track as track

    # Not tracked itself (a fork child shares its parent's resource tracker):
    # every unlink() takes the lock all the same.
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=64)
    held, go = threading.Event(), threading.Event()

    def holder():
        with track._lock:
            held.set()
            go.wait(DEADLINE)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(DEADLINE)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                pyshm.unlink(pyshm_name)
                code = 0
            finally:
                os._exit(code)
    finally:
        go.set()
        t.join(DEADLINE)
    end = time.monotonic() + DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the fork child's unlink() waited for the lock of a thread it "
                        "does not have")
        time.sleep(0.01)    # pacing a poll with a deadline
    assert os.waitstatus_to_exitcode(status) == 0
    shm.close()
    with pytest.raises(FileNotFoundError):
        pyshm.unlink(pyshm_name)                # the child removed it
