"""Zero-copy loans: Channel.reserve(size) and Channel.recv_view().

What a block does to the message (published / consumed on a normal exit,
nothing seen / left queued when it raises), what happens to its memoryview
afterwards (released; other exports refuse the end of the loan), loans
where the ring wraps (contiguous, through a padding record, up to the
largest message), the lock a loan holds (other threads wait, the same
thread is refused), close() from another thread during a loan, and the bad
input.  SIGKILL in the middle of a loan: tests/channels/test_faults.py.
"""

from __future__ import annotations

import gc
import hashlib
import struct
import threading

import pytest

import pyshm

from .waits import DEADLINE

try:
    import numpy as np
except ImportError:     # under Wine it never is installed (conftest's numpy fixture)
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="NumPy is not installed (under Wine it "
                                 "never is: NumPy 2.x aborts there)")

WRITE_CURSOR = 64


def cursor(ch):
    with pyshm.SharedMemory(ch.name) as raw:
        return struct.unpack("<Q", raw.read(8, WRITE_CURSOR))[0]


def move_cursor_to(ch, offset):
    """One message of the right size moves the write cursor to OFFSET of the
    ring (a multiple of 8); the channel is left empty."""
    gap = (offset - cursor(ch)) % ch.capacity
    if gap:
        ch.send(bytes(gap - 8))
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
    as bytes) is exactly what was written.  A loan larger than the room on
    either side of the cursor publishes the padding alone and waits for a
    receiver to clear it (here the same thread, with timeouts of 0)."""
    ch = pyshm_channel(512)
    assert ch.max_message_size == 504
    for offset in range(0, 512, 8):
        for size in (0, 1, 8, 100, 250, 504 - offset, offset, 504):
            size = max(0, min(size, 504))
            move_cursor_to(ch, offset)
            data = (hashlib.sha256(b"%d/%d" % (offset, size)).digest() * 16)[:size]
            need = 8 + ((size + 7) & ~7)
            if offset and need > max(512 - offset, offset):
                with pytest.raises(TimeoutError):
                    with ch.reserve(size, timeout=0):
                        pass
                assert ch.queued == 512 - offset and ch.messages == 0   # the padding
                with pytest.raises(TimeoutError):
                    ch.recv(timeout=0)          # skips the padding, finds nothing
                assert ch.queued == 0
            with ch.reserve(size, timeout=0) as buf:
                buf[:] = data
            # Room for a message behind it: the loan took NEED bytes, plus the
            # padding when that went out with it.
            padded = offset and 512 - offset < need <= offset
            behind = need + (512 - offset if padded else 0) + 24 <= 512
            if behind:
                ch.send(b"behind it", timeout=0)
            with ch.recv_view(timeout=0) as view:
                assert bytes(view) == data
            if behind:
                assert ch.recv(timeout=0) == b"behind it"
            assert ch.queued == 0


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


def test_recv_view_of_a_send_that_straddles_the_end(pyshm_channel):
    """send() records may wrap around the ring; recv_view copies such a one
    once and the view is still the whole message."""
    ch = pyshm_channel(256)
    move_cursor_to(ch, 200)
    data = bytes(range(100))
    ch.send(data)
    with ch.recv_view() as view:
        assert bytes(view) == data
    assert ch.queued == 0


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
