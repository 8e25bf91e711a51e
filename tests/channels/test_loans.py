"""Zero-copy loans: Channel.reserve(size) and Channel.recv_view().

What a block does to the message (published / consumed on a normal exit,
nothing seen / left queued when it raises), what happens to its memoryview
afterwards (released; other exports refuse the end of the loan), loans
where the ring wraps (contiguous, through a padding record, up to the
largest message; send() messages too, so that recv_view is always in place), the lock a loan holds (other threads and processes wait
and are woken, the same thread is refused), who may end a loan (its last
export released or the Loan freed in any thread, a thread that ended
inside its block, close() at the latest), waits that close() or a signal
end, fork() during a loan (dead in the child, private views there), and
the bad input.  SIGKILL in the middle of a loan: tests/channels/test_faults.py;
loans in the thread stress: tests/channels/test_threads.py.
"""

from __future__ import annotations

import _thread
import gc
import hashlib
import os
import struct
import sys
import threading
import traceback

import pytest

import pyshm

from .waits import DEADLINE, wait_until_sleeping

try:
    import numpy as np
except ImportError:     # under Wine it never is installed (conftest's numpy fixture)
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="NumPy is not installed (under Wine it "
                                 "never is: NumPy 2.x aborts there)")

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
# Private copies in place (mremap) exist on Linux only: elsewhere a loan
# whose views outlive it keeps its lock (fork: keeps the shared pages).
private_pages = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not private_pages, reason="private copies in place need "
                                "Linux's mremap; elsewhere the loan is kept (docs/loans.md)")

WRITE_CURSOR = 64


def cursor(ch):
    with pyshm.SharedMemory(ch.name) as raw:
        return struct.unpack("<Q", raw.read(8, WRITE_CURSOR))[0]


def move_cursor_to(ch, offset):
    """Messages of the right sizes move the write cursor to OFFSET of the
    ring (a multiple of 8): one to the ring's end exactly first when OFFSET
    lies behind the cursor (no message straddles the end); the channel is
    left empty."""
    at = cursor(ch) % ch.capacity
    if offset < at:
        ch.send(bytes(ch.capacity - at - 8))
        ch.recv()
        at = 0
    if offset > at:
        ch.send(bytes(offset - at - 8))
        ch.recv()
    assert cursor(ch) % ch.capacity == offset and ch.queued == 0


# ---- what a block does ------------------------------------------------------------

def test_reserve_publishes_on_normal_exit(pyshm_channel):
    ch = pyshm_channel(4096)
    with ch.reserve(11) as buf:
        assert isinstance(buf, memoryview) and len(buf) == 11 and not buf.readonly
        assert ch.queued == 0                   # not visible while held
        buf[:] = b"hello world"
    assert ch.recv(timeout=0) == b"hello world"


def test_exception_in_reserve_publishes_nothing(pyshm_channel):
    ch = pyshm_channel(4096)
    for _ in range(3):
        with pytest.raises(KeyError):
            with ch.reserve(100) as buf:
                buf[:5] = b"never"
                raise KeyError("inside")
        assert ch.queued == 0 and ch.messages == 0
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0)
    ch.send(b"after")                           # the lock was released
    assert ch.recv(timeout=0) == b"after"


def test_recv_view_consumes_on_normal_exit_and_not_on_error(pyshm_channel):
    ch = pyshm_channel(4096)
    ch.send(b"first")
    ch.send(b"second")
    with pytest.raises(ZeroDivisionError):
        with ch.recv_view() as view:
            assert bytes(view) == b"first" and view.readonly
            1 / 0
    assert ch.messages == 2                     # left queued
    with ch.recv_view() as view:
        assert bytes(view) == b"first"
        with pytest.raises(TypeError):
            view[0] = 0                         # read-only
    with ch.recv_view(timeout=0) as view:
        assert bytes(view) == b"second"
    assert ch.queued == 0
    with pytest.raises(TimeoutError):
        with ch.recv_view(timeout=0):
            pass


def test_zero_size_loans(pyshm_channel):
    ch = pyshm_channel(256)
    with ch.reserve(0) as buf:
        assert len(buf) == 0
    assert ch.messages == 1
    with ch.recv_view() as view:
        assert len(view) == 0
    assert ch.queued == 0


# ---- the view after the block -----------------------------------------------------------

def test_escaped_view_cannot_read_after_the_block(pyshm_channel):
    ch = pyshm_channel(4096)
    ch.send(b"secret")
    with ch.recv_view() as view:
        pass
    with pytest.raises(ValueError, match="released"):
        view[0]
    with pytest.raises(ValueError, match="released"):
        bytes(view)
    with ch.reserve(4) as buf:
        pass
    with pytest.raises(ValueError, match="released"):
        buf[:] = b"late"
    assert ch.messages == 1                     # the (unwritten) 4 bytes were sent


@needs_numpy
def test_live_exports_refuse_the_end_of_the_loan(pyshm_channel):
    """numpy.frombuffer(view) inside the block: at the end the loan cannot
    let go of its memory.  BufferError; the loan stays held until the array
    is gone and then ends as a failed block would (nothing sent, the message
    left queued) -- nothing ever reads reused memory."""
    ch = pyshm_channel(4096)
    ch.send(np.arange(4, dtype=np.int64).tobytes())
    with pytest.raises(BufferError, match="stays queued"):
        with ch.recv_view() as view:
            arr = np.frombuffer(view, dtype=np.int64)
    assert arr.sum() == 6                       # still valid: the loan is held
    with pytest.raises(RuntimeError, match="recv_view"):
        ch.recv(timeout=0)                      # this thread holds the recv side
    del arr
    with ch.recv_view() as view:                # ended: the message is still there
        assert np.frombuffer(view, dtype=np.int64).tolist() == [0, 1, 2, 3]
    assert ch.queued == 0

    with pytest.raises(BufferError, match="nothing is sent"):
        with ch.reserve(8) as buf:
            part = buf[2:4]
    part[0] = 1                                 # the slice still points into the loan
    del part
    assert ch.queued == 0
    ch.send(b"x")
    assert ch.recv() == b"x"


@needs_numpy
def test_releasing_views_inside_the_block_is_fine(pyshm_channel):
    ch = pyshm_channel(4096)
    with ch.reserve(16) as buf:
        arr = np.frombuffer(buf, dtype=np.float64)
        arr[:] = [1.5, 2.5]
        del arr
        with memoryview(buf)[8:] as tail:
            tail[:] = struct.pack("<d", 3.5)
    assert struct.unpack("<2d", ch.recv()) == (1.5, 3.5)


def test_loan_object_rules(pyshm_channel):
    ch = pyshm_channel(4096)
    loan = ch.reserve(8)
    assert isinstance(loan, pyshm.Loan) and loan.size == 8 and not loan.active
    assert "not taken" in repr(loan)
    with pytest.raises(ValueError, match="not held"):
        memoryview(loan)
    with loan as buf:
        assert loan.active and "held" in repr(loan)
        buf[:] = bytes(8)
    assert not loan.active and "ended" in repr(loan)
    with pytest.raises(ValueError, match="once"):
        with loan:
            pass
    view_loan = ch.recv_view()
    assert view_loan.size is None
    with view_loan as view:
        assert view_loan.size == 8 == len(view)
    with pytest.raises(TypeError):
        pyshm.Loan()


def test_a_loan_dropped_without_exit_ends_as_a_failure(pyshm_channel):
    ch = pyshm_channel(4096)
    loan = ch.reserve(8)
    view = loan.__enter__()
    view[:] = b"dropped!"
    view.release()
    del loan, view
    gc.collect()
    assert ch.queued == 0
    ch.send(b"next")                            # the send lock was released
    loan = ch.recv_view()
    loan.__enter__()
    del loan
    gc.collect()
    assert ch.recv(timeout=0) == b"next"        # left queued, lock released


# ---- where the ring wraps ------------------------------------------------------------

def test_wrapped_loan_is_contiguous_and_correct(pyshm_channel):
    """At every offset of a small ring, loans of many sizes up to the
    largest: a loan that would straddle the end of the ring goes to its
    start behind a padding record, and the message read back (in place and
    as bytes) is exactly what was written.  The ring is empty each time, so
    every loan fits at once, even with a timeout of 0: the sender consumes
    its padding itself (the recv lock is free), which is then never counted
    as queued."""
    ch = pyshm_channel(512)
    assert ch.max_message_size == 504
    for offset in range(0, 512, 8):
        for size in (0, 1, 8, 100, 250, 504 - offset, offset, 504):
            size = max(0, min(size, 504))
            move_cursor_to(ch, offset)
            data = (hashlib.sha256(b"%d/%d" % (offset, size)).digest() * 16)[:size]
            need = 8 + ((size + 7) & ~7)
            with ch.reserve(size, timeout=0) as buf:
                buf[:] = data
            # Where it went, and the padding still queued before it.
            if need <= 512 - offset:
                at, padding = offset, 0
            else:
                at, padding = 0, 0                  # consumed by the sender
            assert cursor(ch) % 512 == (at + need) % 512
            assert ch.queued == padding + need and ch.messages == 1
            # A message behind it where that fits in front of the cursor.
            behind = 512 - (at + need) >= 24 and padding + need + 24 <= 512
            if behind:
                ch.send(b"behind it", timeout=0)
            with ch.recv_view(timeout=0) as view:
                assert bytes(view) == data
            if behind:
                assert ch.recv(timeout=0) == b"behind it"
            assert ch.queued == 0


def test_padding_alone_while_messages_are_queued(pyshm_channel):
    """With a message queued, a record that fits on neither side of the
    write cursor has its padding published alone: the send (or loan) waits
    -- TimeoutError with timeout 0 -- until receivers have cleared the way,
    and a receiver that finds only padding consumes it and finds nothing."""
    for how in ("send", "reserve"):
        ch = pyshm_channel(256)
        move_cursor_to(ch, 144)
        ch.send(b"eightbyt")                            # 144 -> 160
        with pytest.raises(TimeoutError):               # 208 > 96 in front, > 160 behind
            if how == "send":
                ch.send(bytes(200), timeout=0)
            else:
                with ch.reserve(200, timeout=0):
                    pass
        assert ch.queued == 16 + 96 and ch.messages == 1
        assert ch.recv(timeout=0) == b"eightbyt"
        assert ch.queued == 96 and ch.messages == 0      # the padding, alone
        with pytest.raises(TimeoutError):
            ch.recv(timeout=0)                          # takes the padding only
        assert ch.queued == 0
        ch.send(b"z" * 200, timeout=0)                  # now at offset 0
        with ch.recv_view(timeout=0) as view:
            assert bytes(view) == b"z" * 200
        assert cursor(ch) % 256 == 208


ECHO_SUMS = """
import hashlib, sys, pyshm
ch, rep = pyshm.Channel(sys.argv[1]), pyshm.Channel(sys.argv[2])
print("ready", flush=True)
while True:
    with ch.recv_view() as view:
        if len(view) == 4 and bytes(view) == b"stop":
            break
        rep.send(hashlib.sha256(view).digest())
print("done", flush=True)
"""


def test_largest_loan_at_every_offset(pyshm_names, pyshm_child):
    """reserve(max_message_size) wherever the cursor stands: a receiver in
    another process clears the padding and the loan goes at offset 0.
    One byte more is a ValueError."""
    name, rep_name = pyshm_names(), pyshm_names()
    with pyshm.Channel(name, create=True, capacity=1024) as ch, \
            pyshm.Channel(rep_name, create=True, capacity=4096) as rep, \
            pyshm_child(ECHO_SUMS, name, rep_name) as child:
        child.expect("ready")
        top = ch.max_message_size
        with pytest.raises(ValueError, match="max_message_size"):
            ch.reserve(top + 1)
        for step in range(0, 1024 // 8 + 3):
            size = top if step % 2 == 0 else (step * 37) % top
            data = hashlib.sha256(b"%d" % step).digest() * (size // 32 + 1)
            with ch.reserve(size, timeout=DEADLINE) as buf:
                buf[:] = data[:size]
            assert rep.recv(timeout=DEADLINE) == hashlib.sha256(data[:size]).digest()
            # A small message moves the cursor on for the next round.
            ch.send(bytes(step % 5 * 8), timeout=DEADLINE)
            rep.recv(timeout=DEADLINE)
        ch.send(b"stop", timeout=DEADLINE)
        child.expect("done")
        child.finish()


HEADER = 512            # core/ring.h: RING_HEADER_SIZE, where the ring starts
PAD = 1 << 63           # core/ring.h: RING_REC_PAD, a padding record's length word


def test_a_send_that_would_straddle_the_end_goes_to_the_start(pyshm_channel):
    """No record straddles the ring's end (format version 4), send()'s as
    well as a loan's: a message that would reach past the end goes to the
    start of the ring behind a padding record -- published with it while
    other messages are queued, consumed by the sender itself in an empty
    ring -- and recv_view shows it in place."""
    ch = pyshm_channel(256)
    data = bytes(range(100))
    with pyshm.SharedMemory(ch.name) as raw:
        for queued_before in (True, False):
            move_cursor_to(ch, 192 if queued_before else 200)
            if queued_before:
                ch.send(b"")                        # 192 -> 200, queued
            ch.send(data)                           # 8 + 104 > the 56 left
            assert struct.unpack("<Q", raw.read(8, HEADER + 200))[0] == PAD | 48
            assert raw.read(8 + 100, HEADER) == struct.pack("<Q", 100) + data
            if queued_before:
                assert ch.queued == 8 + 56 + 112 and ch.messages == 2
                assert ch.recv() == b""
            else:
                assert ch.queued == 112 and ch.messages == 1
            with ch.recv_view() as view:
                assert bytes(view) == data
                raw.write(b"\xee", HEADER + 8)      # the view is the ring itself
                first = view[0]
            assert first == 0xee and ch.queued == 0


# ---- the lock a loan holds --------------------------------------------------------------

def test_other_threads_wait_and_the_same_thread_is_refused(pyshm_channel):
    ch = pyshm_channel(4096)
    results = []

    def try_send():
        try:
            ch.send(b"other thread", timeout=0)
            results.append("sent")
        except TimeoutError:
            results.append("timeout")

    with ch.reserve(4) as buf:
        buf[:] = b"mine"
        t = threading.Thread(target=try_send)
        t.start()
        t.join(DEADLINE)
        assert results == ["timeout"]           # the send lock is held
        for call in (lambda: ch.send(b"x"), lambda: ch.send_obj(1),
                     lambda: ch.reserve(1).__enter__()):
            with pytest.raises(RuntimeError, match="reserve"):
                call()
        # The other side is free: receive while holding a send loan.
        assert ch.queued == 0
    try_send()
    assert results == ["timeout", "sent"]
    with ch.recv_view() as view:                # forward a message from a loan
        with ch.reserve(len(view)) as buf:
            buf[:] = view
        with pytest.raises(RuntimeError, match="recv_view"):
            ch.recv_obj(timeout=0)
    assert ch.recv() == b"other thread" and ch.recv() == b"mine"


def test_close_from_another_thread_during_a_loan(pyshm_name):
    """The loan pins the mapping: close() in another thread returns at once,
    the block still writes into valid memory and publishes; the mapping goes
    when the loan ends."""
    ch = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    # A second object reads what the loan published (on Windows it also
    # keeps the name, which lives only while some handle does).
    other = pyshm.Channel(pyshm_name)
    try:
        with ch.reserve(6) as buf:
            t = threading.Thread(target=ch.close)
            t.start()
            t.join(DEADLINE)
            assert ch.closed
            buf[:] = b"pinned"
        with pytest.raises(ValueError, match="closed"):
            ch.reserve(1)
        assert other.recv(timeout=0) == b"pinned"
    finally:
        ch.close()
        other.close()
        pyshm.unlink(pyshm_name)


# ---- bad input ------------------------------------------------------------------------------

def test_bad_sizes_and_timeouts(pyshm_channel):
    ch = pyshm_channel(256)
    with pytest.raises(ValueError, match="negative"):
        ch.reserve(-1)
    with pytest.raises(ValueError, match="max_message_size"):
        ch.reserve(ch.max_message_size + 1)
    with pytest.raises(ValueError):
        ch.reserve(2**70)
    with pytest.raises(TypeError):
        ch.reserve(1.5)
    with pytest.raises(TypeError):
        ch.reserve("8")
    with pytest.raises(ValueError):
        ch.reserve(8, timeout=-1)
    with pytest.raises(ValueError):
        ch.recv_view(timeout=float("nan"))
    assert ch.queued == 0


def test_closed_channel(pyshm_name):
    ch = pyshm.Channel(pyshm_name, create=True, capacity=256)
    loan = ch.reserve(8)
    ch.close()
    with pytest.raises(ValueError, match="closed"):
        ch.reserve(8)
    with pytest.raises(ValueError, match="closed"):
        ch.recv_view()
    with pytest.raises(ValueError, match="closed"):
        loan.__enter__()                        # made before close(), entered after
    pyshm.unlink(pyshm_name)


# ---- who ends a loan: threads ------------------------------------------------------------

def thread_result(target, *args):
    """Run TARGET(*ARGS) in a new thread to its end; its result, or the
    exception it raised (returned, not raised)."""
    out = []

    def run():
        try:
            out.append(target(*args))
        except BaseException as exc:        # handed back to the test
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(DEADLINE)
    assert not t.is_alive()
    return out[0]


def until_blocked(tid_list):
    """Wait (deadline) until the thread that put its native id in TID_LIST
    has done so and then blocks in the kernel."""
    end = threading.Event()
    for _ in range(int(DEADLINE * 1000)):
        if tid_list:
            break
        end.wait(0.001)
    wait_until_sleeping(os.getpid(), tid_list[0])


def loan_of(ch, side, **kw):
    return ch.reserve(8, **kw) if side == "reserve" else ch.recv_view(**kw)


def take_or_put(ch, side, timeout=0):
    """One call on SIDE that needs its lock: a send for reserve, a recv for
    recv_view."""
    return ch.send(b"x", timeout=timeout) if side == "reserve" else ch.recv(timeout=timeout)


@pytest.mark.parametrize("side", ["reserve", "recv_view"])
@pytest.mark.parametrize("loan_kept", [True, False], ids=["loan-kept", "loan-freed"])
def test_last_export_released_in_another_thread_ends_the_loan(pyshm_name, side, loan_kept):
    """Issue 19, point 4: a worker thread's block ends with BufferError (a
    slice of its view lives on), the worker ends, the slice is released in
    the main thread.  The loan ends right there, as a failed block: the
    lock is free for this object and for another one (another process's
    would be the same), and the message stays queued.  Whether the Loan
    object lives on (its last export ends it) or goes with the slice (then
    freeing it ends it)."""
    ch = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    other = pyshm.Channel(pyshm_name)
    kept = []
    try:
        if side == "recv_view":
            ch.send(b"stays queued")

        def worker():
            loan = loan_of(ch, side)
            if loan_kept:
                kept.append(loan)
            try:
                with loan as view:
                    part = view[2:4]
            except BufferError as exc:
                del loan
                return part, exc
            return None, None

        part, exc = thread_result(worker)
        assert isinstance(exc, BufferError)
        with pytest.raises(TimeoutError):       # still held while its export lives
            take_or_put(other, side)
        exc = None                              # (its traceback holds the worker's frame)
        part.release()                          # here; the worker is gone
        assert not loan_kept or not kept[0].active
        if side == "reserve":
            assert ch.queued == 0               # nothing of the loan was sent
            other.send(b"from the other object", timeout=0)
            ch.send(b"and this one", timeout=0)
            assert ch.recv(timeout=0) == b"from the other object"
            assert other.recv(timeout=0) == b"and this one"
        else:
            assert other.recv(timeout=0) == b"stays queued"
            ch.send(b"next", timeout=0)
            assert ch.recv(timeout=0) == b"next"
    finally:
        ch.close()
        other.close()
        pyshm.unlink(pyshm_name)


@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_loan_freed_by_the_garbage_collector_in_another_thread(pyshm_channel, side):
    """A loan taken in a worker thread, never left and caught in a reference
    cycle, is freed when the garbage collector runs -- here in the main
    thread, while the worker still lives: it ends there as a failed block."""
    ch = pyshm_channel(4096)
    ch.send(b"stays queued")
    made, finish = threading.Event(), threading.Event()

    def worker():
        loan = loan_of(ch, side)
        loan.__enter__().release()
        cycle = [loan]
        cycle.append(cycle)
        del loan, cycle                         # only the cycle holds it now
        made.set()
        finish.wait(DEADLINE)

    t = threading.Thread(target=worker)
    gc.disable()
    try:
        t.start()
        assert made.wait(DEADLINE)
        with pytest.raises(TimeoutError):       # the cycle holds the loan still
            take_or_put(ch, side)               # (another thread's: waited for)
    finally:
        gc.enable()
    gc.collect()
    try:
        assert ch.recv(timeout=0) == b"stays queued"
        ch.send(b"after", timeout=0)
        assert ch.recv(timeout=0) == b"after"
    finally:
        finish.set()
        t.join(DEADLINE)


def test_exit_from_another_thread_is_refused(pyshm_channel):
    ch = pyshm_channel(4096)
    loan = ch.reserve(4)
    buf = loan.__enter__()
    buf[:] = b"mine"
    exc = thread_result(loan.__exit__, None, None, None)
    assert isinstance(exc, RuntimeError) and "thread that took it" in str(exc)
    assert loan.active and ch.queued == 0
    loan.__exit__(None, None, None)
    assert ch.recv(timeout=0) == b"mine"


@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_loan_of_a_thread_that_ended_inside_its_block_is_abandoned(pyshm_channel, side):
    """A thread enters a block and ends without leaving it; the Loan lives on
    (kept in a list).  No one can leave that block any more: the next wait
    of this process for a lock abandons it -- it ends as a failed block --
    so that a call on the same object (whose lock word names its own
    liveness slot) does not wait for ever."""
    ch = pyshm_channel(4096)
    ch.send(b"queued")
    kept = []

    def worker():
        loan = loan_of(ch, side)
        loan.__enter__()
        kept.append(loan)

    thread_result(worker)
    assert kept[0].active
    if side == "reserve":
        ch.send(b"after", timeout=DEADLINE)
        assert ch.recv(timeout=0) == b"queued" and ch.recv(timeout=0) == b"after"
    else:
        assert ch.recv(timeout=DEADLINE) == b"queued"
    assert not kept[0].active and "ended" in repr(kept[0])


@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_loan_of_an_ended_thread_with_a_live_export_ends_at_close(pyshm_name, side):
    """As above, but a slice of its view is still referenced: the loan is
    abandoned as a block that ended with exports alive -- held until they
    go, ended at close() at the latest (its memory made private first,
    Linux; elsewhere it is kept until the slice goes)."""
    ch = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    other = pyshm.Channel(pyshm_name)
    try:
        other.send(b"queued")
        kept = []

        def worker():
            loan = loan_of(ch, side)
            view = loan.__enter__()
            if side == "reserve":
                view[:] = b"unsent!!"
            kept.append(view[:])

        thread_result(worker)
        with pytest.raises(TimeoutError):
            take_or_put(other, side)            # abandoned, but its slice lives
        ch.close()
        if private_pages:
            take_or_put(other, side)            # the lock is free
            assert bytes(kept[0]) == (b"unsent!!" if side == "reserve" else b"queued")
        else:
            with pytest.raises(TimeoutError):
                take_or_put(other, side)
            kept.clear()                        # now it ends
            take_or_put(other, side)
        kept.clear()
        if side == "reserve":                   # only the queued message and ours
            assert other.recv(timeout=0) == b"queued" and other.recv(timeout=0) == b"x"
        assert other.queued == 0
    finally:
        ch.close()
        other.close()
        pyshm.unlink(pyshm_name)


def test_a_new_thread_with_a_reused_identifier_owns_nothing(pyshm_channel):
    """Thread identifiers are reused as soon as a thread ends.  A loan whose
    block ended with an export alive belongs to no thread that comes later:
    a new thread with the same identifier waits for it (TimeoutError here)
    instead of being told that it holds the loan (RuntimeError)."""
    ch = pyshm_channel(4096)

    def holder():
        try:
            with ch.reserve(8) as view:
                part = view[:2]
        except BufferError:
            return threading.get_ident(), part
        return None, None

    first, part = thread_result(holder)
    assert first is not None

    def send_once():
        try:
            ch.send(b"x", timeout=0)
            return threading.get_ident(), "sent"
        except (TimeoutError, RuntimeError) as exc:
            return threading.get_ident(), exc

    for _ in range(200):
        ident, result = thread_result(send_once)
        if ident == first:
            break
    else:
        pytest.skip("no thread identifier was reused in 200 threads here")
    assert isinstance(result, TimeoutError), result
    part.release()
    ch.send(b"now", timeout=0)
    assert ch.recv(timeout=0) == b"now"


def test_two_threads_reserving_on_one_object_keep_their_own_loans(pyshm_name):
    """Thread A holds a loan, thread B waits for the same object's send lock
    in reserve(); A's block ends, B's loan starts; close() comes during B's
    block, which still writes and publishes into a mapping that stays until
    it ends (each loan keeps its own pin)."""
    ch = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    other = pyshm.Channel(pyshm_name)
    try:
        inside, go, tid = threading.Event(), threading.Event(), []

        def b():
            tid.append(threading.get_native_id())
            with ch.reserve(1, timeout=DEADLINE) as buf:
                inside.set()
                go.wait(DEADLINE)
                buf[:] = b"B"

        t = threading.Thread(target=b)
        with ch.reserve(1) as buf:
            buf[:] = b"A"
            t.start()
            until_blocked(tid)
            assert not inside.is_set()
        assert inside.wait(DEADLINE)
        ch.close()
        go.set()
        t.join(DEADLINE)
        assert other.recv(timeout=0) == b"A" and other.recv(timeout=0) == b"B"
    finally:
        ch.close()
        other.close()
        pyshm.unlink(pyshm_name)


BLOCKED_SENDER = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("sending", flush=True)
c.send(b"process", timeout=60)
print("sent", flush=True)
"""


def test_senders_blocked_during_a_loan_are_woken_when_it_ends(pyshm_name, pyshm_child):
    """Other senders wait while a loan holds the send lock: a thread of the
    same object and another process, both already blocked, are woken when
    the block ends, and send after the loan's message."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as ch:
        tid, sent = [], []

        def thread_sender():
            tid.append(threading.get_native_id())
            ch.send(b"thread", timeout=DEADLINE)
            sent.append("thread")

        t = threading.Thread(target=thread_sender)
        with pyshm_child(BLOCKED_SENDER, pyshm_name) as child:
            with ch.reserve(6) as buf:
                buf[:] = b"loaned"
                t.start()
                child.expect("sending")
                until_blocked(tid)
                wait_until_sleeping(child.pid)
                assert sent == [] and ch.queued == 0
            t.join(DEADLINE)
            child.expect("sent")
            child.finish()
        got = [ch.recv(timeout=0) for _ in range(3)]
        assert got[0] == b"loaned" and sorted(got[1:]) == [b"process", b"thread"]


def test_object_messages_wait_for_another_threads_loan(pyshm_channel):
    """send_obj() and recv_obj() from another thread during a loan of their
    side wait for it (the loan is not theirs); the loan's own thread is
    refused."""
    ch = pyshm_channel(4096)
    tid, done = [], []

    def send_obj():
        tid.append(threading.get_native_id())
        ch.send_obj({"n": 1}, timeout=DEADLINE)
        done.append("sent")

    t = threading.Thread(target=send_obj)
    with ch.reserve(3) as buf:
        buf[:] = b"raw"
        t.start()
        until_blocked(tid)
        with pytest.raises(RuntimeError, match="reserve"):
            ch.send_obj(2)
        assert done == []
    t.join(DEADLINE)
    assert done == ["sent"]

    tid.clear()
    got = []

    def recv_obj():
        tid.append(threading.get_native_id())
        got.append(ch.recv_obj(timeout=DEADLINE))

    t = threading.Thread(target=recv_obj)
    with ch.recv_view() as view:
        assert bytes(view) == b"raw"
        t.start()
        until_blocked(tid)
        with pytest.raises(RuntimeError, match="recv_view"):
            ch.recv_obj(timeout=0)
        assert got == []
    t.join(DEADLINE)
    assert got == [{"n": 1}] and ch.queued == 0


# ---- close() and refused loans ------------------------------------------------------------

@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_close_ends_a_refused_loan(pyshm_name, shm_mappings, side):
    """A block that ended with an export alive holds its lock until the
    export goes -- and at close() at the latest.  Then the export is private
    memory in place (Linux): writing into it reaches no one, it still shows
    the loan's bytes while others reuse that ring space, and the channel's
    mapping is gone.  Elsewhere the loan keeps its lock until the export
    is released."""
    # The loan's object opens the name (its mapping is named in
    # /proc/self/maps; a creator's is its unnamed file's).
    other = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    others = shm_mappings(pyshm_name) if private_pages else []
    ch = pyshm.Channel(pyshm_name)
    try:
        if side == "recv_view":
            other.send(b"L" * 100)
        with pytest.raises(BufferError):
            with (ch.reserve(100) if side == "reserve" else ch.recv_view()) as view:
                if side == "reserve":
                    view[:] = b"L" * 100
                part = view[:]
        ch.close()
        if not private_pages:
            # Still held: another thread waits for it.  (Not this thread: a
            # Windows mutex is its owner thread's, through any handle.)
            assert isinstance(thread_result(take_or_put, other, side), TimeoutError)
            part.release()                      # it ends now
            if side == "recv_view":
                assert other.recv(timeout=0) == b"L" * 100     # left queued
        else:
            assert shm_mappings(pyshm_name) == others      # ch's mapping is gone
            assert "ended at close()" in repr(part.obj)
            if side == "recv_view":
                assert other.recv(timeout=0) == b"L" * 100     # left queued
            # Others reuse the loan's ring space; the export does not see it.
            for n in range(40):
                other.send(bytes([n]) * 100, timeout=0)
                assert other.recv(timeout=0) == bytes([n]) * 100
            assert bytes(part) == b"L" * 100
            if side == "reserve":
                part[:] = b"W" * 100            # private: reaches no message
                other.send(b"M" * 100, timeout=0)
                assert other.recv(timeout=0) == b"M" * 100
            part.release()
        other.send(b"end", timeout=0)
        assert other.recv(timeout=0) == b"end" and other.queued == 0
    finally:
        ch.close()
        other.close()
        pyshm.unlink(pyshm_name)


# ---- waits that end: close(), signals, another sender quicker -----------------------------

def mappings(name):
    """How many mappings of /dev/shm/NAME this process has (Linux)."""
    with open("/proc/self/maps") as maps:
        return sum(line.rstrip().endswith("/dev/shm/" + name) for line in maps)


@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_close_while_a_loan_waits(pyshm_name, side):
    """A reserve() waiting for room or a recv_view() waiting for a message in
    another thread ends with ValueError at close(); nothing is taken, and
    the mapping goes when it has left."""
    other = pyshm.Channel(pyshm_name, create=True, capacity=256)
    ch = pyshm.Channel(pyshm_name)              # named in /proc/self/maps
    try:
        if side == "reserve":
            other.send(bytes(248))              # full
        tid, out = [], []

        def wait():
            tid.append(threading.get_native_id())
            try:
                with (ch.reserve(100, timeout=DEADLINE) if side == "reserve"
                      else ch.recv_view(timeout=DEADLINE)):
                    out.append("entered")
            except ValueError as exc:
                out.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        until_blocked(tid)
        ch.close()
        t.join(DEADLINE)
        assert len(out) == 1 and isinstance(out[0], ValueError) and "closed" in str(out[0])
        if sys.platform.startswith("linux"):
            assert mappings(pyshm_name) == 0    # the wait's pin went with it
        assert other.queued == (256 if side == "reserve" else 0)
        if side == "reserve":
            assert other.recv(timeout=0) == bytes(248)
        other.send(b"after", timeout=0)
        assert other.recv(timeout=0) == b"after"
    finally:
        ch.close()
        other.close()
        pyshm.unlink(pyshm_name)


@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_signal_while_a_loan_waits(pyshm_channel, side):
    """A signal handler that raises (Ctrl-C here) ends a reserve() waiting for
    room or a recv_view() waiting for a message: the exception comes out,
    nothing is taken or sent, and the lock is free."""
    ch = pyshm_channel(256)
    if side == "reserve":
        ch.send(bytes(248))
    me, waiting = threading.get_native_id(), threading.Event()

    def interrupt():
        waiting.wait(DEADLINE)
        wait_until_sleeping(os.getpid(), me)    # (at once where /proc cannot say)
        _thread.interrupt_main()

    t = threading.Thread(target=interrupt)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            waiting.set()
            with (ch.reserve(100, timeout=DEADLINE) if side == "reserve"
                  else ch.recv_view(timeout=DEADLINE)):
                pass
    finally:
        t.join(DEADLINE)
    if side == "reserve":
        assert ch.queued == 256 and ch.recv(timeout=0) == bytes(248)
    assert ch.queued == 0
    ch.send(b"free", timeout=0)
    with ch.recv_view(timeout=0) as view:
        assert bytes(view) == b"free"


# A child whose reserving thread is woken by room that another sender takes
# before it can have the GIL back: reserve() must wait again, not fail.  The
# main thread keeps the GIL (switch interval 1000 s; ctypes' PyDLL calls keep
# it) while it watches the reserver in /proc/self/task/TID/syscall, as
# test_threads.py's STOPPED_RECEIVER does.
RESERVE_RETRY = r"""
import ctypes, sys, threading, time, pyshm
name = sys.argv[1]
libc = ctypes.PyDLL(None)
c, other = pyshm.Channel(name), pyshm.Channel(name)
result = []

def reserver():
    with c.reserve(504, timeout=60) as buf:
        buf[:] = b"r" * 504
    result.append("published")

def mapping():
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("/dev/shm/" + name):
                lo, hi = line.split()[0].split("-")
                yield int(lo, 16), int(hi, 16)

def syscall(tid):
    fd = libc.open(f"/proc/self/task/{tid}/syscall".encode(), 0)
    buf = ctypes.create_string_buffer(512)
    n = libc.read(fd, buf, 511)
    libc.close(fd)
    fields = buf.raw[:max(n, 0)].split()
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), int(fields[1], 16)

def waits_for_gil(call):
    return call is not None and call[0] == 202 and not any(lo <= call[1] < hi for lo, hi in maps)

def say(text):
    data = (text + "\n").encode()
    libc.write(1, data, len(data))

def blocked_in_channel(t, end):
    seen = 0
    while seen < 3:
        call = syscall(t.native_id)
        seen = seen + 1 if call is not None and not waits_for_gil(call) else 0
        if time.monotonic() > end:
            raise SystemExit("the reserver never blocked")
        time.sleep(0.001)

maps = list(mapping())
t = threading.Thread(target=reserver)
t.start()
end = time.monotonic() + 60
blocked_in_channel(t, end)
sys.setswitchinterval(1000.0)
c.recv()                        # room: the reserver wakes and wants the GIL back
while not waits_for_gil(syscall(t.native_id)):
    if time.monotonic() > end:
        raise SystemExit("the reserver never came back for the GIL")
other.send(b"q" * 504)          # another sender is quicker: full again
say("taken")
sys.setswitchinterval(0.005)
blocked_in_channel(t, end)      # it waits again
say("waiting again")
c.recv()
t.join()
print(result[0], flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reads /proc/self/task/TID/syscall")
def test_reserve_waits_again_when_another_sender_was_quicker(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as ch:
        for n in range(8):
            ch.send(bytes([n]) * 504)          # full: 8 records of 512 bytes
        with pyshm_child(RESERVE_RETRY, pyshm_name) as child:
            child.expect("taken")
            child.expect("waiting again")
            child.expect("published")
            child.finish()
        got = [ch.recv(timeout=0) for _ in range(ch.messages)]
        assert got == [bytes([n]) * 504 for n in range(2, 8)] + [b"q" * 504, b"r" * 504]


# ---- a large message where the ring ends ----------------------------------------------------

def test_recv_view_of_a_large_message_near_the_end_is_in_place(pyshm_channel):
    """A send() message that would wrap around the ring (version 3 wrapped
    it, and recv_view copied it) lies at the ring's start: the view is the
    ring itself at every size -- a byte written there through another
    mapping shows in the view at once."""
    capacity = 40 << 20
    ch = pyshm_channel(capacity)
    with pyshm.SharedMemory(ch.name) as raw:
        for size in (96, 64 << 10, 1 << 20, 32 << 20):
            move_cursor_to(ch, capacity - 4096)     # the message would wrap
            data = hashlib.sha256(b"%d" % size).digest() * (size // 32)
            ch.send(data)
            # In front of the cursor when it fits there, else at the start.
            at = capacity - 4096 if 8 + size <= 4096 else 0
            with ch.recv_view() as view:
                assert len(view) == size and view[:64] == data[:64] and \
                    view[-64:] == data[-64:]
                raw.write(b"\x01\x02", HEADER + at + 8 + size - 2)
                last = bytes(view[-2:])
            assert last == b"\x01\x02"
            assert ch.queued == 0


LOW_MEMORY_VIEW = r"""
import resource, sys, pyshm
c = pyshm.Channel(sys.argv[1])
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
# Room for what the interpreter may still map, not for a 48 MiB copy.
resource.setrlimit(resource.RLIMIT_AS, (vm + (16 << 20), resource.RLIM_INFINITY))
with c.recv_view(timeout=0) as view:
    print("viewed", len(view), view[0], view[len(view) - 1], flush=True)
c.send(b"sent", timeout=0)
print("sent", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_recv_view_near_the_end_allocates_nothing(pyshm_name, pyshm_child, under_asan):
    """A 48 MiB message sent where it would straddle the ring's end is viewed
    by a child that cannot allocate a copy of it (a low RLIMIT_AS; version
    3 copied such a message, which raised MemoryError there)."""
    if under_asan:
        pytest.skip("ASan reserves terabytes of address space: RLIMIT_AS cannot be low")
    size = 48 << 20
    with pyshm.Channel(pyshm_name, create=True, capacity=64 << 20) as ch:
        move_cursor_to(ch, (64 << 20) - 4096)
        data = bytes(range(256)) * (size // 256)
        ch.send(data)
        with pyshm_child(LOW_MEMORY_VIEW, pyshm_name) as child:
            assert child.line() == f"viewed {size} 0 255"
            child.expect("sent")
            child.finish()
        assert ch.recv(timeout=0) == b"sent"


# ---- fork() during a loan ------------------------------------------------------------------

def in_child_exit(pid, ok):
    """In the fork child (PID 0): leave at once, status 0 when OK (else 1,
    with the exception being handled, if any, on stderr).  In the parent:
    nothing."""
    if pid != 0:
        return
    if not ok:
        traceback.print_exc()
    os._exit(0 if ok else 1)


def dead_here(exc):
    return isinstance(exc, RuntimeError) and "dead in this child" in str(exc)


def reap(pid):
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the fork child failed (see stderr)"


@needs_fork
def test_fork_inside_reserve_publishes_nothing_in_the_child(pyshm_channel):
    """Issue 19, point 1: the child of a fork() inside a reserve() block
    inherits the loan.  Leaving the block there must not publish the
    parent's loan (it moved the write cursor back: a message the parent
    sent meanwhile was lost) -- it raises RuntimeError, and the child's
    writes into its copy of the view reach no message."""
    ch = pyshm_channel(4096)
    go_r, go_w = os.pipe()
    pid = -1
    try:
        with ch.reserve(5) as buf:
            buf[:] = b"first"
            pid = os.fork()
            if pid == 0:
                os.read(go_r, 1)                # the parent published and sent more
                if private_pages:
                    buf[:] = b"CHILD"           # a private copy here
    except BaseException as exc:
        in_child_exit(pid, dead_here(exc))
        raise
    in_child_exit(pid, False)                   # no RuntimeError in the child
    ch.send(b"second")
    os.write(go_w, b"g")
    reap(pid)
    os.close(go_r)
    os.close(go_w)
    assert ch.messages == 2
    assert ch.recv(timeout=0) == b"first"
    assert ch.recv(timeout=0) == b"second"
    assert ch.queued == 0
    ch.send(b"third")
    assert ch.recv(timeout=0) == b"third"


@needs_fork
def test_fork_inside_recv_view_consumes_nothing_in_the_child(pyshm_channel):
    """Issue 19, point 2: leaving an inherited recv_view() block in the child
    moved the read cursor back, and a message the parent had received was
    delivered again.  Now it raises RuntimeError and consumes nothing; the
    child's view still shows the message after the ring reused its place."""
    ch = pyshm_channel(256)
    ch.send(b"first")
    go_r, go_w = os.pipe()
    pid = -1
    try:
        with ch.recv_view() as view:
            pid = os.fork()
            if pid == 0:
                os.read(go_r, 1)
                if private_pages:
                    assert bytes(view) == b"first"
    except BaseException as exc:
        in_child_exit(pid, dead_here(exc))
        raise
    in_child_exit(pid, False)
    # The place of "first" is reused by the parent's traffic.
    for n in range(20):
        ch.send(bytes([n]) * 40)
        assert ch.recv() == bytes([n]) * 40
    ch.send(b"second")
    assert ch.recv() == b"second"
    os.write(go_w, b"g")
    reap(pid)
    os.close(go_r)
    os.close(go_w)
    assert ch.queued == 0
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0)
    ch.send(b"third")
    assert ch.recv(timeout=0) == b"third"


@needs_fork
@pytest.mark.parametrize("side", ["reserve", "recv_view"])
def test_close_in_the_child_inside_an_inherited_loan(pyshm_name, shm_mappings, side):
    """Issue 19, point 3: close() in the child inside the inherited block,
    then leaving it, crashed the child (SIGFPE: a cursor modulo the
    capacity 0 of the detached ring; SIGSEGV: its NULL header).  Nothing of
    the loan touches the ring in the child: close() unmaps the channel
    there, a slice kept of the view stays readable (a private copy), and
    the parent is untouched."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as owner:
        owners = shm_mappings(pyshm_name) if private_pages else []
        ch = pyshm.Channel(pyshm_name)
        ch.send(b"message")
        pid = -1
        try:
            with (ch.reserve(7) if side == "reserve" else ch.recv_view()) as view:
                if side == "reserve":
                    view[:] = b"loaned!"
                pid = os.fork()
                if pid == 0:
                    part = view[:4]
                    assert len(shm_mappings(pyshm_name)) > len(owners)
                    ch.close()
                    if private_pages:
                        assert shm_mappings(pyshm_name) == owners   # ch's is gone
        except BaseException as exc:
            if pid == 0:
                in_child_exit(pid, dead_here(exc) and bytes(part) == (
                    b"loan" if side == "reserve" else b"mess"))
            raise
        in_child_exit(pid, False)
        reap(pid)
        got = [owner.recv(timeout=0) for _ in range(owner.messages)]
        assert got == ([b"message", b"loaned!"] if side == "reserve" else [])
        assert owner.queued == 0
        ch.close()


@needs_fork
def test_inherited_loan_freed_in_the_child(pyshm_name):
    """The child closes the channel, then frees its copy of a taken Loan
    (never left), then the Channel: none of it touches the ring (the old
    code ended the loan on the detached ring: SIGSEGV); the parent's loan
    goes on."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as ch:
        loan = ch.reserve(4)
        view = loan.__enter__()
        view[:] = b"kept"
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                ch.close()
                view.release()
                del view, loan
                gc.collect()
                ok = True
            finally:
                in_child_exit(pid, ok)
        reap(pid)
        assert ch.queued == 0
        loan.__exit__(None, None, None)
        assert ch.recv(timeout=0) == b"kept"


@needs_fork
def test_the_child_may_use_the_channel_inside_an_inherited_loan(pyshm_channel):
    """The inherited loan is not the child's: a send there is not refused as
    one that would wait for itself -- it waits for the parent's loan, whose
    lock it is, and goes after it.  (Thread identifiers said otherwise: the
    child's thread has the forking thread's.)"""
    ch = pyshm_channel(4096)
    pid = -1
    try:
        with ch.reserve(6) as buf:
            buf[:] = b"parent"
            pid = os.fork()
            if pid == 0:
                ch.send(b"child", timeout=DEADLINE)
    except BaseException as exc:
        in_child_exit(pid, dead_here(exc))
        raise
    in_child_exit(pid, False)
    reap(pid)
    assert ch.recv(timeout=0) == b"parent"
    assert ch.recv(timeout=0) == b"child"
    assert ch.queued == 0


@needs_fork
def test_a_refused_loan_across_fork(pyshm_channel):
    """A block that ended with an export alive, then fork(): in the child the
    loan is dead too (after close() there, releasing the export ends
    nothing of the detached ring); in the parent it ends when its own
    export goes."""
    ch = pyshm_channel(4096)
    ch.send(b"queued")
    with pytest.raises(BufferError):
        with ch.recv_view() as view:
            part = view[:]
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ch.close()
            assert bytes(part) == b"queued"     # its memory outlives close()
            part.release()                      # ends nothing of the (detached) ring
            ok = True
        finally:
            in_child_exit(pid, ok)
    reap(pid)
    with pytest.raises(RuntimeError, match="recv_view"):
        ch.recv(timeout=0)                      # still this thread's
    part.release()
    assert ch.recv(timeout=0) == b"queued"


# Set by a "before" fork handler of this module's (registered once, on first
# use; it only sets the events listed here, none outside the test below).
_forking = []
_fork_watch = []


def _announce_fork():
    for event in _forking:
        event.set()


@needs_fork
@linux_only
def test_two_threads_forking_at_once_inside_a_loan(pyshm_channel):
    """os.fork() lets go of the GIL between its "before" handlers and the
    fork itself (for the import lock, and for logging's lock, which its own
    handler holds across a fork).  Thread B forks; its handlers run (the
    copy of the main thread's loan for the child is made there) and it
    stalls on the import lock, which thread C holds.  The main thread,
    inside its reserve() block, forks too and stalls behind B.  C lets go:
    B's fork completes first, and its after-handlers must not drop the copy
    the main thread's child still needs -- or that child's view would be the
    shared ring and its writes would land in the parent's message."""
    import _imp

    if not _fork_watch:
        os.register_at_fork(before=_announce_fork)
        _fork_watch.append(True)
    ch = pyshm_channel(4096)
    c_holds, b_going, a_forking = threading.Event(), threading.Event(), threading.Event()
    me, b_tid, failures = threading.get_native_id(), [], []

    def c():
        _imp.acquire_lock()
        try:
            c_holds.set()
            a_forking.wait(DEADLINE)
            wait_until_sleeping(os.getpid(), me)    # the main thread stalls in os.fork()
        finally:
            _imp.release_lock()

    def b():
        b_tid.append(threading.get_native_id())
        c_holds.wait(DEADLINE)
        b_going.set()
        pid = os.fork()                             # stalls until C lets go
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            failures.append(status)

    threads = [threading.Thread(target=c), threading.Thread(target=b)]
    pid = -1
    try:
        with ch.reserve(5) as buf:
            buf[:] = b"first"
            for t in threads:
                t.start()
            assert b_going.wait(DEADLINE)
            wait_until_sleeping(os.getpid(), b_tid[0])  # B stalls in its os.fork()
            _forking.append(a_forking)
            try:
                pid = os.fork()
            finally:
                if pid != 0:
                    _forking.clear()
            if pid == 0:
                buf[:] = b"CHILD"               # a private copy here, or the bug
            else:
                reap(pid)
    except BaseException as exc:
        in_child_exit(pid, dead_here(exc))
        raise
    in_child_exit(pid, False)
    for t in threads:
        t.join(DEADLINE)
    assert failures == []
    assert ch.recv(timeout=0) == b"first"
