"""Hostile memory: shared bytes that are not a valid channel, never a crash.

First hand-written cases: a segment that is not a channel, a corrupt cursor
or length word, random garbage over header and ring.  Then the fuzzer:
hypothesis scribbles on a live channel and a victim child uses it.

The test process creates a channel, queues a few messages, then corrupts the
header, the lock areas, length words or ring bytes through a raw
``pyshm.SharedMemory`` view of the same name (targeted mutations chosen by
hypothesis).  A long-lived *victim* child then opens the channel anew and
runs send / recv / recv_into with short timeouts (0 and 0.05 s).

What must hold (DESIGN.md, "Errors, everywhere"; src/core/ring.h, "Trust"):

* every call ends in a message, ``pyshm.ProtocolError``, ``TimeoutError`` or
  ``ValueError`` -- never a crash, never a hang: the victim answers each
  request before a watchdog deadline, or the test fails with the example;
* nothing is read or written outside what the protocol allows: the victim
  snapshots the whole segment before each call and checks afterwards that
  a received message is exactly the ring bytes behind the read cursor, that
  a sent record landed exactly at the write cursor, that the caller's
  buffer was not written past the message, and that no other byte of the
  segment changed (only cursors, sequence words, waiter counts and lock
  areas may move).

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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm
from pyshm.pytest_plugin import Child, ChildFactory

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX names and pids")

HEADER = 512                        # core/ring.h: RING_HEADER_SIZE
SEND_LOCK, RECV_LOCK = 192, 320

# (offset, width) of every header field (core/ring.h, struct ring_header).
FIELDS = {
    "magic": (0, 4), "version": (4, 4), "capacity": (8, 8), "header_size": (16, 4),
    "sync_kind": (20, 4),
    "write_cursor": (64, 8), "data_seq": (72, 4), "recv_waiters": (76, 4),
    "send_cpu": (80, 4), "creator_pid": (84, 4), "sent": (88, 8),
    "read_cursor": (128, 8), "space_seq": (136, 4), "send_waiters": (140, 4),
    "recv_cpu": (144, 4), "received": (152, 8),
}
WRITE_CURSOR, READ_CURSOR = FIELDS["write_cursor"][0], FIELDS["read_cursor"][0]
# glibc x86-64 pthread_mutex_t: __lock, __count, __owner, __nusers, __kind,
# __spins (int32 each), then the robust list's two pointers.  Elsewhere the
# same offsets are simply bytes of an opaque lock area.
LOCK_FIELDS = {"lock": (0, 4), "count": (4, 4), "owner": (8, 4), "nusers": (12, 4),
               "kind": (16, 4), "spins": (20, 4), "prev": (24, 8), "next": (32, 8)}
for _side, _base in (("send", SEND_LOCK), ("recv", RECV_LOCK)):
    for _f, (_o, _w) in LOCK_FIELDS.items():
        FIELDS[f"{_side}_lock.{_f}"] = (_base + _o, _w)


# ---- hand-written corruption ----------------------------------------------------

@pytest.mark.parametrize("content", ["random", "zeros", "small", "version", "capacity"])
def test_not_a_channel_is_refused(pyshm_name, pyshm_names, content):
    size = 64 if content == "small" else 8192
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as shm:
        if content == "random":
            shm.write(random.Random(5).randbytes(size))
        elif content in ("version", "capacity"):
            good_name = pyshm_names()
            with pyshm.Channel(good_name, create=True, capacity=1024) as good:
                try:
                    raw = pyshm.SharedMemory(good_name)
                    header = bytearray(raw.read(HEADER))
                    raw.close()
                finally:
                    good.unlink()
            if content == "version":
                header[4:8] = struct.pack("<I", 99)
            else:
                header[8:16] = struct.pack("<Q", 1 << 40)
            shm.write(header)
        with pytest.raises(pyshm.ProtocolError):
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
import json, struct, sys, traceback, pyshm

HEADER, LOCKS = 512, (192, 448)
WC, RC = 64, 128
SENT, RECEIVED = 88, 152                   # the message counters
MAY_MOVE = [(72, 84), (136, 148), LOCKS]   # seq words, waiter counts, CPU hints; locks

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
    try:
        if kind == "send":
            data = bytes((i * 37 + 11) & 255 for i in range(op[1]))
            c.send(data, timeout=timeout)
            result, allowed = "ok", [(WC, WC + 8), (SENT, SENT + 8)] + \
                ring_span(cap, w0, 8 + pad8(len(data)))
        elif kind == "recv":
            msg = c.recv(timeout=timeout)
            result, allowed = "ok", [(RC, RC + 8), (RECEIVED, RECEIVED + 8)]
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
    pads = skipped(before, cap, r0, w0) if kind != "send" else [r0]
    if result != "ok" and r1 in pads:
        allowed = [(RC, RC + 8)]        # padding consumed before the failure
    where = changed_outside(before, after, allowed + MAY_MOVE)
    if where is not None:
        return f"BAD: byte {where} of the segment changed ({kind} -> {result})"
    if result != "ok":
        return result
    w1, = struct.unpack_from("<Q", after, WC)
    r1, = struct.unpack_from("<Q", after, RC)
    if kind == "send":
        need = 8 + pad8(len(data))
        if w1 != (w0 + need) % 2**64 or r1 != r0:
            return f"BAD: send moved the cursors wrongly ({w0},{r0}) -> ({w1},{r1})"
        rec = ring_bytes(after, cap, w0, 8 + len(data))
        if rec != struct.pack("<Q", len(data)) + data:
            return "BAD: the sent record is not where the write cursor was"
        return "ok"
    # A message must be exactly the record behind the read cursor as it was
    # (after any padding records there).
    rm = pads[-1]
    word, = struct.unpack("<Q", ring_bytes(before, cap, rm, 8))
    length = word & LEN_MASK
    if word & ~(LEN_MASK | KIND_MASK) or (word & KIND_MASK) >> 56 > 1:
        return "BAD: a record of unknown kind was received"
    if length != len(msg) or msg != ring_bytes(before, cap, rm + 8, len(msg)):
        return f"BAD: got {len(msg)} bytes that are not the record at the read cursor"
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
            try:
                c = pyshm.Channel(req["name"])
            except pyshm.ProtocolError:
                out.append("refused")
            else:
                with c:
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
            self.child = self.children(VICTIM)
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


# Special values resolved at run time: pids for lock owners, cursor-relative values.
TOKENS = ["victim_pid", "parent_pid", "dead_pid", "owner_died|victim", "owner_died|dead",
          "waiters|parent", "read+cap", "read+cap+8", "read-8", "write+8", "write-8",
          "write+cap", "read+1"]

mutation = st.one_of(
    # a header field (or a lock-area field) set to a boundary, random or special value
    st.sampled_from(sorted(FIELDS)).flatmap(lambda f: st.tuples(
        st.just("field"), st.just(f),
        st.one_of(st.sampled_from(_boundaries(FIELDS[f][1])),
                  st.integers(0, 255),     # small: lock kinds, flags, versions
                  st.integers(0, 2 ** (8 * FIELDS[f][1]) - 1),
                  st.sampled_from(TOKENS)))),
    # the length word of the record at the read cursor, or at any aligned offset
    st.tuples(st.just("len_at_read"), st.integers(0, 64),
              st.one_of(st.sampled_from(_boundaries(8)), st.integers(0, 2 ** 64 - 1),
                        st.sampled_from(["cap-8", "cap-7", "cap", "cap+1", "used-8",
                                         "used-7", "used", "pad_to_end", "pad_past_end",
                                         "object|used-8", "kind2|used-8"]))),
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
    st.tuples(st.just("recv"), timeout),
    st.tuples(st.just("recv_into"), st.integers(0, 1100), timeout),
)


def _resolve(value, name: str, header: bytes, cap: int, victim_pid: int) -> int:
    if isinstance(value, int):
        return value
    w, = struct.unpack_from("<Q", header, 64)
    r, = struct.unpack_from("<Q", header, 128)
    dead = 4194303          # above the usual pid_max: no such thread
    special = {
        "victim_pid": victim_pid, "parent_pid": os.getpid(), "dead_pid": dead,
        "owner_died|victim": 0x40000000 | victim_pid, "owner_died|dead": 0x40000000 | dead,
        "waiters|parent": 0x80000000 | os.getpid(),
        "read+cap": r + cap, "read+cap+8": r + cap + 8, "read-8": r - 8, "write+8": w + 8,
        "write-8": w - 8, "write+cap": w + cap, "read+1": r + 1,
        "cap-8": cap - 8, "cap-7": cap - 7, "cap": cap, "cap+1": cap + 1,
        "used-8": w - r - 8, "used-7": w - r - 7, "used": w - r,
    }
    return special[value]


def _corrupt(raw: pyshm.SharedMemory, cap: int, mutations, victim_pid: int) -> None:
    for m in mutations:
        header = raw.read(HEADER)
        kind = m[0]
        if kind == "field":
            off, width = FIELDS[m[1]]
            value = _resolve(m[2], m[1], header, cap, victim_pid) % 2 ** (8 * width)
            raw.write(value.to_bytes(width, "little"), off)
        elif kind in ("len_at_read", "len_at"):
            r, = struct.unpack_from("<Q", header, 128)
            # Length words are 8-aligned; a read cursor made odd above is
            # rounded down (the victim must refuse that cursor anyway).
            slot = ((r % cap) & ~7 if kind == "len_at_read" else 0) + 8 * m[1]
            # Record kinds and padding (core/ring.h): a padding record that
            # reaches the end of the ring (valid) or one word past it.
            if m[2] in ("pad_to_end", "pad_past_end"):
                value = (1 << 63) | (cap - slot % cap - 8 + (8 if m[2] == "pad_past_end" else 0))
            elif m[2] in ("object|used-8", "kind2|used-8"):
                w, = struct.unpack_from("<Q", header, 64)
                kind_bits = 1 if m[2].startswith("object") else 2
                value = (kind_bits << 56) | ((w - r - 8) % 2 ** 48)
            else:
                value = _resolve(m[2], "", header, cap, victim_pid) % 2 ** 64
            raw.write(struct.pack("<Q", value), HEADER + slot % cap)
        elif kind == "ring_bytes":
            off = m[1] % cap
            data = m[2][:cap - off]
            raw.write(data, HEADER + off)
        else:
            raw.write(m[2][:HEADER - m[1]], m[1])


# PYSHM_FUZZ_EXAMPLES=5000 for a long campaign; the default keeps the run short.
EXAMPLES = int(os.environ.get("PYSHM_FUZZ_EXAMPLES", 600))


@posix_only
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(capacity=st.sampled_from([16, 24, 64, 256, 1000]),
       advance=st.integers(0, 40),
       queued=st.lists(st.integers(0, 300), max_size=5),
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
            for size in queued:
                try:
                    c.send(b"q" * size, timeout=0)
                except (ValueError, TimeoutError):
                    pass                     # too big or full: fine, queue less
            with pyshm.SharedMemory(name) as raw:
                _corrupt(raw, c.capacity, mutations, victim.pid)
            results = victim.run({"name": name, "ops": ops}, example)
    finally:
        pyshm_names.remove(name)
    allowed = {"ok", "ProtocolError", "TimeoutError", "ValueError", "refused"}
    for r in results:
        if r.startswith("queued "):
            continue
        assert r in allowed, f"{r}\non example {example}"


@posix_only
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


# Values of glibc's __kind word that select other mutex code paths: 0-3 plain
# types, 16+ robust, 32+ priority inherit, 64+ priority protect (whose
# trylock asserts on the ceiling bits and aborts), 128 the pshared bit.
GARBAGE_KINDS = [0, 1, 3, 16, 32, 34, 48, 50, 64, 66, 80, 96, 128, 160, 192, 194, 255,
                 0x7fffffff, 0xffffffff]


@posix_only
@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex", reason="glibc mutex layout")
@pytest.mark.parametrize("side", ["send", "recv"])
@pytest.mark.parametrize("kind", GARBAGE_KINDS, ids=hex)
def test_garbage_lock_kind_is_not_fatal(victim, pyshm_name, side, kind):
    """A foreign value in a lock's type word must not reach glibc: with
    kind 64 (priority protect) pthread_mutex_trylock used to abort the
    process in __pthread_tpp_change_priority."""
    name = pyshm_name
    base = SEND_LOCK if side == "send" else RECV_LOCK
    example = f"{side}_lock.kind = {kind:#x}"
    with pyshm.Channel(name, create=True, capacity=256) as c:
        c.send(b"queued")
        with pyshm.SharedMemory(name) as raw:
            if struct.unpack_from("<I", raw.read(4, base + 16))[0] == kind:
                pytest.skip("that is the real kind")
            raw.write(struct.pack("<I", kind), base + 16)
        ops = [["send", 8, 0], ["recv", 0], ["recv_into", 64, 0.05], ["send", 8, 0.05]]
        results = victim.run({"name": name, "ops": ops}, example)
    assert set(results[:-1]) <= {"ok", "ProtocolError", "TimeoutError"}, (example, results)
    # The lock of the corrupted side is refused; the other side still works.
    mine = [r for op, r in zip(ops, results) if op[0].startswith(side)]
    assert set(mine) == {"ProtocolError"}, (example, results)
