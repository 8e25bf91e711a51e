"""Slot under bad input: the error table of DESIGN.md.

TypeError for a wrong type, ValueError for a bad value (a value larger than
the slot, a buffer too small, size=0 on create, a closed slot, exist_ok with
another size, negative timeouts), ProtocolError naming what the segment is
when it is not a slot, the matching OSError with ``filename`` when the OS
refuses.  After each one no name of ours was added to /dev/shm and the value
published before is still the value, with its generation.
"""

from __future__ import annotations

import errno
import math
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm

VALUE = b"published before the bad call"
WINDOWS = sys.platform == "win32"


@pytest.fixture
def ours(pyshm_names):
    """``ours()``: this session's names now in /dev/shm (none where there is
    no /dev/shm to list)."""
    return pyshm_names.in_dev_shm


@pytest.fixture
def loaded(pyshm_slot):
    """A slot of 64 bytes whose value (generation 1) is VALUE."""
    s = pyshm_slot(64)
    s.publish(VALUE)
    return s


def unchanged(slot):
    assert slot.snapshot() == (1, VALUE)
    with pyshm.Slot(slot.name) as other:
        assert other.snapshot() == (1, VALUE)


# ---- the constructor ---------------------------------------------------------------

NAME = object()     # stands for a fresh unique name in the table below

CONSTRUCTOR_CASES = [
    ("no-args", (), {}, ValueError),
    ("name-none-open", (None,), {}, ValueError),
    ("name-bytes", (b"abc",), dict(create=True, size=8), TypeError),
    ("name-slash", ("a/b",), dict(create=True, size=8), ValueError),
    ("name-nul", ("a\0b",), dict(create=True, size=8), ValueError),
    ("name-too-long", ("n" * 251,), dict(create=True, size=8), ValueError),
    ("size-zero", (NAME,), dict(create=True), ValueError),
    ("size-zero-given", (NAME,), dict(create=True, size=0), ValueError),
    ("size-zero-exist_ok", (NAME,), dict(create=True, exist_ok=True), ValueError),
    ("size-negative", (NAME,), dict(create=True, size=-1), ValueError),
    ("size-above-1TiB", (NAME,), dict(create=True, size=(1 << 40) + 1), ValueError),
    ("size-2**64", (NAME,), dict(create=True, size=2**64), ValueError),
    ("size-float", (NAME,), dict(create=True, size=8.0), TypeError),
    ("size-str", (NAME,), dict(create=True, size="8"), TypeError),
    ("size-none", (NAME,), dict(create=True, size=None), TypeError),
    ("mode-too-big", (NAME,), dict(create=True, size=8, mode=0o10000), ValueError),
    ("mode-str", (NAME,), dict(create=True, size=8, mode="600"), TypeError),
    ("unknown-keyword", (NAME,), dict(create=True, capacity=64), TypeError),
    ("readonly-is-not-for-slots", (NAME,), dict(readonly=True), TypeError),
    ("exist_ok-positional", (NAME, True, 8, True), {}, TypeError),
    ("wait-with-create", (NAME,), dict(create=True, size=8, wait=1), ValueError),
    ("wait-negative", (NAME,), dict(wait=-1), ValueError),
    ("wait-nan", (NAME,), dict(wait=math.nan), ValueError),
    ("wait-str", (NAME,), dict(wait="1"), TypeError),
    ("open-missing", (NAME,), {}, FileNotFoundError),
]


@pytest.mark.parametrize("args,kwargs,exc", [pytest.param(*c[1:], id=c[0])
                                             for c in CONSTRUCTOR_CASES])
def test_constructor_rejects(ours, pyshm_name, args, kwargs, exc):
    before = ours()
    args = tuple(pyshm_name if a is NAME else a for a in args)
    with pytest.raises(exc) as info:
        pyshm.Slot(*args, **kwargs)
    if issubclass(exc, OSError):
        assert info.value.filename == pyshm_name
    assert ours() == before, "a failed constructor left a name behind"
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_size_zero_on_create_says_so(pyshm_name):
    with pytest.raises(ValueError, match="size must be positive"):
        pyshm.Slot(pyshm_name, create=True, size=0)


def test_existing_name_refused_and_left_intact(ours, loaded):
    before = ours()
    with pytest.raises(FileExistsError) as info:
        pyshm.Slot(loaded.name, create=True, size=64)
    assert info.value.filename == loaded.name and "exist_ok=True" in str(info.value)
    assert ours() == before
    unchanged(loaded)


@pytest.mark.parametrize("asked", [32, 65, 1 << 20])
def test_exist_ok_with_another_size_is_value_error_and_changes_nothing(ours, loaded, asked):
    """PYSHM_EXACTLY: the size is part of a slot's format, so a size given
    must be the existing one's (docs/channels.md, the exist_ok rule)."""
    before = ours()
    with pytest.raises(ValueError) as info:
        pyshm.Slot(loaded.name, create=True, exist_ok=True, size=asked)
    text = str(info.value)
    assert f"slot {loaded.name!r} exists with size=64, not the size={asked}" in text
    assert "nothing was changed" in text
    assert ours() == before
    unchanged(loaded)


# ---- what the name holds --------------------------------------------------------------

def test_a_channel_opened_as_a_slot_and_the_reverse_name_the_kind(pyshm_names):
    with pyshm.Channel(pyshm_names(), create=True, capacity=4096) as c, \
            pyshm.Slot(pyshm_names(), create=True, size=16) as s:
        c.send(b"queued")
        s.publish(VALUE[:16])
        for opener in (lambda: pyshm.Slot(c.name),
                       lambda: pyshm.Slot(c.name, create=True, exist_ok=True, size=16)):
            with pytest.raises(pyshm.ProtocolError,
                               match="the segment is a channel, not a slot"):
                opener()
        for opener in (lambda: pyshm.Channel(s.name),
                       lambda: pyshm.Channel(s.name, create=True, exist_ok=True)):
            with pytest.raises(pyshm.ProtocolError,
                               match="the segment is a slot, not a channel"):
                opener()
        assert c.recv(timeout=0) == b"queued" and s.snapshot() == (1, VALUE[:16])


@pytest.mark.parametrize("content", ["zeros", "random", "small"])
def test_a_raw_segment_is_not_a_slot(pyshm_name, content):
    """exist_ok=True on a segment that is not a slot must not format it."""
    size = 64 if content == "small" else 8192
    data = bytes(size) if content != "random" else bytes(range(256)) * (size // 256)
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as raw:
        raw.write(data)
        for opener in (lambda: pyshm.Slot(pyshm_name),
                       lambda: pyshm.Slot(pyshm_name, create=True, exist_ok=True, size=8)):
            with pytest.raises(pyshm.ProtocolError, match=f"{pyshm_name!r}: not a pyshm slot"):
                opener()
        assert raw.read() == data


SLOT_OPENERS = [
    "pyshm.Slot(name)",
    "pyshm.Slot(name, create=True, size=64, exist_ok=True)",
]


def test_a_name_that_is_not_a_segment_is_refused_at_once(not_a_segment, answers_at_once):
    """A FIFO, a socket, a directory or a link under the name: the OSError
    naming it and what it is, at once (in a child with a deadline)."""
    entry = not_a_segment
    for result in answers_at_once(entry.name, SLOT_OPENERS):
        kind, code, text, filename = result[0], *result[1:]
        assert (kind, code, filename) == (
            "IsADirectoryError" if entry.errno == errno.EISDIR else "OSError",
            entry.errno, entry.name), result
        assert text.startswith(entry.what) and "not a shared-memory segment" in text, result
    assert entry.intact()


# ---- the calls ------------------------------------------------------------------------

def test_a_value_larger_than_the_slot_publishes_nothing(loaded):
    for data in (b"x" * 65, bytearray(1000), memoryview(b"y" * 100)):
        with pytest.raises(ValueError, match="larger than the slot's size .64 bytes.; "
                                             "nothing was published"):
            loaded.publish(data)
    unchanged(loaded)
    assert loaded.publish(b"x" * 64) == 2       # exactly the size fits


@pytest.mark.parametrize("data,hint", [("text", "encode it first"), (42, "not 'int'"),
                                       (None, "not 'NoneType'"), ([1, 2], "not 'list'")])
def test_a_value_that_is_not_bytes_like_is_type_error(loaded, data, hint):
    with pytest.raises(TypeError, match=hint):
        loaded.publish(data)
    unchanged(loaded)


def test_a_non_contiguous_value_is_type_error(loaded):
    with pytest.raises(TypeError, match="contiguous"):
        loaded.publish(memoryview(b"abcdefgh")[::2])
    unchanged(loaded)


@pytest.mark.parametrize("size", [0, 1, len(VALUE) - 1])
def test_readinto_a_buffer_too_small_copies_nothing(loaded, size):
    buf = bytearray(b"\xee" * size)
    with pytest.raises(ValueError, match=f"has {len(VALUE)} bytes and does not fit in a "
                                         f"buffer of {size} bytes; nothing was copied"):
        loaded.readinto(buf)
    assert buf == b"\xee" * size
    unchanged(loaded)
    assert loaded.readinto(bytearray(len(VALUE))) == len(VALUE)


@pytest.mark.parametrize("target", [b"read-only bytes" * 4, "str", 7])
def test_readinto_needs_a_writable_buffer(loaded, target):
    with pytest.raises(TypeError):
        loaded.readinto(target)
    unchanged(loaded)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(timeout=-1), ValueError, "timeout must not be negative"),
    (dict(timeout=-1e-9), ValueError, "timeout must not be negative"),
    (dict(timeout=math.nan), ValueError, "NaN"),
    (dict(timeout="1"), TypeError, "timeout must be a number"),
    (dict(after=-1), ValueError, "after must not be negative"),
    (dict(after=1.5), TypeError, "after must be an int"),
    (dict(after="1"), TypeError, "after must be an int"),
    (dict(after=1, timeout=0, extra=1), TypeError, "unexpected keyword"),
])
def test_wait_rejects(loaded, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        loaded.wait(**kwargs)
    unchanged(loaded)


@pytest.mark.parametrize("after", [2**56, 2**64, 2**200])
def test_wait_after_a_huge_generation_times_out(loaded, after):
    with pytest.raises(TimeoutError):
        loaded.wait(after=after, timeout=0)


@pytest.mark.parametrize("n,exc", [(-1, ValueError), (65, ValueError), (2**64, ValueError),
                                   (1.0, TypeError), ("8", TypeError)])
def test_reserve_rejects(loaded, n, exc):
    with pytest.raises(exc):
        loaded.reserve(n)
    unchanged(loaded)


@pytest.mark.parametrize("call", ["publish", "read", "readinto", "snapshot", "reserve", "wait",
                                  "generation", "enter", "pickle"])
def test_use_after_close_is_valueerror(pyshm_name, call):
    import pickle
    # A second handle: on Windows a name lives only while a handle does.
    keeper = pyshm.Slot(pyshm_name, create=True, size=8)
    s = pyshm.Slot(pyshm_name)
    s.publish(b"v")
    s.close()
    action = {"publish": lambda: s.publish(b"x"), "read": s.read,
              "readinto": lambda: s.readinto(bytearray(8)), "snapshot": s.snapshot,
              "reserve": s.reserve, "wait": lambda: s.wait(timeout=0),
              "generation": lambda: s.generation, "enter": s.__enter__,
              "pickle": lambda: pickle.dumps(s)}[call]
    with pytest.raises(ValueError, match="operation on a closed Slot"):
        action()
    with keeper, pyshm.Slot(pyshm_name) as again:
        assert again.snapshot() == (1, b"v")


def test_a_reserve_taken_after_close_is_refused(pyshm_name):
    s = pyshm.Slot(pyshm_name, create=True, size=8)
    loan = s.reserve()
    s.close()
    with pytest.raises(ValueError, match="closed Slot"):
        loan.__enter__()


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=3),
                       st.booleans(), st.binary(max_size=3)))
def test_any_timeout_gives_a_clean_exception_or_works(loaded, value):
    """Whatever the timeout (None aside: for ever), wait() for a generation
    that never comes ends with TimeoutError, or rejects the value."""
    if isinstance(value, (int, float)) and not math.isnan(value) and value > 0.001:
        value = 0.001       # a valid wait, kept short
    try:
        loaded.wait(after=2**60, timeout=value)
    except (TimeoutError, ValueError, TypeError):
        pass
    else:
        pytest.fail("wait() returned a generation that was never published")
    unchanged(loaded)
