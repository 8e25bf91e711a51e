"""One Slot object used by several threads of one process at once.

Any method may be called from any thread, close() included, while another
thread is inside a call.  A reserve() block holds the write lock as a
channel's loan holds its side's: another thread's publish waits for it, the
thread holding it may not publish (it would wait for itself), its last
export may go in any thread, a block whose thread ended is abandoned, and a
fork inside it leaves a dead loan in the child that never reaches the
parent's value.  Copies of 64 KiB and more, and blocked waits, run without
the GIL.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

import pyshm

from .layout import WAITERS, lock_word
from .values import is_whole, value
from .waits import DEADLINE, nap_syscalls

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")


def wait_until_waiting_for_the_lock(name: str, tid: int) -> None:
    """Until thread TID of this process sleeps on the slot's write lock:
    registered in the lock word (futex, Windows: WAITERS), or napping in
    nanosleep (the fallback)."""
    import time
    end = time.monotonic() + DEADLINE
    while True:
        if pyshm.CHANNEL_WAIT == "fallback":
            path = f"/proc/self/task/{tid}/syscall"
            if not os.path.exists(path):
                return
            with open(path) as f:
                fields = f.read().split()
            if fields and fields[0].isdigit() and int(fields[0]) in nap_syscalls:
                return
        elif lock_word(name) & WAITERS:
            return
        assert time.monotonic() < end, "the other writer never waited for the lock"
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess


def _fork_in_block(view) -> None:
    """Fork inside a reserve() block: the child scribbles on its copy of
    VIEW and leaves the block, which must say the loan is dead there and
    publish nothing; the parent waits for it, still in its block."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            view[:] = b"\xee" * len(view)
            try:
                view.obj.__exit__(None, None, None)
            except RuntimeError as exc:
                code = 0 if "dead in this child" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "fork child inside a block failed"


def _stress_round(thread_stress, name: str, rng: random.Random) -> None:
    """Eight threads share one Slot of 600 bytes and make 150 calls each:
    publish, reserve() blocks (some ending with a slice of the view alive --
    BufferError, the slice then released -- some forking inside), read,
    snapshot, readinto (sometimes into a buffer too small), wait with a
    short timeout, generation, close() and ``with`` exits.  Every value read
    is whole; every generation a publish returned is unique (a block's is
    not returned); every exception is a documented one."""
    size = 600
    generations: list[int] = []
    closing = rng.choice([0.0, 0.0005, 0.002, 0.01])
    can_fork = hasattr(os, "fork")

    def reserve(slot, tid, seq, own):
        data = value(tid, seq, size)
        keep = own.random() < 0.1
        fork = can_fork and own.random() < 0.03
        try:
            with slot.reserve(len(data)) as buf:
                buf[:] = data
                if fork:
                    _fork_in_block(buf)
                kept = buf[:] if keep else None
        except BufferError:
            kept.release()          # the block ends now, as a failed one

    def call(slot, tid, seq, own):
        what = own.random()
        if what < 0.25:
            generations.append(slot.publish(value(tid, seq, size)))
        elif what < 0.35:
            reserve(slot, tid, seq, own)
        elif what < 0.50:
            assert is_whole(slot.read())
        elif what < 0.60:
            gen, data = slot.snapshot()
            assert is_whole(data) and (gen == 0) == (data == b"")
        elif what < 0.75:
            buf = bytearray(own.choice([0, 50, 300, size]))
            n = slot.readinto(buf)
            assert is_whole(bytes(buf[:n]))
        elif what < 0.85:
            slot.wait(after=own.choice([None, 0]), timeout=own.choice([0, 0.005]))
        elif what < 1 - 2 * closing:
            assert slot.generation >= 0
        elif what < 1 - closing:
            with slot:
                pass
        else:
            slot.close()

    with pyshm.Slot(name, create=True, size=size) as keeper:
        # Closed: ValueError; a buffer too small: ValueError; no new value
        # in time: TimeoutError.
        thread_stress.share(lambda: pyshm.Slot(name), call, 150, (TimeoutError, ValueError),
                            rng)
        assert lock_word(name) == 0
        assert len(generations) == len(set(generations))
        gen, data = keeper.snapshot()
        assert is_whole(data) and gen >= len(generations)


def test_eight_threads_share_one_slot(thread_stress, pyshm_names):
    thread_stress.run(lambda rng: _stress_round(thread_stress, pyshm_names(), rng))


def test_a_block_in_one_thread_holds_off_another_threads_publish(pyshm_slot):
    s = pyshm_slot(16)
    got, tid = [], []
    with s.reserve(5) as buf:
        buf[:] = b"first"

        def publish():
            tid.append(threading.get_native_id())
            got.append(s.publish(b"second"))

        t = threading.Thread(target=publish)
        t.start()
        while not tid:
            pass
        wait_until_waiting_for_the_lock(s.name, tid[0])
        assert got == [] and s.generation == 0
    t.join(DEADLINE)
    assert not t.is_alive() and got == [2]
    assert s.snapshot() == (2, b"second")
    assert s.wait(after=0, timeout=0) == 2


def test_the_last_export_released_in_another_thread_ends_the_block(pyshm_slot):
    s = pyshm_slot(16)
    with pytest.raises(BufferError):
        with s.reserve() as buf:
            kept = buf[:4]
    assert lock_word(s.name) != 0
    t = threading.Thread(target=kept.release)
    t.start()
    t.join(DEADLINE)
    assert lock_word(s.name) == 0 and s.generation == 0
    assert s.publish(b"free again") == 1


def test_a_block_whose_thread_ended_is_abandoned(pyshm_slot):
    """A thread entered a block and ended without leaving it: the block can
    never be left, so the next publish of this process (coming back from its
    wait for a signal check) ends it as a failed one, and goes on."""
    s = pyshm_slot(16)
    loans = []

    def enter_and_vanish():
        loan = s.reserve()
        buf = loan.__enter__()
        buf[:3] = b"odd"
        loans.append(loan)
        del buf

    t = threading.Thread(target=enter_and_vanish)
    t.start()
    t.join(DEADLINE)
    assert lock_word(s.name) != 0
    assert s.publish(b"after") == 1             # the abandoned block published nothing
    assert s.snapshot() == (1, b"after") and not loans[0].active


def test_close_in_another_thread_ends_a_publish_waiting_for_the_lock(pyshm_name):
    """A publish waiting for a lock held by another object ends with
    ValueError when this object is closed (nothing published)."""
    holder = pyshm.Slot(pyshm_name, create=True, size=8)
    s = pyshm.Slot(pyshm_name)
    result, tid = [], []

    def publish():
        tid.append(threading.get_native_id())
        try:
            s.publish(b"never")
        except ValueError as exc:
            result.append(exc)

    try:
        with holder.reserve() as buf:
            buf[:] = b"holder's"
            t = threading.Thread(target=publish)
            t.start()
            while not tid:
                pass
            wait_until_waiting_for_the_lock(pyshm_name, tid[0])
            s.close()
            t.join(DEADLINE)
            assert not t.is_alive()
            assert len(result) == 1 and "closed" in str(result[0])
        assert holder.snapshot() == (1, b"holder's")
    finally:
        holder.close()


@needs_fork
def test_fork_inside_a_block_leaves_the_parents_value_alone(pyshm_slot):
    s = pyshm_slot(8192)
    s.publish(b"old")
    with s.reserve(5) as buf:
        buf[:] = b"mine!"
        _fork_in_block(buf)
    assert s.snapshot() == (2, b"mine!")
    # The child's dead loan holds nothing: another writer goes on at once.
    assert lock_word(s.name) == 0 and s.publish(b"next") == 3


@needs_fork
def test_a_fork_child_publishes_once_the_parents_block_is_over(pyshm_slot):
    s = pyshm_slot(64)
    r, w = os.pipe()
    with s.reserve(6) as buf:
        buf[:] = b"parent"
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(w)
                os.read(r, 1)           # the parent's block is over
                code = 0 if s.publish(b"child") == 2 else 3
            finally:
                os._exit(code)
        os.close(r)
    os.write(w, b"g")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.snapshot() == (2, b"child")


@pytest.mark.parametrize("method", ["publish", "read", "readinto", "snapshot"])
def test_large_copies_release_the_gil(pyshm_slot, gil_released_during, method):
    size = 32 << 20
    s = pyshm_slot(size)
    data = os.urandom(1 << 20) * 32
    into = bytearray(size)
    s.publish(data)
    call = {"publish": lambda: s.publish(data), "read": s.read,
            "readinto": lambda: s.readinto(into), "snapshot": s.snapshot}[method]
    assert any(gil_released_during(call) for _ in range(5))
    assert s.read() == data


def test_a_blocked_wait_releases_the_gil(pyshm_slot, gil_released_during):
    s = pyshm_slot(8)

    def wait():
        with pytest.raises(TimeoutError):
            s.wait(timeout=0.2)

    assert any(gil_released_during(wait) for _ in range(5))


@needs_fork
def test_threads_do_not_leak_locks_into_fork_children(pyshm_slot):
    """A fork while another thread holds a block: the child's own publish
    waits for the parent's block, not for ever on a lock it thinks is its."""
    s = pyshm_slot(16)
    entered, leave = threading.Event(), threading.Event()

    def hold():
        with s.reserve(4) as buf:
            buf[:] = b"held"
            entered.set()
            leave.wait(DEADLINE)

    t = threading.Thread(target=hold)
    t.start()
    assert entered.wait(DEADLINE)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(w)
            os.read(r, 1)
            code = 0 if s.publish(b"child") == 2 else 3
        finally:
            os._exit(code)
    os.close(r)
    leave.set()
    t.join(DEADLINE)
    os.write(w, b"g")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.snapshot() == (2, b"child")
