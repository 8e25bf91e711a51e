"""Object messages: Channel.send_obj() / recv_obj().

Round trips of many kinds of objects -- containers, bytes, memoryviews,
NumPy arrays of several dtypes, orders (C, Fortran), non-contiguous and
zero-size -- in one process and through a child that echoes them back; the
zero-copy rebuild (arrays point into one fresh MessageBuffer); and the bad
input: a message too big (nothing sent), a record not written by send_obj
(left queued), a corrupt frame (ProtocolError, left queued), what cannot be
pickled, a closed channel.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
from fractions import Fraction

import pytest

import pyshm

from .waits import DEADLINE

try:
    import numpy as np
except ImportError:     # under Wine it never is installed (conftest's numpy fixture)
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="NumPy is not installed (under Wine it "
                                 "never is: NumPy 2.x aborts there)")

HEADER = 512                # core/ring.h: RING_HEADER_SIZE
WRITE_CURSOR, READ_CURSOR = 64, 128


@dataclasses.dataclass
class Point:
    x: float
    y: float
    tags: list


def arrays():
    """(id, array) pairs: dtypes, orders, strides, sizes (none without NumPy)."""
    if np is None:
        return []
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    out = [
        ("f8-C", base),
        ("f8-F", np.asfortranarray(base)),
        ("f8-strided", base[:, ::2]),
        ("f8-transposed", base.T),
        ("f8-reversed", base[::-1]),
        ("f4", np.linspace(0, 1, 7, dtype=np.float32)),
        ("i1", np.arange(-5, 5, dtype=np.int8)),
        ("u2-F", np.asfortranarray(np.arange(12, dtype=np.uint16).reshape(3, 4))),
        ("i8-3d", np.arange(60, dtype=np.int64).reshape(3, 4, 5)),
        ("c16", np.array([1 + 2j, -3.5j], dtype=np.complex128)),
        ("bool", np.array([True, False, True])),
        ("datetime", np.array(["2026-01-01", "2026-12-31"], dtype="datetime64[D]")),
        ("struct", np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")])),
        ("unicode", np.array(["abc", "déf"])),
        ("object", np.array([{"a": 1}, None], dtype=object)),
        ("empty", np.zeros((0, 3))),
        ("empty-F", np.zeros((5, 0), order="F")),
        ("scalar-0d", np.array(3.25)),
        ("readonly", np.arange(4.0)),
        ("big-8MiB", np.arange(1 << 20, dtype=np.float64)),
    ]
    out[-2][1].flags.writeable = False
    return out


ARRAYS = arrays()


def same_array(a, b):
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    if a.size:
        assert (a == b).all() if a.dtype != object else list(a) == list(b)
    # Memory order survives where it was contiguous (a non-contiguous array
    # arrives compact).
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        assert b.flags.f_contiguous
    if a.flags.c_contiguous:
        assert b.flags.c_contiguous
    assert b.flags.writeable == a.flags.writeable


def objects():
    """(id, object) pairs other than arrays."""
    return [
        ("none", None),
        ("ints", [0, -1, 2**100, True]),
        ("floats", (1.5, float("inf"), -0.0)),
        ("str", "pyshm ✓ ünïcode"),
        ("bytes-empty", b""),
        ("bytes", bytes(range(256))),
        ("bytes-1MiB", b"\x5a" * (1 << 20)),
        ("bytearray", bytearray(b"mutable")),
        ("nested", {"id": 7, "name": "x" * 32, "list": [1, [2, [3, {4: (5,)}]]],
                    "set": {1, 2}, "frozen": frozenset("ab")}),
        ("dataclass", Point(1.0, 2.0, ["a", "b"])),
        ("fraction", Fraction(1, 3)),
    ] + ([] if np is None else [
        ("arrays-in-dict", {"a": np.arange(3), "b": np.ones((2, 2), order="F")}),
    ])


OBJECTS = objects()


def same(a, b):
    if np is None:
        assert b == a and type(b) is type(a)
    elif isinstance(a, np.ndarray):
        same_array(a, b)
    elif isinstance(a, dict) and any(isinstance(v, np.ndarray) for v in a.values()):
        assert a.keys() == b.keys()
        for k in a:
            same_array(a[k], b[k])
    else:
        assert b == a and type(b) is type(a)


# ---- in one process ------------------------------------------------------------------

@pytest.mark.parametrize("name,obj", OBJECTS + ARRAYS, ids=[i for i, _ in OBJECTS + ARRAYS])
def test_round_trip(pyshm_channel, name, obj):
    ch = pyshm_channel(32 << 20)
    ch.send_obj(obj, timeout=0)
    assert ch.messages == 1
    same(obj, ch.recv_obj(timeout=0))
    assert ch.queued == 0


def test_memoryviews_round_trip(pyshm_channel):
    ch = pyshm_channel(1 << 20)
    raw = bytearray(range(48))
    views = [
        memoryview(b"read-only bytes"),
        memoryview(raw),
        memoryview(raw).cast("i", (3, 4)),
        memoryview(raw).cast("d")[::2],          # not contiguous: arrives compact
        memoryview(raw)[:0],
        memoryview(bytearray(8)).cast("q", ()),  # zero dimensions
    ]
    ch.send_obj(views)
    got = ch.recv_obj()
    assert len(got) == len(views)
    for a, b in zip(views, got):
        assert isinstance(b, memoryview)
        assert b.format == a.format and b.shape == a.shape and b.readonly == a.readonly
        assert b.tolist() == a.tolist()
    # The same view twice is one object on arrival (pickle's memo).
    v = memoryview(raw)
    ch.send_obj([v, v])
    first, second = ch.recv_obj()
    assert first is second


@needs_numpy
def test_memoryview_of_a_foreign_format_is_refused(pyshm_channel):
    ch = pyshm_channel(4096)
    view = memoryview(np.zeros(3, dtype=">i4"))     # big-endian: not castable
    with pytest.raises(TypeError, match="format"):
        ch.send_obj(view)
    assert ch.queued == 0


def test_pickle_buffer_is_sent_out_of_band(pyshm_channel):
    ch = pyshm_channel(1 << 20)
    ch.send_obj(pickle.PickleBuffer(bytearray(b"out of band")))
    got = ch.recv_obj()
    assert bytes(got) == b"out of band" and not memoryview(got).readonly


@needs_numpy
def test_arrays_point_into_one_fresh_buffer(pyshm_channel):
    """One copy out of the ring: the arrays rebuilt by pickle are views of
    one MessageBuffer, each aligned to 64 bytes; big ones get their own
    mapping (huge pages where the OS has them)."""
    ch = pyshm_channel(32 << 20)
    a, b = np.arange(10, dtype=np.int32), np.arange(3 << 20, dtype=np.uint8)
    ch.send_obj((a, "between", b))
    x, _, y = ch.recv_obj()

    def owner(arr):
        while isinstance(arr, np.ndarray) and arr.base is not None:
            arr = arr.base
        return arr.obj if isinstance(arr, memoryview) else arr

    assert isinstance(owner(x), pyshm.MessageBuffer) and owner(x) is owner(y)
    assert x.ctypes.data % 64 == 0 and y.ctypes.data % 64 == 0
    assert "pages" in repr(owner(x))
    x[0] = 99                           # writable, private to this process
    assert x[0] == 99 and a[0] == 0
    with pytest.raises(TypeError):
        pyshm.MessageBuffer()


def test_small_objects_need_no_buffer(pyshm_channel):
    ch = pyshm_channel(4096)
    ch.send_obj({"id": 1, "name": "x" * 32})
    # The frame adds 16 bytes to the pickle stream.
    assert ch.queued == 8 + ((16 + len(pickle.dumps({"id": 1, "name": "x" * 32}, 5)) + 7) & ~7)
    assert ch.recv_obj() == {"id": 1, "name": "x" * 32}


# ---- bad input ----------------------------------------------------------------------------

@needs_numpy
def test_too_big_is_valueerror_and_nothing_is_sent(pyshm_channel):
    ch = pyshm_channel(1 << 16)
    ch.send_obj("first")
    before = ch.queued
    with pytest.raises(ValueError, match="max_message_size"):
        ch.send_obj(np.zeros(1 << 14))          # 128 KiB of array
    with pytest.raises(ValueError, match="max_message_size"):
        ch.send_obj(b"x" * (1 << 16))           # in-band
    assert ch.queued == before and ch.messages == 1
    assert ch.recv_obj() == "first"


def test_raw_record_is_refused_and_stays_queued(pyshm_channel):
    ch = pyshm_channel(4096)
    ch.send(b"raw bytes")
    with ch.reserve(4) as buf:
        buf[:] = b"loan"
    for expected in (b"raw bytes", b"loan"):
        with pytest.raises(ValueError, match="not sent by send_obj"):
            ch.recv_obj(timeout=0)
        assert ch.recv(timeout=0) == expected
    # The other way round is allowed: an object message is bytes to recv().
    ch.send_obj([1, 2])
    frame = ch.recv(timeout=0)
    assert struct.unpack_from("<I", frame)[0] == 0x354F5950 and pickle.loads(frame[16:]) == [1, 2]


def corrupt_first_frame(name, offset, data):
    with pyshm.SharedMemory(name) as raw:
        r, = struct.unpack_from("<Q", raw.read(8, READ_CURSOR))
        raw.write(data, HEADER + r + 8 + offset)     # the payload of the first record


@needs_numpy
@pytest.mark.parametrize("where,data", [
    ("magic", b"XXXX"),
    ("nbuf", struct.pack("<I", 0xFFFFFFFF)),
    ("stream_len", struct.pack("<Q", 1 << 40)),
    ("buffer_offset", struct.pack("<Q", 1 << 30)),
    ("buffer_length", struct.pack("<Q", 2**64 - 1)),
    ("buffer_before_stream", struct.pack("<Q", 8)),
])
def test_corrupt_frame_is_protocolerror_and_stays_queued(pyshm_channel, where, data):
    ch = pyshm_channel(1 << 16)
    ch.send_obj(np.arange(100))
    offset = {"magic": 0, "nbuf": 4, "stream_len": 8, "buffer_offset": 16,
              "buffer_length": 24, "buffer_before_stream": 16}[where]
    corrupt_first_frame(ch.name, offset, data)
    queued = ch.queued
    with pytest.raises(pyshm.ProtocolError, match="stays queued"):
        ch.recv_obj(timeout=0)
    assert ch.queued == queued
    assert len(ch.recv(timeout=0)) > 800        # recv() takes it away as bytes
    ch.send_obj("usable")
    assert ch.recv_obj(timeout=0) == "usable"


def test_what_cannot_be_pickled_sends_nothing(pyshm_channel):
    ch = pyshm_channel(4096)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        ch.send_obj(lambda: 0)
    with pytest.raises(TypeError):
        ch.send_obj({"lock": __import__("threading").Lock()})
    assert ch.queued == 0


def _explode():
    raise RuntimeError("cannot rebuild")


class Explodes:
    def __reduce__(self):
        return _explode, ()


def test_unpickling_error_consumes_the_message(pyshm_channel):
    """The message is copied out and consumed before unpickling (which runs
    code and must not hold the lock): its error reaches the caller."""
    ch = pyshm_channel(4096)
    ch.send_obj(Explodes())
    with pytest.raises(RuntimeError, match="cannot rebuild"):
        ch.recv_obj()
    assert ch.queued == 0


def test_closed_and_bad_arguments(pyshm_name):
    ch = pyshm.Channel(pyshm_name, create=True, capacity=4096)
    with pytest.raises(TimeoutError):
        ch.recv_obj(timeout=0)
    with pytest.raises(ValueError):
        ch.send_obj(1, timeout=-1)
    with pytest.raises(TypeError):
        ch.send_obj()
    ch.close()
    for call in (lambda: ch.send_obj(1), lambda: ch.recv_obj(timeout=0)):
        with pytest.raises(ValueError, match="closed"):
            call()
    ch.unlink()


# ---- between processes -----------------------------------------------------------------------

ECHO = """
import sys, pyshm
req, rep = pyshm.Channel(sys.argv[1]), pyshm.Channel(sys.argv[2])
print("ready", flush=True)
while True:
    obj = req.recv_obj()
    if isinstance(obj, str) and obj == "stop":
        break
    rep.send_obj(obj)
print("done", flush=True)
"""


def test_round_trips_through_another_process(pyshm_names, pyshm_child):
    """Every object goes to a child and comes back: two send_obj/recv_obj
    hops between processes (classes by reference: the child imports this
    test module's Point only when it must, so the dataclass stays here)."""
    req_name, rep_name = pyshm_names(), pyshm_names()
    cargo = [(i, o) for i, o in OBJECTS + ARRAYS if i != "dataclass"]
    with pyshm.Channel(req_name, create=True, capacity=32 << 20) as req, \
            pyshm.Channel(rep_name, create=True, capacity=32 << 20) as rep, \
            pyshm_child(ECHO, req_name, rep_name) as child:
        child.expect("ready")
        for name, obj in cargo:
            req.send_obj(obj, timeout=DEADLINE)
            same(obj, rep.recv_obj(timeout=DEADLINE))
        req.send_obj("stop")
        child.expect("done")
        child.finish()
