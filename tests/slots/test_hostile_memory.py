"""Hostile memory: shared bytes that are not a valid slot, never a crash.

First hand-written cases: a segment that is not a slot, headers of another
version or with sizes that do not fit, a latest word naming no cell, a cell
whose state or length lies, garbage in the lock and wait words and in the
readers' marks.  Then the fuzzer: hypothesis scribbles on a live slot and a
victim child uses it.

The test process creates a slot, publishes a few values, then corrupts any
header field (every one of core/slot.h's slot_header), any cell's head
(state, length, marks) or value bytes through a raw ``pyshm.SharedMemory``
view of the same name.  A long-lived *victim* child then opens the slot anew
and runs publish / reserve / read / readinto / snapshot / wait (timeouts 0
and 0.05 s).

What must hold (DESIGN.md, "Errors, everywhere"; src/core/slot.h, "Trust"):

* every call ends in a result, ``pyshm.ProtocolError``, ``TimeoutError`` or
  ``ValueError`` -- never a crash, never a hang: the victim answers each
  request before a watchdog deadline, or the test fails with the example;
* a read returns exactly the value of the cell that ``latest`` names, with
  that generation, or raises; a publish lands in a cell other than the one
  ``latest`` named, whole, and makes it the latest with the next generation;
  the caller's buffer is not written past the value; and no other byte of
  the segment changes (only the latest word, the wait word and its count,
  the lock word, the cells' heads -- states put back as they were but for
  the cell published -- and the readers' marks may move).

The lock word is only ever set to a free word, to garbage, or to an owner
that cannot be alive: a live owner (the parent, the victim itself) would
make publish() wait for it, as it must -- publish has no timeout.  The
victim runs in a child so that a crash or a hang is a clear failure rather
than a dead test run; under the CI's ASan pass it is instrumented too.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm
from pyshm.pytest_plugin import Child, ChildFactory

from . import layout
from .layout import (CELL_HEAD, CELL_SIZE, CELLS, GEN_SEQ, GEN_WAITERS, HEADER, HEADER_SIZE,
                     LATEST, LENGTH, MAGIC, MARKS, NCELLS, PUBLISH_CPU, STATE, VALUE_SIZE,
                     VERSION, WRITE_LOCK, cell_at, cell_size)

HERE = os.path.dirname(os.path.abspath(__file__))

# (offset, width) of every header field (core/slot.h, slot_header); the bytes
# between them are padding, reached by "header_bytes".
FIELDS = {
    "magic": (MAGIC, 4), "version": (VERSION, 4), "header_size": (HEADER_SIZE, 4),
    "cells": (NCELLS, 4), "value_size": (VALUE_SIZE, 8), "cell_size": (CELL_SIZE, 8),
    "sync_kind": (layout.SYNC_KIND, 4), "sync_domain": (layout.SYNC_DOMAIN, 4),
    "creator_pid": (layout.CREATOR_PID, 4), "latest": (LATEST, 8), "gen_seq": (GEN_SEQ, 4),
    "gen_waiters": (GEN_WAITERS, 4), "publish_cpu": (PUBLISH_CPU, 4),
    "write_lock": (WRITE_LOCK, 4),
}
CELL_FIELDS = {"state": (STATE, 8), "length": (LENGTH, 8), "marks": (MARKS, 8)}


@pytest.mark.skipif(sys.platform == "win32",
                    reason="the numbers are the compiler's view of src/ on the Linux host; "
                           "the Windows build compiles the same headers")
def test_layout_matches_the_compiler(c_programs):
    """layout.py's numbers are the compiler's (tests/c/format_consts)."""
    out = subprocess.run([str(c_programs / "format_consts")], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    members = {(w[1], w[2]): (int(w[3]), int(w[4])) for w in map(str.split, out)
               if w and w[0] == "member"}
    consts = {w[1]: int(w[2]) for w in map(str.split, out) if w and w[0] == "const"}
    for field, (off, width) in FIELDS.items():
        assert members[("slot_header", field)] == (off, width), field
    for field, (off, width) in CELL_FIELDS.items():
        assert members[("slot_cell", field)] == (off, width), field
    assert (consts["SLOT_HEADER_SIZE"], consts["SLOT_CELL_HEADER"], consts["SLOT_CELLS"],
            consts["SLOT_GEN_SHIFT"], consts["SLOT_BUSY"]) == \
        (HEADER, CELL_HEAD, CELLS, layout.GEN_SHIFT, layout.BUSY)
    assert consts["SLOT_MAGIC"] == pyshm._pyshm._SLOT_MAGIC


# ---- hand-written corruption ----------------------------------------------------------

def _good_header(pyshm_names, size=64):
    """The bytes of a fresh slot's header (a real one, made and removed)."""
    name = pyshm_names()
    with pyshm.Slot(name, create=True, size=size), pyshm.SharedMemory(name) as raw:
        header = bytearray(raw.read(HEADER))
    pyshm_names.remove(name)
    return header


@pytest.mark.parametrize("change,match", [
    ({VERSION: 2}, "another format version"),
    ({HEADER_SIZE: 256}, "bad size"),
    ({NCELLS: 1}, "bad number of cells"),
    ({NCELLS: 65}, "bad number of cells"),
    ({VALUE_SIZE: 0}, "value size"),
    ({VALUE_SIZE: 1 << 30}, "value size"),
    ({CELL_SIZE: 64}, "value size"),
    ({layout.SYNC_KIND: 3}, "another wait/lock scheme"),
])
def test_a_header_that_does_not_fit_is_refused(pyshm_name, pyshm_names, change, match):
    header = _good_header(pyshm_names)
    for off, v in change.items():
        width = 8 if off in (VALUE_SIZE, CELL_SIZE) else 4
        header[off:off + width] = v.to_bytes(width, "little")
    size = HEADER + CELLS * cell_size(64)
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as shm:
        shm.write(header)
        with pytest.raises(pyshm.ProtocolError, match=match):
            pyshm.Slot(pyshm_name)
        assert shm.read(HEADER) == header


def _raw(name):
    return pyshm.SharedMemory(name)


@pytest.mark.parametrize("where", ["cell", "generation", "state", "busy", "length"])
def test_a_latest_value_that_lies(pyshm_slot, where):
    s = pyshm_slot(64)
    s.publish(b"one")
    s.publish(b"two")
    with _raw(s.name) as raw:
        word, = struct.unpack("<Q", raw.read(8, LATEST))
        cell = word & 0xFF
        at = cell_at(64, cell)
        if where == "cell":
            raw.write(struct.pack("<Q", (2 << 8) | 7), LATEST)         # no cell 7
        elif where == "generation":
            raw.write(struct.pack("<Q", cell), LATEST)                 # generation 0
        elif where == "state":
            raw.write(struct.pack("<Q", 5), at + STATE)                # not generation 2
        elif where == "busy":
            raw.write(struct.pack("<Q", layout.BUSY | 2), at + STATE)  # "being written"
        else:
            raw.write(struct.pack("<Q", 65), at + LENGTH)              # larger than the slot
        for call in (s.read, s.snapshot, lambda: s.readinto(bytearray(64))):
            with pytest.raises(pyshm.ProtocolError):
                call()
        if where in ("cell", "generation"):
            with pytest.raises(pyshm.ProtocolError):
                s.publish(b"x")
        assert raw.read(4, WRITE_LOCK) == bytes(4)     # never left locked
        repr(s)


@pytest.mark.parametrize("lock", [0xFFFFFFFF, layout.WAITERS, 0x7FFFFFFF | layout.WAITERS])
def test_garbage_in_the_lock_word(pyshm_slot, lock):
    """An owner no build can have: ProtocolError, never a wait for ever."""
    s = pyshm_slot(16)
    s.publish(b"kept")
    with _raw(s.name) as raw:
        raw.write(struct.pack("<I", lock), WRITE_LOCK)
        with pytest.raises(pyshm.ProtocolError, match="lock word is corrupt"):
            s.publish(b"x")
        with pytest.raises(pyshm.ProtocolError):
            with s.reserve():
                pass
        assert s.read() == b"kept"              # readers never look at it
        raw.write(bytes(4), WRITE_LOCK)
    assert s.publish(b"free") == 2


def test_garbage_marks_and_wait_words_are_only_hints(pyshm_slot):
    """Readers' marks, the wait word and its count hold anything: reads,
    publishes and waits still work (a mark only steers writers)."""
    rng = random.Random(3)
    s = pyshm_slot(100)
    with _raw(s.name) as raw:
        for round_ in range(50):
            for cell in range(CELLS):
                raw.write(rng.randbytes(8), cell_at(100, cell) + MARKS)
            raw.write(rng.randbytes(8), GEN_SEQ)
            gen = s.publish(b"round %d" % round_)
            assert s.snapshot() == (gen, b"round %d" % round_)
            assert s.wait(after=gen - 1, timeout=0) == gen
            with pytest.raises(TimeoutError):
                s.wait(after=gen, timeout=0.01)


def test_random_garbage_never_crashes(pyshm_names):
    """Random bytes over header and cells; every call ends with a result,
    ProtocolError, TimeoutError or ValueError -- never a crash or a hang
    (the lock word is kept free: a live owner would be waited for)."""
    rng = random.Random(1234)
    outcomes = set()
    for round_ in range(60):
        n = pyshm_names()
        try:
            with pyshm.Slot(n, create=True, size=rng.choice([8, 64, 300])) as s, \
                    _raw(n) as raw:
                for i in range(rng.randrange(0, 4)):
                    s.publish(rng.randbytes(rng.randrange(0, s.size + 1)))
                for _ in range(rng.randrange(1, 8)):
                    off = rng.randrange(0, raw.size)
                    raw.write(rng.randbytes(min(rng.randrange(1, 64), raw.size - off)), off)
                raw.write(bytes(4), WRITE_LOCK)
                for op in range(6):
                    try:
                        if op % 3 == 0:
                            s.publish(rng.randbytes(rng.randrange(0, s.size + 1)))
                        elif op % 3 == 1:
                            s.snapshot()
                        else:
                            s.wait(after=0, timeout=0.01)
                        outcomes.add("ok")
                    except (pyshm.ProtocolError, TimeoutError, ValueError) as e:
                        outcomes.add(type(e).__name__)
                repr(s)
                try:
                    pyshm.Slot(n).close()
                except pyshm.ProtocolError:
                    outcomes.add("refused")
        finally:
            pyshm_names.remove(n)
    assert "ProtocolError" in outcomes


# ---- the fuzzer: a victim child runs calls on a corrupted slot ------------------------

VICTIM = r"""
import json, struct, sys, traceback, pyshm
sys.path.insert(0, sys.argv[1])
from layout import (BUSY, CELL_HEAD, GEN_SEQ, LATEST, LENGTH, MARKS, PUBLISH_CPU, STATE,
                    WRITE_LOCK, U64, cell_at, latest)

def may_move(cells, value_size):
    # The header's moving words, and every cell's head (states are checked
    # apart: they must end as they were but for the cell published).
    spans = [(LATEST, LATEST + 8), (GEN_SEQ, PUBLISH_CPU + 4), (WRITE_LOCK, WRITE_LOCK + 4)]
    for i in range(cells):
        at = cell_at(value_size, i)
        spans.append((at, at + CELL_HEAD))
    return spans

def changed_outside(before, after, allowed):
    mask = bytearray(len(before))
    for a, b in allowed:
        for i in range(a, min(b, len(mask))):
            mask[i] = 1
    for i, (x, y) in enumerate(zip(before, after)):
        if x != y and not mask[i]:
            return i
    return None

def states(raw, cells, value_size):
    return [U64.unpack_from(raw, cell_at(value_size, i) + STATE)[0] for i in range(cells)]

def value_of(raw, value_size, cell):
    at = cell_at(value_size, cell)
    n = U64.unpack_from(raw, at + LENGTH)[0]
    return raw[at + CELL_HEAD:at + CELL_HEAD + n]

def one_op(s, raw, op, cells, value_size):
    kind = op[0]
    before = raw.read()
    g0, c0 = latest(before)
    try:
        if kind in ("publish", "reserve"):
            data = bytes((i * 37 + 11) & 255 for i in range(op[1]))
            if kind == "publish":
                gen = s.publish(data)
            else:
                with s.reserve(len(data)) as buf:
                    buf[:] = data
                gen = None
            result = "ok"
        elif kind == "wait":
            gen = s.wait(after=op[1], timeout=op[2])
            result = "ok"
        elif kind == "readinto":
            buf = bytearray(b"\xee" * op[1])
            n = s.readinto(buf)
            if buf[n:] != b"\xee" * (len(buf) - n):
                return "BAD: readinto wrote past the value in the caller's buffer"
            data, gen = bytes(buf[:n]), None
            result = "ok"
        else:
            gen, data = s.snapshot() if kind == "snapshot" else (None, s.read())
            result = "ok"
    except (pyshm.ProtocolError, TimeoutError, ValueError) as e:
        result = type(e).__name__
    after = raw.read()
    g1, c1 = latest(after)
    published = kind in ("publish", "reserve") and result == "ok"
    allowed = may_move(cells, value_size)
    if published and c1 < cells:
        at = cell_at(value_size, c1) + CELL_HEAD
        allowed.append((at, at + len(data)))        # the value, checked below
    where = changed_outside(before, after, allowed)
    if where is not None:
        return f"BAD: byte {where} of the segment changed ({kind} -> {result})"
    if not published:
        if after[LATEST:LATEST + 8] != before[LATEST:LATEST + 8]:
            return f"BAD: {kind} ({result}) moved the latest word"
        if states(after, cells, value_size) != states(before, cells, value_size):
            return f"BAD: {kind} ({result}) left a cell's state changed"
    if struct.unpack_from("<I", after, WRITE_LOCK)[0] != 0 and \
            struct.unpack_from("<I", before, WRITE_LOCK)[0] == 0:
        return f"BAD: {kind} ({result}) left the write lock taken"
    if result != "ok":
        return result
    if published:
        if g1 != g0 + 1 or (gen is not None and gen != g1):
            return f"BAD: published as generation {g1} (returned {gen}) after {g0}"
        if c1 >= cells or (g0 and c1 == c0):
            return f"BAD: published into cell {c1} (the latest was {c0})"
        st_after, st_before = states(after, cells, value_size), states(before, cells, value_size)
        if st_after[c1] != g1 or any(st_after[i] != st_before[i]
                                     for i in range(cells) if i != c1):
            return f"BAD: cell states after a publish: {st_before} -> {st_after}"
        if value_of(after, value_size, c1) != data:
            return "BAD: the published value is not in its cell"
        return "ok"
    if kind == "wait":
        return "ok" if gen > op[1] and gen == g0 else f"BAD: wait returned {gen} ({g0})"
    # A read: the latest cell's value, with its generation, or nothing yet.
    if g0 == 0:
        return "ok" if data == b"" and gen in (None, 0) else "BAD: a value before any"
    state = U64.unpack_from(before, cell_at(value_size, c0) + STATE)[0]
    if c0 >= cells or state != g0:
        return f"BAD: read a cell whose state ({state:#x}) is not the latest ({g0})"
    if data != value_of(before, value_size, c0) or gen not in (None, g0):
        return "BAD: got bytes that are not the latest cell's value"
    return "ok"

print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    out = []
    try:
        with pyshm.SharedMemory(req["name"]) as raw:
            try:
                s = pyshm.Slot(req["name"])
            except pyshm.ProtocolError:
                out.append("refused")
            else:
                with s:
                    header = raw.read(32)
                    cells = struct.unpack_from("<I", header, 12)[0]
                    value_size = struct.unpack_from("<Q", header, 16)[0]
                    for op in req["ops"]:
                        out.append(one_op(s, raw, op, cells, value_size))
                    repr(s)
    except BaseException:
        out.append("UNEXPECTED: " + traceback.format_exc())
    print(json.dumps(out), flush=True)
"""


class Victim:
    """The long-lived child that opens corrupted slots; restarted after a death."""

    def __init__(self, watchdog: float) -> None:
        self.watchdog = watchdog
        self.children = ChildFactory()      # the plugin's, for a module-wide child
        self.child: Child | None = None

    def run(self, request: dict, example: str) -> list[str]:
        if self.child is None or self.child.poll() is not None:
            self.close()
            self.child = self.children(VICTIM, HERE)
            self.child.expect("ready")
        self.child.send_line(json.dumps(request))
        try:
            line = self.child.line(timeout=self.watchdog)
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


def _boundaries(width: int) -> list[int]:
    top = 2 ** (8 * width)
    return sorted(v for v in {0, 1, 2, 3, 4, 7, 8, 63, 64, 255, 256, 511, 512, 4096,
                              top // 2 - 1, top // 2, top - 1} if v < top)


# Lock words: free, or an owner no process can have (garbage for the futex
# and Windows builds, above every pid_max for the fallback, whose pids up
# to 0x7FFFFFFF are owners: 0x7FFFFFFF is one that is dead).
LOCK_VALUES = [0, layout.WAITERS, 0x7FFFFFFF, 0xFFFFFFFF]
if pyshm.CHANNEL_WAIT != "fallback":       # one above the largest liveness slot
    LOCK_VALUES += [0x100000, layout.WAITERS | 0x100000]

field = st.sampled_from(sorted(f for f in FIELDS if f != "write_lock")).flatmap(
    lambda f: st.tuples(st.just("field"), st.just(f),
                        st.one_of(st.sampled_from(_boundaries(FIELDS[f][1])),
                                  st.integers(0, 2 ** (8 * FIELDS[f][1]) - 1),
                                  st.sampled_from(["latest-cell", "latest+1", "latest-1",
                                                   "busy-latest"]))))
mutation = st.one_of(
    field,
    st.tuples(st.just("field"), st.just("write_lock"), st.sampled_from(LOCK_VALUES)),
    st.tuples(st.just("cell"), st.integers(0, 5), st.sampled_from(sorted(CELL_FIELDS)),
              st.one_of(st.sampled_from(_boundaries(8)), st.integers(0, 2 ** 64 - 1),
                        st.sampled_from(["latest", "busy-latest", "latest+1", "size",
                                         "size+1"]))),
    st.tuples(st.just("cell_bytes"), st.integers(0, 5), st.integers(0, 400),
              st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("header_bytes"), st.integers(0, HEADER - 1),
              st.binary(min_size=1, max_size=16)).filter(
        lambda m: not (WRITE_LOCK - 16 < m[1] < WRITE_LOCK + 4)),
)

timeout = st.sampled_from([0, 0, 0.05])
operation = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 300)),
    st.tuples(st.just("reserve"), st.integers(0, 300)),
    st.tuples(st.just("read")),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("readinto"), st.integers(0, 300)),
    st.tuples(st.just("wait"), st.integers(0, 8), timeout),
)


def _resolve(token, raw: pyshm.SharedMemory, size: int) -> int:
    if isinstance(token, int):
        return token
    word, = struct.unpack("<Q", raw.read(8, LATEST))
    gen, cell = word >> 8, word & 0xFF
    return {"latest-cell": cell, "latest+1": word + (1 << 8), "latest-1": word - (1 << 8),
            "busy-latest": layout.BUSY | gen, "latest": gen, "size": size,
            "size+1": size + 1}[token]


def _corrupt(raw: pyshm.SharedMemory, size: int, mutations) -> None:
    for m in mutations:
        if m[0] == "field":
            off, width = FIELDS[m[1]]
            value = _resolve(m[2], raw, size) % 2 ** (8 * width)
            raw.write(value.to_bytes(width, "little"), off)
        elif m[0] == "cell":
            at = cell_at(size, m[1] % CELLS)
            off, width = CELL_FIELDS[m[2]]
            raw.write((_resolve(m[3], raw, size) % 2 ** 64).to_bytes(8, "little"), at + off)
        elif m[0] == "cell_bytes":
            at = cell_at(size, m[1] % CELLS) + CELL_HEAD + m[2] % size
            raw.write(m[3][:raw.size - at], at)
        else:
            raw.write(m[2][:HEADER - m[1]], m[1])


EXAMPLES = int(os.environ.get("PYSHM_FUZZ_EXAMPLES", 600))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(size=st.sampled_from([1, 8, 64, 300]),
       published=st.lists(st.integers(0, 300), max_size=5),
       mutations=st.lists(mutation, min_size=1, max_size=4),
       ops=st.lists(operation, min_size=1, max_size=6))
def test_hostile_memory_gives_clean_results(victim, pyshm_names, size, published, mutations,
                                            ops):
    name = pyshm_names()
    example = json.dumps(dict(size=size, published=published, mutations=mutations, ops=ops),
                         default=repr)
    try:
        with pyshm.Slot(name, create=True, size=size) as s:
            for n in published:
                s.publish(bytes(min(n, size)))
            with pyshm.SharedMemory(name) as raw:
                _corrupt(raw, size, mutations)
            results = victim.run({"name": name, "ops": ops}, example)
    finally:
        pyshm_names.remove(name)
    allowed = {"ok", "ProtocolError", "TimeoutError", "ValueError", "refused"}
    for r in results:
        assert r in allowed, f"{r}\non example {example}"


def test_victim_checks_catch_a_wrong_result(victim, pyshm_name):
    """The victim's checks are not vacuous: an intact slot gives 'ok' for
    every call (a value too large for the buffer or the slot, and a wait
    with nothing new, being the documented errors), and results reach the
    test."""
    with pyshm.Slot(pyshm_name, create=True, size=64) as s:
        s.publish(b"abc")
        ops = [["read"], ["publish", 10], ["snapshot"], ["readinto", 5], ["readinto", 64],
               ["reserve", 20], ["wait", 0, 0], ["wait", 3, 0], ["publish", 65]]
        results = victim.run({"name": pyshm_name, "ops": ops}, "intact")
    assert results == ["ok", "ok", "ok", "ValueError", "ok", "ok", "ok", "TimeoutError",
                       "ValueError"]
