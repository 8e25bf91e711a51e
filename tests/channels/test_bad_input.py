"""Channel under bad input (issue: reliability).

Every wrong argument gets the exception DESIGN.md's error table names:
TypeError for a wrong type, ValueError for a bad value (negative, zero,
out of range, NaN, a closed object, a name with '/' or NUL), the matching
OSError subclass with ``filename`` when the OS refuses.  After each one the
process is alive, no name of ours was added to /dev/shm, and a message that
was queued before is still queued, byte for byte.

Each section starts with hand-written first examples, then covers every
argument of every call, table-driven; at the end hypothesis tries values.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm

from .slots import SLOT_HOG, have_ofd_locks, live_slots

SENTINEL = b"queued before the bad call"
WINDOWS = sys.platform == "win32"
# Windows names are UTF-16, passed to the OS unchanged (docs/windows.md, platform
# differences): the limit counts characters, and any str that converts is
# a name; tests/windows/test_names.py checks that side.
utf8_names_only = pytest.mark.skipif(WINDOWS, reason="POSIX names are UTF-8 bytes; Windows "
                                     "takes any UTF-16 str up to 250 characters")


@pytest.fixture
def ours(pyshm_names):
    """``ours()``: this session's names now in /dev/shm (none where there is
    no /dev/shm to list)."""
    return pyshm_names.in_dev_shm


# ---- the constructor -------------------------------------------------------------

def test_constructor_errors(pyshm_name):
    with pytest.raises(ValueError):
        pyshm.Channel()
    with pytest.raises(FileNotFoundError):
        pyshm.Channel(pyshm_name)
    with pytest.raises(ValueError, match="capacity"):
        pyshm.Channel(pyshm_name, create=True, capacity=8)
    with pytest.raises(ValueError):
        pyshm.Channel(pyshm_name, create=True, capacity=-1)
    with pytest.raises(TypeError):
        pyshm.Channel(pyshm_name, create=True, capacity=1.5)
    with pytest.raises(TypeError):
        pyshm.Channel(b"bytes", create=True)
    with pytest.raises(ValueError):
        pyshm.Channel("a/b", create=True)
    with pytest.raises(FileNotFoundError):      # none of that made anything
        pyshm.Channel(pyshm_name)
    with pyshm.Channel(pyshm_name, create=True, capacity=128) as c:
        with pytest.raises(FileExistsError):
            pyshm.Channel(pyshm_name, create=True)
        with pytest.raises(ValueError, match="exists with capacity=128"):
            pyshm.Channel(pyshm_name, create=True, capacity=4096, exist_ok=True)
        with pyshm.Channel(pyshm_name, create=True, exist_ok=True) as d:
            assert d.capacity == 128                # the existing channel's
            d.send(b"via exist_ok")
        assert c.recv(timeout=0) == b"via exist_ok"


NAME = object()     # stands for a fresh unique name in the tables below

CONSTRUCTOR_CASES = [
    # (id, args, kwargs, exception)
    ("name-bytes", (b"abc",), dict(create=True), TypeError),
    ("name-int", (123,), dict(create=True), TypeError),
    ("name-list", (["a"],), dict(create=True), TypeError),
    ("name-empty", ("",), dict(create=True), ValueError),
    ("name-empty-open", ("",), {}, ValueError),
    ("name-slash", ("a/b",), dict(create=True), ValueError),
    ("name-leading-slash", ("/abc",), dict(create=True), ValueError),
    ("name-only-slash", ("/",), {}, ValueError),
    ("name-dot", (".",), dict(create=True), ValueError),
    ("name-dotdot-open", ("..",), {}, ValueError),
    ("name-nul", ("a\0b",), dict(create=True), ValueError),
    ("name-nul-open", ("a\0b",), {}, ValueError),
    ("name-too-long", ("n" * 251,), dict(create=True), ValueError),
    ("name-too-long-bytes", ("\u00e9" * 126,), dict(create=True), ValueError),  # 252 bytes
    ("name-too-long-open", ("n" * 4096,), {}, ValueError),
    ("name-lone-surrogate", ("\ud800",), dict(create=True), ValueError),  # UnicodeEncodeError
    ("name-none-open", (None,), {}, ValueError),
    ("no-args", (), {}, ValueError),
    ("capacity-negative", (NAME,), dict(create=True, capacity=-1), ValueError),
    ("capacity-zero", (NAME,), dict(create=True, capacity=0), ValueError),
    ("capacity-below-min", (NAME,), dict(create=True, capacity=15), ValueError),
    ("capacity-bool", (NAME,), dict(create=True, capacity=True), ValueError),
    ("capacity-2**46+1", (NAME,), dict(create=True, capacity=2**46 + 1), ValueError),
    ("capacity-2**63", (NAME,), dict(create=True, capacity=2**63), ValueError),
    ("capacity-2**64", (NAME,), dict(create=True, capacity=2**64), ValueError),
    ("capacity--2**64", (NAME,), dict(create=True, capacity=-2**64), ValueError),
    ("capacity-float", (NAME,), dict(create=True, capacity=64.0), TypeError),
    ("capacity-nan", (NAME,), dict(create=True, capacity=math.nan), TypeError),
    ("capacity-inf", (NAME,), dict(create=True, capacity=math.inf), TypeError),
    ("capacity-str", (NAME,), dict(create=True, capacity="64"), TypeError),
    ("capacity-none", (NAME,), dict(create=True, capacity=None), TypeError),
    ("capacity-bytes", (NAME,), dict(create=True, capacity=b"\x40"), TypeError),
    ("mode-negative", (NAME,), dict(create=True, capacity=64, mode=-1), ValueError),
    ("mode-too-big", (NAME,), dict(create=True, capacity=64, mode=0o10000), ValueError),
    ("mode-2**63", (NAME,), dict(create=True, capacity=64, mode=2**63), ValueError),
    ("mode-2**64", (NAME,), dict(create=True, capacity=64, mode=2**64), ValueError),
    ("mode-float", (NAME,), dict(create=True, capacity=64, mode=384.0), TypeError),
    ("mode-str", (NAME,), dict(create=True, capacity=64, mode="600"), TypeError),
    ("mode-none", (NAME,), dict(create=True, capacity=64, mode=None), TypeError),
    ("unknown-keyword", (NAME,), dict(create=True, size=64), TypeError),
    ("exist_ok-positional", (NAME, True, 64, True), {}, TypeError),
    ("too-many-positional", (NAME, True, 64, True, 0o600, 1), {}, TypeError),
    ("open-missing", (NAME,), {}, FileNotFoundError),
]


def _fill(args, kwargs, name):
    return (tuple(name if a is NAME else a for a in args),
            {k: (name if v is NAME else v) for k, v in kwargs.items()})


UTF8_NAME_CASES = {"name-too-long-bytes", "name-lone-surrogate"}


@pytest.mark.parametrize("args,kwargs,exc", [
    pytest.param(*c[1:], id=c[0], marks=[utf8_names_only] if c[0] in UTF8_NAME_CASES else [])
    for c in CONSTRUCTOR_CASES])
def test_constructor_rejects(ours, pyshm_name, args, kwargs, exc):
    before = ours()
    args, kwargs = _fill(args, kwargs, pyshm_name)
    with pytest.raises(exc) as info:
        pyshm.Channel(*args, **kwargs)
    if issubclass(exc, OSError):
        assert info.value.filename == pyshm_name
    assert ours() == before, "a failed constructor left a name behind"
    with pytest.raises(FileNotFoundError):      # not even while we hold it (Windows)
        pyshm.SharedMemory(pyshm_name)


@pytest.mark.skipif(not (sys.platform.startswith("linux") or WINDOWS),
                    reason="pages reserved at create: posix_fallocate on Linux, the page "
                           "file's commit on Windows; other systems may overcommit")
@pytest.mark.parametrize("capacity", [2**40, 2**46], ids=["1TiB", "64TiB"])
def test_huge_capacity_is_no_space_and_leaves_nothing(ours, pyshm_name, capacity):
    """Within the allowed range but beyond /dev/shm (or the page file): the
    OS refuses at create (Linux: ENOSPC, reserved up front), the name is
    removed again."""
    before = ours()
    with pytest.raises(OSError) as info:
        pyshm.Channel(pyshm_name, create=True, capacity=capacity)
    if WINDOWS:
        # ERROR_NOT_ENOUGH_MEMORY (Wine), ERROR_COMMITMENT_LIMIT (Windows)
        assert info.value.winerror in (8, 1455)  # type: ignore[attr-defined]
    else:
        assert info.value.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM)
    assert info.value.filename == pyshm_name
    assert ours() == before
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_existing_name_refused_and_left_intact(ours, pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c:
        c.send(SENTINEL)
        before = ours()
        for cap in (64, 256, 4096):
            with pytest.raises(FileExistsError) as info:
                pyshm.Channel(pyshm_name, create=True, capacity=cap)
            assert info.value.filename == pyshm_name
        assert ours() == before
        assert c.capacity == 256 and c.recv(timeout=0) == SENTINEL


def test_existing_foreign_segment_is_protocol_error_and_kept(ours, pyshm_name):
    """exist_ok=True on a segment that is not a channel must not format it."""
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096) as shm:
        shm.write(b"\x5a" * 4096)
        with pytest.raises(pyshm.ProtocolError):
            pyshm.Channel(pyshm_name, create=True, capacity=64, exist_ok=True)
        assert shm.read() == b"\x5a" * 4096
    if not WINDOWS:         # there the name went with our handle
        assert pyshm_name in ours()


# ---- exist_ok=True: the capacity asked for (issue 19, point 6) -------------------------

@pytest.mark.parametrize("asked,rounded", [(1 << 20, 1 << 20), (64, 64), (4097, 4104)])
def test_exist_ok_with_another_capacity_is_value_error_and_changes_nothing(
        ours, pyshm_name, asked, rounded):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c:
        c.send(SENTINEL)
        before = ours()
        with pytest.raises(ValueError) as info:
            pyshm.Channel(pyshm_name, create=True, capacity=asked, exist_ok=True)
        text = str(info.value)
        assert f"channel {pyshm_name!r} exists with capacity=4096" in text
        assert f"not the capacity={asked}" in text and "nothing was changed" in text
        assert (f"({rounded} once rounded)" in text) == (asked != rounded)
        # Nothing changed: the name, the capacity, the queued message.
        assert ours() == before
        with pyshm.Channel(pyshm_name) as again:
            assert again.capacity == 4096 and again.messages == 1
        assert c.recv(timeout=0) == SENTINEL


@pytest.mark.parametrize("kwargs", [{"capacity": 4096}, {"capacity": 4090}, {}],
                         ids=["same", "same-once-rounded", "not-given"])
def test_exist_ok_with_the_same_or_no_capacity_opens_it(pyshm_name, kwargs):
    """A capacity that rounds to the existing one's opens it; none given, the
    existing one's wins (docs/channels.md, the exist_ok rule)."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as c:
        c.send(SENTINEL)
        with pyshm.Channel(pyshm_name, create=True, exist_ok=True, **kwargs) as same:
            assert same.capacity == 4096 and same.recv(timeout=0) == SENTINEL


# ---- names that are not segments (issue 19, point 5) -------------------------------

CHANNEL_OPENERS = [
    "pyshm.Channel(name)",
    "pyshm.Channel(name, create=True, capacity=4096, exist_ok=True)",
    "_pyshm._channel_users(name)",      # what `pyshm rm --stale` asks
]


def test_a_name_that_is_not_a_segment_is_refused_at_once(not_a_segment, answers_at_once):
    """Each way a channel is opened fails at once (in a child with a
    deadline: a hang fails the test) with the OSError naming the name and
    what it is, and leaves the entry as it was."""
    entry = not_a_segment
    for result in answers_at_once(entry.name, CHANNEL_OPENERS):
        kind, code, text, filename = result[0], *result[1:]
        assert (kind, code, filename) == (
            "IsADirectoryError" if entry.errno == errno.EISDIR else "OSError",
            entry.errno, entry.name), result
        assert text.startswith(entry.what) and "not a shared-memory segment" in text, result
    assert entry.intact()


@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex" or not have_ofd_locks,
                    reason="liveness slots of the futex build (Linux)")
def test_every_slot_taken_is_oserror_and_leaves_nothing(pyshm_name, pyshm_child, is_mapped):
    """An attach finds no free liveness slot (another process holds every
    slot byte of the channel's file): OSError EUSERS naming the channel, no
    mapping and no descriptor left behind, the queue untouched; once a slot
    is free again the channel opens and works."""
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c:
        c.send(SENTINEL)
    # No object of ours is attached now: the hog can take every slot.
    hog = pyshm_child(SLOT_HOG, pyshm_name, 0)
    hog.expect("holding")
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as info:
        pyshm.Channel(pyshm_name)
    assert info.value.errno == errno.EUSERS and info.value.filename == pyshm_name
    with pytest.raises(OSError) as info:
        pyshm.Channel(pyshm_name, create=True, capacity=256, exist_ok=True)
    assert info.value.errno == errno.EUSERS
    assert not is_mapped(pyshm_name)
    assert len(os.listdir("/proc/self/fd")) == fds
    hog.send_line("done")
    hog.finish()
    with pyshm.Channel(pyshm_name) as c:
        assert c.recv(timeout=0) == SENTINEL


# Attaches, then forks when told (a hog holds every other slot by then): the
# fork child can have no slot of its own.  It must keep its parent's and work
# as before: send, then close() gives back exactly its one descriptor.
FORK_WITHOUT_A_SLOT = r"""
import os, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("attached", flush=True)
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    fds = len(os.listdir("/proc/self/fd"))
    c.send(b"from the child", timeout=60)
    c.close()
    os._exit(0 if len(os.listdir("/proc/self/fd")) == fds - 1 else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), c.recv(timeout=0).decode(), flush=True)
"""


@pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex" or not have_ofd_locks,
                    reason="liveness slots of the futex build (Linux)")
def test_a_fork_child_without_a_free_slot_keeps_its_parents(pyshm_name, pyshm_child):
    """A fork child gives each inherited channel object a liveness slot of
    its own; with none free it keeps sharing its parent's, and the channel
    works there as before."""
    pyshm.Channel(pyshm_name, create=True, capacity=256).close()
    parent = pyshm_child(FORK_WITHOUT_A_SLOT, pyshm_name)
    parent.expect("attached")
    (slot,) = live_slots(pyshm_name)
    hog = pyshm_child(SLOT_HOG, pyshm_name, slot)
    hog.expect("holding")
    parent.send_line("fork")
    assert parent.line() == "0 from the child"
    parent.finish()
    hog.send_line("done")
    hog.finish()

# ---- calls on an open channel -------------------------------------------------------

def test_too_large_is_valueerror_and_nothing_sent(pyshm_channel):
    chan = pyshm_channel(4096)
    with pytest.raises(ValueError, match="larger"):
        chan.send(b"x" * (chan.max_message_size + 1))
    with pytest.raises(TimeoutError):
        chan.recv(timeout=0)


def test_recv_into_too_small_keeps_message(pyshm_channel):
    chan = pyshm_channel(4096)
    chan.send(b"0123456789")
    buf = bytearray(4)
    with pytest.raises(ValueError, match="stays queued"):
        chan.recv_into(buf, timeout=0)
    big = bytearray(32)
    assert chan.recv_into(big, timeout=0) == 10
    assert bytes(big[:10]) == b"0123456789"
    chan.send(b"")
    assert chan.recv_into(bytearray(0)) == 0


def test_wrong_objects_get_a_hint(pyshm_channel):
    chan = pyshm_channel(4096)
    with pytest.raises(TypeError, match=r"not 'dict' \(to send a Python object use "
                       r"send_obj\(\)"):
        chan.send({"a": 1})
    with pytest.raises(TypeError, match=r"send\(\) needs a contiguous buffer.*"
                       r"numpy.ascontiguousarray"):
        chan.send(_noncontiguous())
    with pytest.raises(TypeError, match="writable C-contiguous"):
        chan.recv_into(memoryview(bytearray(64))[::2])
    assert chan.messages == 0


def test_raw_segment_is_named_and_recognised(pyshm_name, pyshm_names):
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096) as raw:
        with pytest.raises(pyshm.ProtocolError) as info:
            pyshm.Channel(pyshm_name)
        text = str(info.value)
        assert text.startswith(repr(pyshm_name) + ": not a pyshm channel")
        assert "raw segment" in text and "SharedMemory" in text
        raw.write(b"not a channel header")
        with pytest.raises(pyshm.ProtocolError, match="looks like a raw segment"):
            pyshm.Channel(pyshm_name)
    if WINDOWS:
        return          # an opener sees at least a page there: never too small for a header
    small = pyshm_names()
    with pyshm.SharedMemory(small, create=True, size=64):
        with pytest.raises(pyshm.ProtocolError, match="too small .*raw segment"):
            pyshm.Channel(small)


def test_argument_types(pyshm_channel):
    chan = pyshm_channel(4096)
    with pytest.raises(TypeError, match="encode"):
        chan.send("text")
    with pytest.raises(TypeError):
        chan.recv_into(b"read-only bytes")
    with pytest.raises(TypeError):
        chan.recv(timeout="1")
    with pytest.raises(TypeError):
        chan.send()
    with pytest.raises(TypeError):
        chan.recv(1, 2)
    chan.send(memoryview(b"abcdef")[1:4])
    chan.send(data=bytearray(b"kw"), timeout=1)
    assert chan.recv(timeout=0) == b"bcd"
    assert chan.recv(timeout=None) == b"kw"


BAD_TIMEOUTS = [
    (-1, ValueError), (-0.001, ValueError), (-1e-300, ValueError), (-2**64, ValueError),
    (-2**1100, ValueError), (math.nan, ValueError), (-math.inf, ValueError),
    ("1", TypeError), (b"1", TypeError), (1j, TypeError), ([1], TypeError),
    (object(), TypeError),
]


def _noncontiguous():
    return memoryview(bytearray(64))[::2]


def _readonly_views():
    views = [b"\0" * 64, memoryview(bytearray(64)).toreadonly(), memoryview(b"\0" * 64)]
    try:
        import numpy as np
        a = np.zeros(64, dtype=np.uint8)
        a.flags.writeable = False
        views.append(a)
    except ImportError:
        pass
    return views


def _noncontiguous_buffers():
    bufs = [_noncontiguous(), memoryview(bytearray(64))[::-1]]
    try:
        import numpy as np
        bufs.append(np.zeros((8, 8), dtype=np.uint8)[:, 0])
    except ImportError:
        pass
    return bufs


def _call_cases():
    cases = []
    for t, exc in BAD_TIMEOUTS:
        shown = "object()" if type(t) is object else repr(t)    # the same id every run
        cases.append((f"send-timeout-{shown}", "send", (b"x",), dict(timeout=t), exc))
        cases.append((f"recv-timeout-{shown}", "recv", (), dict(timeout=t), exc))
        cases.append((f"recv_into-timeout-{shown}", "recv_into", (bytearray(64),),
                      dict(timeout=t), exc))
    cases += [
        ("send-str", "send", ("text",), {}, TypeError),
        ("send-empty-str", "send", ("",), {}, TypeError),
        ("send-none", "send", (None,), {}, TypeError),
        ("send-int", "send", (5,), {}, TypeError),
        ("send-list", "send", ([1, 2],), {}, TypeError),
        ("send-missing", "send", (), {}, TypeError),
        ("send-extra", "send", (b"x", 1, 2), {}, TypeError),
        ("send-unknown-kw", "send", (b"x",), dict(block=True), TypeError),
        ("send-twice", "send", (b"x",), dict(data=b"y"), TypeError),
        ("send-too-large", "send", (bytes(249),), {}, ValueError),    # max is 248
        ("send-too-large-2**20", "send", (bytes(1 << 20),), {}, ValueError),
        ("recv-extra", "recv", (1, 2), {}, TypeError),
        ("recv-unknown-kw", "recv", (), dict(size=1), TypeError),
        ("recv_into-missing", "recv_into", (), {}, TypeError),
        ("recv_into-str", "recv_into", ("abc",), {}, TypeError),
        ("recv_into-none", "recv_into", (None,), {}, TypeError),
        ("recv_into-int", "recv_into", (64,), {}, TypeError),
        ("recv_into-too-small", "recv_into", (bytearray(len(SENTINEL) - 1),), {}, ValueError),
        ("recv_into-empty", "recv_into", (bytearray(),), {}, ValueError),
        ("recv_into-too-small-wait", "recv_into", (bytearray(3),), dict(timeout=0.05),
         ValueError),
    ]
    for i, v in enumerate(_readonly_views()):
        cases.append((f"recv_into-readonly-{i}", "recv_into", (v,), {}, TypeError))
    for i, v in enumerate(_noncontiguous_buffers()):
        cases.append((f"recv_into-noncontiguous-{i}", "recv_into", (v,), {}, TypeError))
        cases.append((f"send-noncontiguous-{i}", "send", (v,), {}, TypeError))
    return cases


CALL_CASES = _call_cases()


@pytest.fixture
def loaded(pyshm_channel):
    """A channel (max message 248 bytes) holding SENTINEL."""
    c = pyshm_channel(256)
    c.send(SENTINEL)
    return c


@pytest.mark.parametrize("method,args,kwargs,exc", [c[1:] for c in CALL_CASES],
                         ids=[c[0] for c in CALL_CASES])
def test_call_rejects_and_keeps_the_queue(ours, loaded, method, args, kwargs, exc):
    before, queued = ours(), loaded.queued
    with pytest.raises(exc) as info:
        getattr(loaded, method)(*args, **kwargs)
    if exc is TypeError and args and isinstance(args[0], str):
        assert "encode" in str(info.value)              # the hint
    assert ours() == before
    assert loaded.queued == queued, "a rejected call changed the queue"
    assert loaded.recv(timeout=0) == SENTINEL           # still there, whole, first
    with pytest.raises(TimeoutError):
        loaded.recv(timeout=0)


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, 5e-324, 1e-9, True, 2**63, 2**64,
                                     2**1100, 1e300, math.inf, None],
                         ids=repr)
def test_edge_timeouts_that_are_valid(loaded, timeout):
    """Tiny timeouts behave as 0; huge ones (beyond a double, or inf) as None.
    With data and space there, every one returns at once."""
    assert loaded.recv(timeout=timeout) == SENTINEL
    loaded.send(b"again", timeout=timeout)
    buf = bytearray(16)
    assert loaded.recv_into(buf, timeout=timeout) == 5 and buf[:5] == b"again"


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, 5e-324, 1e-9, False], ids=repr)
def test_tiny_timeouts_expire(pyshm_name, timeout):
    with pyshm.Channel(pyshm_name, create=True, capacity=16) as c:
        with pytest.raises(TimeoutError):
            c.recv(timeout=timeout)
        c.send(bytes(8), timeout=timeout)               # fills the ring
        with pytest.raises(TimeoutError):
            c.send(b"", timeout=timeout)
        assert c.queued == 16


# ---- use after close -----------------------------------------------------------------

AFTER_CLOSE = {
    "send": lambda c: c.send(b"x"),
    "send-timeout0": lambda c: c.send(b"x", timeout=0),
    "recv": lambda c: c.recv(),
    "recv-timeout0": lambda c: c.recv(timeout=0),
    "recv_into": lambda c: c.recv_into(bytearray(64)),
    "recv_into-timeout0": lambda c: c.recv_into(bytearray(64), timeout=0),
    "queued": lambda c: c.queued,
    "messages": lambda c: c.messages,
    "creator_pid": lambda c: c.creator_pid,
    "__enter__": lambda c: c.__enter__(),
    "with": lambda c: _with(c),
}


def _with(c):
    with c:
        pass


@pytest.mark.parametrize("call", sorted(AFTER_CLOSE))
def test_use_after_close_is_valueerror(ours, pyshm_name, call):
    c = pyshm.Channel(pyshm_name, create=True, capacity=256)
    c.send(SENTINEL)
    # Another handle keeps the channel alive on Windows, where the name dies
    # with the last one; on POSIX it changes nothing.
    keeper = pyshm.Channel(pyshm_name)
    c.close()
    with pytest.raises(ValueError, match="closed"):
        AFTER_CLOSE[call](c)
    # What stays allowed after close(): the name, closed, repr, close again,
    # __exit__, unlink (documented); pickling (by name) is refused.
    assert c.closed and c.name == pyshm_name and "closed" in repr(c)
    assert c.capacity == 256 and c.max_message_size == 248    # as the stdlib's size
    c.close()
    c.__exit__(None, None, None)
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(c)
    # The queued message was not lost by the closed handle's calls.
    with pyshm.Channel(pyshm_name) as again:
        assert again.recv(timeout=0) == SENTINEL
    keeper.close()
    c.unlink()
    assert pyshm_name not in ours()
    if not WINDOWS:         # unlink() does nothing there, and never fails
        with pytest.raises(FileNotFoundError):
            c.unlink()


# ---- property: any value for timeout, capacity, mode ---------------------------------

anything = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=3),
    st.binary(max_size=3), st.lists(st.integers(), max_size=2), st.complex_numbers())


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=anything)
def test_any_timeout_gives_a_clean_exception_or_works(loaded, value):
    """With a message queued and space free, a valid timeout returns at once
    (even a huge one); an invalid one raises TypeError or ValueError and
    changes nothing."""
    queued = loaded.queued
    for call in (lambda: loaded.send(b"t", timeout=value),
                 lambda: loaded.recv_into(bytearray(64), timeout=value),
                 lambda: loaded.recv(timeout=value)):
        try:
            call()
        except (TypeError, ValueError):
            pass
    # Whatever happened, the queue is consistent: drain it and put SENTINEL back.
    got = []
    while True:
        try:
            got.append(loaded.recv(timeout=0))
        except TimeoutError:
            break
    assert all(m in (SENTINEL, b"t") for m in got)
    loaded.send(SENTINEL)
    assert loaded.queued == queued


def _small_or_impossible(n: int) -> bool:
    # Sizes between 64 KiB and 32 TiB would really allocate (or take long);
    # keep the property to the cheap ones and the ones the OS refuses at once.
    return n < 1 << 16 or n >= 1 << 45


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(capacity=st.one_of(st.integers(-(2**70), 2**70).filter(_small_or_impossible),
                          st.floats(allow_nan=True), st.text(max_size=2), st.none()),
       mode=st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.none(),
                      st.sampled_from([0o600, 0o644, 0o7777])))
def test_any_capacity_and_mode_give_a_clean_exception_or_work(ours, pyshm_names, capacity,
                                                              mode):
    name = pyshm_names()
    before = ours()
    try:
        try:
            with pyshm.Channel(name, create=True, capacity=capacity, mode=mode) as c:
                c.send(b"ok", timeout=0)
                assert c.recv(timeout=0) == b"ok"
                assert c.capacity >= 16 and c.capacity % 8 == 0
            made = True
        except (TypeError, ValueError):
            made = False
        except OSError as e:
            assert e.filename == name
            made = False
        if not made:
            assert ours() == before, "a failed constructor left a name behind"
    finally:
        pyshm_names.remove(name)
