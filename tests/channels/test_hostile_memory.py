"""Hostile memory: shared bytes that are not a valid channel, never a crash.

First hand-written cases: a segment that is not a channel, a corrupt cursor
or length word, random garbage over header and ring, pointer-like garbage in
every word of the lock lines, owners that are garbage, alive or dead in the
lock words.  Then the fuzzer: hypothesis scribbles on a live channel and a
victim child uses it.

The test process creates a channel, queues a few messages, then corrupts
any header field (every one of core/ring.h's struct ring_header, lock
words included), length words or ring bytes through a raw
``pyshm.SharedMemory`` view of the same name (targeted mutations chosen by
hypothesis).  A long-lived *victim* child then opens the channel anew and
runs send / reserve / recv / recv_into / recv_view / recv_obj with short timeouts (0 and 0.05 s).  Values
that only the victim knows (its own liveness slot) are written by the victim
itself right after it attached.

What must hold (DESIGN.md, "Errors, everywhere"; src/core/ring.h, "Trust"):

* every call ends in a message, ``pyshm.ProtocolError``, ``TimeoutError`` or
  ``ValueError`` -- never a crash, never a hang: the victim answers each
  request before a watchdog deadline, or the test fails with the example;
* nothing is read or written outside what the protocol allows: the victim
  snapshots the whole segment before each call and checks afterwards that
  a received message is exactly the ring bytes behind the read cursor (and
  never straddles the ring's end), that a sent record landed exactly at the
  write cursor or at the ring's start behind a padding record, that the caller's
  buffer was not written past the message, and that no other byte of the
  segment changed (only cursors, wait words, waiter counts, CPU hints, wake
  times and lock words may move).

The victim runs in a child so that a crash or a hang is a clear failure
rather than a dead test run; under the CI's ASan pass it is instrumented
too (LD_PRELOAD is inherited).
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm
from pyshm.pytest_plugin import Child, ChildFactory

from .slots import (RECV_LOCK, SEND_LOCK, SLOT_MAX, WAITERS, free_slot, have_ofd_locks,
                    live_slots, own_owner)

# Owner ids in lock words are liveness slots (futex build, Windows) or pids
# (the fallback).
FUTEX = pyshm.CHANNEL_WAIT == "futex"
WIN32 = pyshm.CHANNEL_WAIT == "win32"
SLOTS = FUTEX or WIN32

HEADER = 512                        # core/ring.h: RING_HEADER_SIZE

# (offset, width) of every header field (core/ring.h, struct ring_header,
# version 4: 3's, and the wake times a woken waiter's spin learns from); the
# bytes between them are padding, reached by header_bytes.
FIELDS = {
    "magic": (0, 4), "version": (4, 4), "capacity": (8, 8), "header_size": (16, 4),
    "sync_kind": (20, 4), "sync_domain": (24, 4),
    "write_cursor": (64, 8), "data_seq": (72, 4), "data_waiters": (76, 4),
    "send_cpu": (80, 4), "creator_pid": (84, 4), "sent": (88, 8), "data_woken": (96, 8),
    "read_cursor": (128, 8), "space_seq": (136, 4), "space_waiters": (140, 4),
    "recv_cpu": (144, 4), "received": (152, 8), "space_woken": (160, 8),
    "send_lock": (SEND_LOCK, 4), "recv_lock": (RECV_LOCK, 4),
}
WRITE_CURSOR, READ_CURSOR = FIELDS["write_cursor"][0], FIELDS["read_cursor"][0]
LOCK_WORDS = ("send_lock", "recv_lock")


# ---- hand-written corruption ----------------------------------------------------

@pytest.mark.parametrize("content", ["random", "zeros", "small", "version", "version 2",
                                     "version 3", "version 5", "capacity"])
def test_not_a_channel_is_refused(pyshm_name, pyshm_names, content):
    """Not a channel, or one of another format version (2: the lock words
    without record kinds and padding records; 3: send() records that may
    straddle the ring's end; 99 and 5: later or garbage): ProtocolError,
    never a guess."""
    size = 64 if content == "small" else 8192
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as shm:
        if content == "random":
            shm.write(random.Random(5).randbytes(size))
        elif content.startswith("version") or content == "capacity":
            good_name = pyshm_names()
            with pyshm.Channel(good_name, create=True, capacity=1024) as good:
                try:
                    raw = pyshm.SharedMemory(good_name)
                    header = bytearray(raw.read(HEADER))
                    raw.close()
                finally:
                    good.unlink()
            if content.startswith("version"):
                header[4:8] = struct.pack("<I", int(content[8:] or 99))
            else:
                header[8:16] = struct.pack("<Q", 1 << 40)
            shm.write(header)
        with pytest.raises(pyshm.ProtocolError,
                           match="version 4" if content.startswith("version") else None):
            pyshm.Channel(pyshm_name)
        with pytest.raises(pyshm.ProtocolError):
            pyshm.Channel(pyshm_name, create=True, exist_ok=True)


def _raw(name):
    return pyshm.SharedMemory(name)


@pytest.mark.parametrize("where", ["write_cursor", "read_cursor", "both", "length"])
def test_corrupt_cursor_or_length(pyshm_name, where):
    with pyshm.Channel(pyshm_name, create=True, capacity=1024) as c, _raw(pyshm_name) as raw:
        c.send(b"first")
        if where == "write_cursor":
            raw.write(struct.pack("<Q", 1 << 50), WRITE_CURSOR)
        elif where == "read_cursor":
            raw.write(struct.pack("<Q", 12345), READ_CURSOR)
        elif where == "both":
            raw.write(struct.pack("<Q", 2**64 - 8), WRITE_CURSOR)
            raw.write(struct.pack("<Q", 2**64 - 8 - 4096), READ_CURSOR)
        else:
            raw.write(struct.pack("<Q", 10**12), HEADER)   # the first record's length
        with pytest.raises(pyshm.ProtocolError):
            c.recv(timeout=0.2)
        if where == "read_cursor":
            # A sender checks the receivers' cursor only when the one it saw
            # last no longer shows room (it only ever understates the room):
            # the corruption is found once it must look, at the latest when
            # the ring would be full.
            with pytest.raises(pyshm.ProtocolError):
                for _ in range(c.capacity // 8 + 1):
                    c.send(b"x", timeout=0.2)
        elif where != "length":
            with pytest.raises(pyshm.ProtocolError):
                c.send(b"x", timeout=0.2)
        repr(c)


def test_random_garbage_never_crashes(pyshm_names):
    """Scribble random bytes over header and ring; every call must end with a
    result, ProtocolError or TimeoutError -- never a crash or a hang."""
    rng = random.Random(1234)
    outcomes = set()
    for round_ in range(60):
        n = pyshm_names()
        try:
            with pyshm.Channel(n, create=True, capacity=512) as c, _raw(n) as raw:
                for i in range(rng.randrange(0, 6)):
                    c.send(rng.randbytes(rng.randrange(0, 100)), timeout=0)
                for _ in range(rng.randrange(1, 8)):
                    off = rng.randrange(0, raw.size)
                    raw.write(rng.randbytes(min(rng.randrange(1, 64), raw.size - off)), off)
                for op in range(6):
                    try:
                        if op % 3 == 0:
                            c.send(rng.randbytes(rng.randrange(0, 200)), timeout=0.02)
                        elif op % 3 == 1:
                            c.recv(timeout=0.02)
                        else:
                            c.recv_into(bytearray(rng.randrange(0, 600)), timeout=0.02)
                        outcomes.add("ok")
                    except (pyshm.ProtocolError, TimeoutError, ValueError) as e:
                        outcomes.add(type(e).__name__)
                repr(c)
                try:
                    pyshm.Channel(n).close()
                except pyshm.ProtocolError:
                    outcomes.add("refused")
        finally:
            pyshm_names.remove(n)
    assert "ProtocolError" in outcomes


# ---- the fuzzer: a victim child runs calls on a corrupted channel ------------------

VICTIM = r"""
import json, os, struct, sys, traceback, pyshm
sys.path.insert(0, sys.argv[1])
from slots import live_slots, have_ofd_locks, own_owner, WAITERS

HEADER = 512
WC, RC = 64, 128
SENT, RECEIVED = 88, 152                   # the message counters
# wait words, waiter counts, CPU hints; the wake times (data_woken,
# space_woken: stored before a sleeper is woken); the two lock words
MAY_MOVE = [(72, 84), (136, 148), (96, 104), (160, 168), (192, 196), (256, 260)]

def my_owner(c, name, before):
    # This process's owner id in a lock word: its liveness slot (futex
    # build: the one slot that appeared when it attached; Windows: read
    # from a lock word it holds), else its pid.
    if pyshm.CHANNEL_WAIT == "futex" and have_ofd_locks:
        mine = live_slots(name) - before
        return mine.pop() if len(mine) == 1 else None
    if pyshm.CHANNEL_WAIT == "win32":
        return own_owner(c, name)
    return os.getpid()

def apply_late(raw, late, owner):
    # Mutations only the victim can resolve: its own owner id.
    for off, width, token in late:
        value = owner | WAITERS if token == "W|victim_owner" else owner
        raw.write(value.to_bytes(width, "little"), off)

PAD, LEN_MASK, KIND_MASK = 1 << 63, (1 << 48) - 1, 0x7f << 56   # length word (core/ring.h)

def pad8(n):
    return (n + 7) & ~7

def changed_outside(before, after, allowed):
    # Byte ranges [a, b) in ALLOWED may differ; report the first other one.
    mask = bytearray(len(before))
    for a, b in allowed:
        for i in range(a, min(b, len(mask))):
            mask[i] = 1
    for i, (x, y) in enumerate(zip(before, after)):
        if x != y and not mask[i]:
            return i
    return None

def ring_span(cap, start, n):
    # Segment byte ranges of N ring bytes from cursor START (wrapping).
    off = start % cap
    first = min(n, cap - off)
    spans = [(HEADER + off, HEADER + off + first)]
    if n > first:
        spans.append((HEADER, HEADER + n - first))
    return spans

def ring_bytes(snap, cap, start, n):
    return b"".join(snap[a:b] for a, b in ring_span(cap, start, n))

def skipped(snap, cap, r, w):
    # The read cursors a receive may leave behind by consuming padding
    # records at R: each one valid (reaching exactly to the ring's end).
    out = [r]
    while True:
        used = (w - r) % 2**64
        if used < 8 or used > cap or r % 8:
            return out
        word, = struct.unpack("<Q", ring_bytes(snap, cap, r, 8))
        n = word & LEN_MASK
        if not word & PAD or word & ~(PAD | LEN_MASK) or n > used - 8 or r % cap + 8 + n != cap:
            return out
        r = (r + 8 + n) % 2**64
        out.append(r)

def one_op(c, raw, op):
    kind, timeout = op[0], op[-1]
    cap = c.capacity
    before = raw.read()
    w0, = struct.unpack_from("<Q", before, WC)
    r0, = struct.unpack_from("<Q", before, RC)
    failed = None
    try:
        if kind == "send":
            # Like a loan (version 4): in place, never straddling the end.
            data = bytes((i * 37 + 11) & 255 for i in range(op[1]))
            c.send(data, timeout=timeout)
            result = "ok"
        elif kind == "reserve":
            # A loan: in place, never straddling the end (padding first).
            data = bytes((i * 53 + 7) & 255 for i in range(op[1]))
            with c.reserve(len(data), timeout=timeout) as buf:
                buf[:] = data
            result = "ok"
        elif kind == "recv":
            msg = c.recv(timeout=timeout)
            result, allowed = "ok", [(RC, RC + 8), (RECEIVED, RECEIVED + 8)]
        elif kind == "recv_view":
            with c.recv_view(timeout=timeout) as view:
                msg = bytes(view)
            result, allowed = "ok", [(RC, RC + 8), (RECEIVED, RECEIVED + 8)]
        elif kind == "recv_obj":
            # Only a record of the object kind with a sound frame is taken;
            # anything else raises and stays queued.  A sound frame around
            # a scribbled pickle stream is taken, then unpickling fails.
            try:
                c.recv_obj(timeout=timeout)
            except (pyshm.ProtocolError, TimeoutError):
                raise
            except Exception as e:
                failed = e
            result, allowed, msg = "ok", [(RC, RC + 8), (RECEIVED, RECEIVED + 8)], None
        else:
            buf = bytearray(b"\xee" * op[1])
            n = c.recv_into(buf, timeout=timeout)
            msg = bytes(buf[:n])
            if buf[n:] != b"\xee" * (len(buf) - n):
                return "BAD: recv_into wrote past the message in the caller's buffer"
            result, allowed = "ok", [(RC, RC + 8), (RECEIVED, RECEIVED + 8)]
    except (pyshm.ProtocolError, TimeoutError, ValueError) as e:
        result, allowed = type(e).__name__, []
    after = raw.read()
    r1, = struct.unpack_from("<Q", after, RC)
    w1, = struct.unpack_from("<Q", after, WC)
    sending = kind in ("send", "reserve")
    pads = skipped(before, cap, r0, w0) if not sending else [r0]
    if failed is not None and r1 in pads:
        # Not taken: only "not an object record" may leave it queued.
        if not isinstance(failed, ValueError):
            return f"BAD: recv_obj raised {failed!r} and left the record queued"
        result, allowed = "ValueError", []
    if result != "ok" and r1 in pads:
        allowed = [(RC, RC + 8)]        # padding consumed before the failure
    if sending:
        # The only thing a send or a loan may publish besides its record: a
        # padding record from the write cursor to the ring's end, published
        # at once when the record could not fit in front of the cursor.
        tail = cap - w0 % cap
        padded = w0 % 8 == 0 and 8 <= tail <= cap and \
            ring_bytes(after, cap, w0, 8) == struct.pack("<Q", PAD | (tail - 8))
        step = (w1 - w0) % 2**64
        # In an empty ring the sender may consume that padding itself (it
        # takes the recv lock): the read cursor then moves to the ring's end
        # (and the record at offset 0 may cover the padding's bytes).
        skipped_lap = r0 == w0 and r1 != r0 and r1 == (w0 + tail) % 2**64
        moved = [(RC, RC + 8)] if skipped_lap else []
        if result == "ok":
            skip = step - 8 - pad8(len(data))
            if skip not in (0, tail) or (skip and not (padded or skipped_lap)):
                return f"BAD: a {kind} moved the write cursor wrongly ({w0} -> {w1})"
            if (w0 + skip) % cap + 8 + len(data) > cap:
                return f"BAD: a {kind} record straddles the ring's end"
            allowed = [(WC, WC + 8), (SENT, SENT + 8)] + moved + ring_span(cap, w0, step)
        elif step == tail and padded:
            allowed = [(WC, WC + 8)] + moved + ring_span(cap, w0, 8)
    where = changed_outside(before, after, allowed + MAY_MOVE)
    if where is not None:
        return f"BAD: byte {where} of the segment changed ({kind} -> {result})"
    if result != "ok":
        return result
    if sending:
        rec = ring_bytes(after, cap, (w1 - 8 - pad8(len(data))) % 2**64, 8 + len(data))
        if rec != struct.pack("<Q", len(data)) + data or (r1 != r0 and not skipped_lap):
            return f"BAD: the {kind} record is not where the write cursor was"
        return "ok"
    # A message must be exactly the record behind the read cursor as it was
    # (after any padding records there).
    rm = pads[-1]
    word, = struct.unpack("<Q", ring_bytes(before, cap, rm, 8))
    length = word & LEN_MASK
    if word & ~(LEN_MASK | KIND_MASK) or (word & KIND_MASK) >> 56 > 1:
        return "BAD: a record of unknown kind was received"
    if kind == "recv_obj":
        if (word & KIND_MASK) >> 56 != 1:
            return "BAD: recv_obj took a record that send_obj did not write"
        msg = ring_bytes(before, cap, rm + 8, length)
    if length != len(msg) or msg != ring_bytes(before, cap, rm + 8, len(msg)):
        return f"BAD: got {len(msg)} bytes that are not the record at the read cursor"
    if rm % cap + 8 + pad8(length) > cap:
        return "BAD: a record that straddles the ring's end was taken (version 4 has none)"
    if r1 != (rm + 8 + pad8(len(msg))) % 2**64 or w1 != w0:
        return f"BAD: recv moved the cursors wrongly ({w0},{r0}) -> ({w1},{r1})"
    if len(msg) > c.max_message_size:
        return "BAD: a message larger than max_message_size"
    return "ok"

print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    out = []
    try:
        with pyshm.SharedMemory(req["name"]) as raw:
            late = req.get("late", [])
            before = live_slots(req["name"]) if late and have_ofd_locks else set()
            try:
                c = pyshm.Channel(req["name"])
            except pyshm.ProtocolError:
                out.append("refused")
            else:
                with c:
                    if late:
                        owner = my_owner(c, req["name"], before)
                        if owner is None:
                            raise RuntimeError("cannot tell this victim's own slot")
                        apply_late(raw, late, owner)
                    for op in req["ops"]:
                        out.append(one_op(c, raw, op))
                    try:
                        out.append("queued %d" % c.queued)
                    except pyshm.ProtocolError:
                        out.append("queued ProtocolError")
                    repr(c)
    except BaseException:
        out.append("UNEXPECTED: " + traceback.format_exc())
    print(json.dumps(out), flush=True)
"""


class Victim:
    """The long-lived child that opens corrupted channels; restarted after a death."""

    def __init__(self, watchdog: float) -> None:
        self.watchdog = watchdog
        self.children = ChildFactory()      # the plugin's, for a module-wide child
        self.child: Child | None = None

    @property
    def pid(self) -> int:
        self._ensure()
        assert self.child is not None
        return self.child.pid

    def _ensure(self) -> None:
        if self.child is None or self.child.poll() is not None:
            self.close()
            # The victim imports slots.py from this folder.
            self.child = self.children(VICTIM, os.path.dirname(os.path.abspath(__file__)))
            self.child.expect("ready")

    def run(self, request: dict, example: str) -> list[str]:
        self._ensure()
        assert self.child is not None
        child = self.child
        child.send_line(json.dumps(request))
        try:
            # A hang (no answer at the watchdog) or a death fails the test
            # with the child's stderr; the example is added here.
            line = child.line(timeout=self.watchdog)
        except pytest.fail.Exception as e:
            self.close()
            pytest.fail(f"victim: {e.msg}\non:\n{example}")
        return json.loads(line)

    def close(self) -> None:
        self.children.reap_all()
        self.child = None


@pytest.fixture(scope="module")
def victim(under_asan):
    v = Victim(watchdog=120.0 if under_asan else 30.0)
    yield v
    v.close()


# ---- what hypothesis draws ------------------------------------------------------

def _boundaries(width: int) -> list[int]:
    top = 2 ** (8 * width)
    return sorted(v for v in {0, 1, 7, 8, 15, 16, 24, 63, 64, 511, 512, 4096, top // 2 - 1,
                              top // 2, top - 8, top - 1} if v < top)


# Special values resolved at run time.  Owners for lock words: the victim's
# own (resolved by the victim once attached: *_owner tokens with "victim"),
# the parent's (alive, never releases), one that is dead, and the bounds of
# the owner range; with and without the waiter bit.  Cursor-relative values.
TOKENS = ["victim_owner", "W|victim_owner", "parent_owner", "W|parent_owner", "dead_owner",
          "W|dead_owner", "owner_max", "owner_max+1", "W|0", "W|seq",
          "read+cap", "read+cap+8", "read-8", "write+8", "write-8", "write+cap", "read+1"]
LATE_TOKENS = {"victim_owner", "W|victim_owner"}

mutation = st.one_of(
    # a header field (or a lock-area field) set to a boundary, random or special value
    st.sampled_from(sorted(FIELDS)).flatmap(lambda f: st.tuples(
        st.just("field"), st.just(f),
        st.one_of(st.sampled_from(_boundaries(FIELDS[f][1])),
                  st.integers(0, 255),     # small: lock kinds, flags, versions
                  st.integers(0, 2 ** (8 * FIELDS[f][1]) - 1),
                  st.sampled_from(TOKENS)))),
    # the length word of the record at the read cursor, or at any aligned offset
    st.tuples(st.just("len_at_read"), st.one_of(st.just(0), st.integers(0, 64)),
              st.one_of(st.sampled_from(_boundaries(8)), st.integers(0, 2 ** 64 - 1),
                        st.sampled_from(["cap-8", "cap-7", "cap", "cap+1", "used-8",
                                         "used-7", "used", "pad_to_end", "pad_past_end",
                                         "pad_empty", "pad|used-8", "object|used-8",
                                         "kind2|used-8"]))),
    st.tuples(st.just("len_at"), st.integers(0, 10 ** 6),
              st.one_of(st.sampled_from(_boundaries(8)), st.integers(0, 2 ** 64 - 1))),
    # random bytes in the ring or anywhere in the header
    st.tuples(st.just("ring_bytes"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("header_bytes"), st.integers(0, HEADER - 1),
              st.binary(min_size=1, max_size=16)),
)

timeout = st.sampled_from([0, 0, 0, 0.05])
operation = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 1100), timeout),
    st.tuples(st.just("reserve"), st.integers(0, 1100), timeout),
    st.tuples(st.just("recv"), timeout),
    st.tuples(st.just("recv_into"), st.integers(0, 1100), timeout),
    st.tuples(st.just("recv_view"), timeout),
    st.tuples(st.just("recv_obj"), timeout),
)


def _owners(name: str, chan: pyshm.Channel) -> dict[str, int]:
    """Lock-word owner ids of this build: liveness slots (futex, Windows) or
    pids.  CHAN is this process's (the only) object on NAME."""
    if FUTEX and have_ofd_locks:
        parents = live_slots(name)      # only this process is attached
        parent, dead, top = min(parents), free_slot(name), SLOT_MAX
    elif WIN32:
        parent, dead, top = own_owner(chan, name), free_slot(name), SLOT_MAX
    else:
        parent, dead, top = os.getpid(), 4194303, 0x7FFFFFFF   # above the usual pid_max
    return {"parent_owner": parent, "W|parent_owner": WAITERS | parent,
            "dead_owner": dead, "W|dead_owner": WAITERS | dead,
            "owner_max": top, "owner_max+1": top + 1, "W|0": WAITERS}


def _resolve(value, field: str, header: bytes, cap: int, owners: dict[str, int]) -> int:
    if isinstance(value, int):
        return value
    if value in owners:
        return owners[value]
    w, = struct.unpack_from("<Q", header, 64)
    r, = struct.unpack_from("<Q", header, 128)
    if value == "W|seq":
        off, width = FIELDS.get(field, (0, 4))
        return WAITERS | int.from_bytes(header[off:off + 4], "little")
    special = {
        "read+cap": r + cap, "read+cap+8": r + cap + 8, "read-8": r - 8, "write+8": w + 8,
        "write-8": w - 8, "write+cap": w + cap, "read+1": r + 1,
        "cap-8": cap - 8, "cap-7": cap - 7, "cap": cap, "cap+1": cap + 1,
        "used-8": w - r - 8, "used-7": w - r - 7, "used": w - r,
    }
    return special[value]


def _corrupt(raw: pyshm.SharedMemory, cap: int, mutations, owners: dict[str, int]) -> list:
    """Apply MUTATIONS; return the ones only the victim can resolve, as
    [offset, width, token]."""
    late = []
    for m in mutations:
        header = raw.read(HEADER)
        kind = m[0]
        if kind == "field":
            off, width = FIELDS[m[1]]
            if m[2] in LATE_TOKENS:
                late.append([off, width, m[2]])
                continue
            value = _resolve(m[2], m[1], header, cap, owners) % 2 ** (8 * width)
            raw.write(value.to_bytes(width, "little"), off)
        elif kind in ("len_at_read", "len_at"):
            r, = struct.unpack_from("<Q", header, 128)
            # Length words are 8-aligned; a read cursor made odd above is
            # rounded down (the victim must refuse that cursor anyway).
            slot = ((r % cap) & ~7 if kind == "len_at_read" else 0) + 8 * m[1]
            # Record kinds and padding (core/ring.h): a padding record that
            # reaches the end of the ring (valid) or one word past it, an
            # empty one, one over all that is queued (both valid only where
            # they happen to end at the ring's end).
            if m[2] in ("pad_to_end", "pad_past_end"):
                value = (1 << 63) | (cap - slot % cap - 8 + (8 if m[2] == "pad_past_end" else 0))
            elif m[2] == "pad_empty":
                value = 1 << 63
            elif m[2] == "pad|used-8":
                w, = struct.unpack_from("<Q", header, 64)
                value = (1 << 63) | ((w - r - 8) % 2 ** 48)
            elif m[2] in ("object|used-8", "kind2|used-8"):
                w, = struct.unpack_from("<Q", header, 64)
                kind_bits = 1 if m[2].startswith("object") else 2
                value = (kind_bits << 56) | ((w - r - 8) % 2 ** 48)
            else:
                value = _resolve(m[2], "", header, cap, owners) % 2 ** 64
            raw.write(struct.pack("<Q", value), HEADER + slot % cap)
        elif kind == "ring_bytes":
            off = m[1] % cap
            data = m[2][:cap - off]
            raw.write(data, HEADER + off)
        else:
            raw.write(m[2][:HEADER - m[1]], m[1])
    return late


# PYSHM_FUZZ_EXAMPLES=5000 for a long campaign; the default keeps the run short.
EXAMPLES = int(os.environ.get("PYSHM_FUZZ_EXAMPLES", 600))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(capacity=st.sampled_from([16, 24, 64, 256, 1000]),
       advance=st.integers(0, 40),
       queued=st.lists(st.tuples(st.sampled_from(["send", "send_obj", "reserve"]),
                                 st.integers(0, 300)), max_size=5),
       mutations=st.lists(mutation, min_size=1, max_size=4),
       ops=st.lists(operation, min_size=1, max_size=6))
def test_hostile_memory_gives_clean_results(victim, pyshm_names, capacity, advance, queued,
                                            mutations, ops):
    name = pyshm_names()
    example = json.dumps(dict(capacity=capacity, advance=advance, queued=queued,
                              mutations=mutations, ops=ops), default=repr)
    try:
        with pyshm.Channel(name, create=True, capacity=capacity) as c:
            # Move the cursors so records wrap at various places, then queue.
            for i in range(advance):
                c.send(bytes(i % 9), timeout=0)
                c.recv(timeout=0)
            for how, size in queued:
                try:
                    if how == "send":
                        c.send(b"q" * size, timeout=0)
                    elif how == "send_obj":
                        c.send_obj(b"q" * size, timeout=0)
                    else:                    # a loan: padding before it, maybe
                        with c.reserve(size, timeout=0) as buf:
                            buf[:] = b"l" * size
                except (ValueError, TimeoutError):
                    pass                     # too big or full: fine, queue less
            with pyshm.SharedMemory(name) as raw:
                late = _corrupt(raw, c.capacity, mutations, _owners(name, c))
            results = victim.run({"name": name, "ops": ops, "late": late}, example)
    finally:
        pyshm_names.remove(name)
    allowed = {"ok", "ProtocolError", "TimeoutError", "ValueError", "refused"}
    for r in results:
        if r.startswith("queued "):
            continue
        assert r in allowed, f"{r}\non example {example}"


def test_victim_checks_catch_a_wrong_result(victim, pyshm_name):
    """The victim's checks are not vacuous: an intact channel gives 'ok' for
    every call, and results reach the test."""
    name = pyshm_name
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send(b"abc")
        ops = [["recv", 0], ["send", 100, 0], ["recv_into", 200, 0], ["recv", 0],
               ["send", 300, 0]]
        results = victim.run({"name": name, "ops": ops}, "intact")
    assert results == ["ok", "ok", "ok", "TimeoutError", "ValueError", "queued 0"]


def test_victim_checks_loans_and_objects(victim, pyshm_names):
    """The same for loans, sends and object messages on an intact channel of
    256 bytes: a loan that fits before the end, one laid after padding
    (published with it), one that can never fit in front of the cursor (its
    padding published alone, then a timeout; a receive clears the padding
    and the next try fits at offset 0); sends that wrap the same ways;
    recv_obj on a raw record (refused, queued)."""
    name = pyshm_names()
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send(b"abc")                                      # cursor 0 -> 16
        ops = [["recv_view", 0], ["reserve", 200, 0],       # 16 -> 224
               ["recv", 0], ["reserve", 100, 0],            # 32 of padding + 112
               ["recv_view", 0], ["recv_obj", 0], ["reserve", 300, 0],
               ["send", 0, 0],                              # 112 -> 120, queued
               ["reserve", 200, 0],                         # at 120: padding alone
               ["recv", 0],                                 # the empty message
               ["recv", 0],                                 # takes the padding only
               ["reserve", 200, 0], ["recv_view", 0],
               ["reserve", 150, 0],                         # empty ring, at 208: the
               ["recv_view", 0]]                            # padding skipped, at 0
        results = victim.run({"name": name, "ops": ops}, "intact loans")
    assert results == ["ok", "ok", "ok", "ok", "ok", "TimeoutError", "ValueError",
                       "ok", "TimeoutError", "ok", "TimeoutError", "ok", "ok", "ok", "ok",
                       "queued 0"]
    # send() records are laid out as loans are (version 4): padded to the
    # start with the record, or the padding alone and a timeout.
    name = pyshm_names()
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send(b"x" * 142)                                  # cursor 0 -> 152
        c.recv()
        ops = [["send", 0, 0],                              # 152 -> 160, queued
               ["send", 100, 0],                            # 96 of padding + 112
               ["recv_view", 0], ["recv", 0],
               ["send", 0, 0],                              # 112 -> 120, queued
               ["send", 200, 0],                            # at 120: padding alone
               ["recv", 0], ["recv", 0],                    # the message, the padding
               ["send", 200, 0], ["recv", 0],               # at 0 -> 208
               ["send", 200, 0],                            # empty ring: the padding
               ["recv_view", 0]]                            # skipped by the sender
        results = victim.run({"name": name, "ops": ops}, "intact sends")
    assert results == ["ok", "ok", "ok", "ok", "ok", "TimeoutError", "ok", "TimeoutError",
                       "ok", "ok", "ok", "ok", "queued 0"]
    name = pyshm_names()
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send_obj({"k": [1, 2]})
        ops = [["recv_obj", 0], ["send", 10, 0], ["recv_obj", 0], ["recv", 0]]
        results = victim.run({"name": name, "ops": ops}, "intact objects")
    assert results == ["ok", "ok", "ValueError", "ok", "queued 0"]


# ---- the lock words ----------------------------------------------------------------

# The lines that held the two locks: version 1 kept a glibc pthread_mutex_t
# in 128 bytes each from offset 192, with the robust list's two pointers at
# +24 and +32, which glibc followed (and wrote through) at every unlock;
# versions 2 and 3 keep one 32-bit word per line at 192 and 256.
LOCK_LINES = range(192, 448, 8)
POINTERISH = 0x4141414141414141     # non-canonical: any write through it faults


@pytest.mark.parametrize("offset", LOCK_LINES)
def test_pointer_garbage_in_the_lock_lines(victim, pyshm_name, offset):
    """Issue 13, point 2: 16 bytes written into the recv lock's robust-list
    link gave the receiver SIGSEGV in __pthread_mutex_unlock_full at its next
    unlock.  Nothing in the lock lines may be followed as a pointer: garbage
    in any word of them gives clean results (a word that is a lock word is
    refused or waited on; the rest is padding)."""
    name = pyshm_name
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send(b"queued")
        with pyshm.SharedMemory(name) as raw:
            raw.write(struct.pack("<QQ", POINTERISH, POINTERISH)[:min(16, 448 - offset)],
                      offset)
        ops = [["recv", 0], ["send", 8, 0], ["recv_into", 64, 0.05], ["send", 8, 0.05]]
        results = victim.run({"name": name, "ops": ops}, f"16 bytes at {offset}")
    assert set(results[:-1]) <= {"ok", "ProtocolError", "TimeoutError"}, (offset, results)


def _lock_cases():
    # (owner token or int, what the corrupted side's calls give).  The waiter
    # bit is part of a valid slot lock word (futex, Windows); a pid never has
    # it (fallback).
    garbage = [WAITERS, 0xFFFFFFFF, "owner_max+1"]
    if SLOTS:
        garbage += [0x7FFFFFFF, SLOT_MAX + 1, 1 << 20]
    else:
        garbage += ["W|dead_owner", "W|parent_owner", "W|victim_owner"]
    cases = [(v, "ProtocolError") for v in garbage]
    cases += [(v, "ok") for v in ("dead_owner", "W|dead_owner") if v not in garbage]
    cases += [(v, "TimeoutError") for v in ("parent_owner", "W|parent_owner", "victim_owner",
                                           "W|victim_owner") if v not in garbage]
    return cases


@pytest.mark.skipif(FUTEX and not have_ofd_locks, reason="needs F_OFD_GETLK to see the slots")
@pytest.mark.parametrize("side", ["send", "recv"])
@pytest.mark.parametrize("owner,expect", _lock_cases(), ids=str)
def test_owner_in_a_lock_word(victim, pyshm_name, side, owner, expect):
    """A lock word holds 0 or a valid owner (futex and Windows: a liveness
    slot, fallback: a pid).  An owner outside the valid range is refused (ProtocolError),
    never waited on or followed; a dead owner's lock is taken over at once,
    even by a call with timeout 0; a live owner's lock makes its side time
    out -- also when the owner is the caller itself (a hostile peer can
    hold a lock, never crash anyone).  The other side is not affected."""
    name = pyshm_name
    word = FIELDS[f"{side}_lock"][0]
    example = f"{side}_lock = {owner!r}"
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send(b"queued")
        late = []
        with pyshm.SharedMemory(name) as raw:
            if owner in LATE_TOKENS:
                late = [[word, 4, owner]]
            else:
                value = _resolve(owner, f"{side}_lock", raw.read(HEADER), c.capacity,
                                 _owners(name, c))
                raw.write(struct.pack("<I", value % 2 ** 32), word)
        ops = [["send", 8, 0], ["recv", 0], ["recv_into", 64, 0.05], ["send", 8, 0.05]]
        results = victim.run({"name": name, "ops": ops, "late": late}, example)
        mine = {r for op, r in zip(ops, results) if op[0].startswith(side)}
        others = {r for op, r in zip(ops, results) if not op[0].startswith(side)}
        assert mine == {expect}, (example, results)
        # The other side: the queued message comes out, sends go in.
        assert others <= {"ok", "TimeoutError"} and "ok" in others, (example, results)
        if expect == "ok":
            with pyshm.SharedMemory(name) as raw:
                left, = struct.unpack("<I", raw.read(4, word))
            assert left == 0, f"{example}: the taken-over lock was not released ({left:#x})"


BUSY_PEER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
big = bytes(int(sys.argv[2]))
buf = bytearray(len(big))
print("ready", flush=True)
counts = {}
for i in range(int(sys.argv[3])):
    # Big copies: each call holds a lock for a while (without the GIL).
    for op in (lambda: c.send(big, timeout=0.05), lambda: c.recv_into(buf, timeout=0.05)):
        try:
            op()
            counts["ok"] = counts.get("ok", 0) + 1
        except (pyshm.ProtocolError, TimeoutError) as e:
            counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
print(sorted(counts.items()), flush=True)
"""


def test_pointer_garbage_while_the_locks_are_held(pyshm_names, pyshm_child):
    """Issue 13, point 2, as reported: the 16-byte poke lands while the peer
    holds the lock (glibc linked the mutex into the holder's robust list at
    lock time and wrote through the link at unlock: SIGSEGV).  Here garbage
    goes into every word of the lock lines, round and round, while a peer
    sends and receives big messages; the peer must finish its calls with
    results or ProtocolError / TimeoutError, never die.  A few fresh
    channels, because a garbled lock can leave one refusing every call."""
    size, rounds = 1 << 20, 400
    garbage = struct.pack("<QQ", POINTERISH, POINTERISH)
    for _ in range(3):
        name = pyshm_names()
        with pyshm.Channel(name, create=True, capacity=4 << 20), \
                pyshm.SharedMemory(name) as raw:
            pristine = raw.read(448 - 192, 192)
            peer = pyshm_child(BUSY_PEER, name, size, rounds)
            peer.expect("ready")
            i = 0
            while peer.poll() is None:
                # Garbage, then the bytes as a fresh channel had them, word
                # after word: each gets its turn while the peer holds a
                # lock, and a refused word does not stop the peer for good.
                offset = LOCK_LINES[i % len(LOCK_LINES)]
                n = min(16, 448 - offset)
                raw.write(garbage[:n], offset)
                pace = time.perf_counter() + 0.0005     # about one big copy
                while time.perf_counter() < pace:
                    pass
                raw.write(pristine[offset - 192:offset - 192 + n], offset)
                i += 1
            out = peer.finish().strip()
        pyshm_names.remove(name)
        assert "ok" in out, out
