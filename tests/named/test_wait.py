"""wait= on every opener (binding/named.c): SharedMemory, Channel and Slot
wait for a name that does not exist yet, or is not yet whole, then open it.

A child creates the name late, after a handshake -- the test first sees the
waiting thread asleep in the wait (on Linux, in nanosleep, which
/proc/self/task/TID/syscall shows: the wait sleeps with backoff, it never
spins), then lets the child go.  A name that never comes is a
FileNotFoundError that says how long was waited.  Ctrl-C ends the wait.  A
name that appears as a half-made object (a raw segment of size 0, a channel
or slot whose header is not written yet) is waited for until it is whole.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time

import pytest

import pyshm
from pyshm.pytest_plugin import DEADLINE

TYPES = ["SharedMemory", "Channel", "Slot"]
SIZE = {"SharedMemory": "size", "Channel": "capacity", "Slot": "size"}
WHAT = {"SharedMemory": "segment", "Channel": "channel", "Slot": "slot"}
NAPS = {35, 230, 101, 115}      # nanosleep, clock_nanosleep: x86-64, arm64


def open_kwargs(kind: str) -> dict:
    return {SIZE[kind]: 4096}


def wait_until_napping(tid: int) -> None:
    """Until thread TID of this process sleeps in nanosleep (Linux; at once
    elsewhere: there the tests cannot tell, and only check the result)."""
    path = f"/proc/self/task/{tid}/syscall"
    if not os.path.exists(path):
        return
    end = time.monotonic() + DEADLINE
    while True:
        try:
            with open(path) as f:
                fields = f.read().split()
        except FileNotFoundError:
            return          # the thread ended: its result says why
        if fields and fields[0].isdigit() and int(fields[0]) in NAPS:
            return
        assert time.monotonic() < end, "the opener never slept in its wait"
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess


class Opener(threading.Thread):
    """A thread that opens NAME as KIND with wait=WAIT."""

    def __init__(self, kind: str, name: str, wait: float) -> None:
        super().__init__()
        self.kind, self.name, self.wait_s = kind, name, wait
        self.result: object = None
        self.tid = 0
        self.started_ = threading.Event()

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.started_.set()
        try:
            self.result = getattr(pyshm, self.kind)(self.name, wait=self.wait_s)
        except BaseException as exc:        # reported by the test
            self.result = exc

    def napping(self) -> None:
        assert self.started_.wait(DEADLINE)
        wait_until_napping(self.tid)

    def opened(self):
        self.join(DEADLINE)
        assert not self.is_alive()
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


CREATOR = r"""
import sys, pyshm
kind, name = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
obj = getattr(pyshm, kind)(name, create=True, **{"SharedMemory": {"size": 4096},
                                                "Channel": {"capacity": 4096},
                                                "Slot": {"size": 4096}}[kind])
if kind == "SharedMemory":
    obj.write(b"made late")
elif kind == "Channel":
    obj.send(b"made late")
else:
    obj.publish(b"made late")
print("created", flush=True)
sys.stdin.readline()        # holds it (on Windows a name lives while a handle does)
"""


def said(obj) -> bytes:
    if isinstance(obj, pyshm.SharedMemory):
        return obj.read(9)
    if isinstance(obj, pyshm.Channel):
        return obj.recv(timeout=0)
    return obj.read()


@pytest.mark.parametrize("kind", TYPES)
def test_a_name_created_late_is_waited_for(pyshm_name, pyshm_child, kind):
    child = pyshm_child(CREATOR, kind, pyshm_name)
    child.expect("ready")
    opener = Opener(kind, pyshm_name, DEADLINE)
    opener.start()
    try:
        opener.napping()                # looked, found nothing, sleeps
        child.send_line("create")
        child.expect("created")
        with opener.opened() as obj:
            assert said(obj) == b"made late"
    finally:
        opener.join(DEADLINE)
        child.send_line("done")
        child.finish()


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("wait", [0, 0.05, 0.3])
def test_a_name_that_never_comes_is_file_not_found_saying_how_long(pyshm_name, kind, wait):
    with pytest.raises(FileNotFoundError) as info:
        getattr(pyshm, kind)(pyshm_name, wait=wait)
    exc = info.value
    assert exc.errno == errno.ENOENT and exc.filename == pyshm_name
    assert exc.strerror == f"No such {WHAT[kind]}: the name did not appear within " \
                           f"wait={wait} seconds"
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)      # nothing was made


@pytest.mark.parametrize("kind", TYPES)
def test_an_existing_name_opens_at_once(pyshm_name, kind):
    with getattr(pyshm, kind)(pyshm_name, create=True, **open_kwargs(kind)):
        with getattr(pyshm, kind)(pyshm_name, wait=3600) as again:
            assert again.name == pyshm_name


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(create=True, wait=1), ValueError, "with create=True there is nothing to wait for"),
    (dict(create=True, exist_ok=True, wait=0), ValueError, "nothing to wait for"),
    (dict(wait=-1), ValueError, "wait must not be negative"),
    (dict(wait=float("nan")), ValueError, "wait must not be NaN"),
    (dict(wait="1"), TypeError, "wait must be a number or None"),
])
def test_wait_rejects(pyshm_name, kind, kwargs, exc, match):
    if kwargs.get("create"):
        kwargs = dict(kwargs, **open_kwargs(kind))
    with pytest.raises(exc, match=match):
        getattr(pyshm, kind)(pyshm_name, **kwargs)
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_wait_none_is_the_default(pyshm_name):
    for kind in TYPES:
        with pytest.raises(FileNotFoundError) as info:
            getattr(pyshm, kind)(pyshm_name, wait=None)
        assert "did not appear" not in str(info.value)


INTERRUPTED = r"""
import signal, sys, pyshm
signal.signal(signal.SIGINT, signal.default_int_handler)
print("ready", flush=True)
try:
    getattr(pyshm, sys.argv[1])(sys.argv[2], wait=3600)
    print("opened", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32",
                    reason="sends SIGINT to another process, which Windows cannot")
@pytest.mark.parametrize("kind", TYPES)
def test_ctrl_c_ends_the_wait(pyshm_name, pyshm_child, kind):
    with pyshm_child(INTERRUPTED, kind, pyshm_name) as child:
        child.expect("ready")
        path = f"/proc/{child.pid}/task/{child.pid}/syscall"
        if os.path.exists(path):
            end = time.monotonic() + DEADLINE
            while True:         # asleep in the wait's nanosleep
                try:
                    with open(path) as f:
                        fields = f.read().split()
                except PermissionError:
                    break
                if fields and fields[0].isdigit() and int(fields[0]) in NAPS:
                    break
                assert time.monotonic() < end, "the child never slept in its wait"
                time.sleep(0.001)   # pacing a poll with a deadline, not a guess
        os.kill(child.pid, signal.SIGINT)
        child.expect("KeyboardInterrupt")
        child.finish()


# ---- a name that appears half-made ------------------------------------------------------

def _finish_in_place(raw: pyshm.SharedMemory, whole: bytes) -> None:
    """Write a finished object's bytes WHOLE over RAW, its magic (the first
    four bytes) last -- as a creator that does not publish whole does."""
    raw.write(whole[4:], 4)
    raw.write(whole[:4], 0)


@pytest.mark.parametrize("kind", ["Channel", "Slot"])
def test_a_half_made_object_is_waited_for_until_whole(pyshm_names, kind):
    """The name exists but holds no header yet (a raw segment of the right
    size, all zeros): without wait= that is ProtocolError at once where
    segments appear whole (Linux); with it, the opener waits -- asleep --
    until the header is there, then opens a working object."""
    name, model = pyshm_names(), pyshm_names()
    cls = getattr(pyshm, kind)
    with cls(model, create=True, **open_kwargs(kind)), \
            pyshm.SharedMemory(model) as finished:
        whole = finished.read()
    pyshm_names.remove(model)
    with pyshm.SharedMemory(name, create=True, size=len(whole)) as raw:
        opener = Opener(kind, name, DEADLINE)
        opener.start()
        try:
            opener.napping()            # found it, not whole: sleeps
            _finish_in_place(raw, whole)
            with opener.opened() as obj:
                if kind == "Channel":
                    obj.send(b"works")
                    assert obj.recv(timeout=0) == b"works"
                else:
                    assert obj.publish(b"works") == 1 and obj.read() == b"works"
        finally:
            opener.join(DEADLINE)


@pytest.mark.parametrize("kind", ["Channel", "Slot"])
def test_a_half_made_object_that_stays_so_is_refused_after_the_wait(pyshm_name, kind):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8192):
        with pytest.raises(pyshm.ProtocolError, match="no magic number"):
            getattr(pyshm, kind)(pyshm_name, wait=0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="makes a size-0 object in /dev/shm by hand, as a creator that "
                           "does not publish whole (another library) leaves one")
def test_a_segment_of_size_0_is_waited_for_until_sized(pyshm_name):
    fd = os.open(f"/dev/shm/{pyshm_name}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        opener = Opener("SharedMemory", pyshm_name, DEADLINE)
        opener.start()
        try:
            opener.napping()
            os.ftruncate(fd, 12345)
            with opener.opened() as shm:
                assert shm.size == 12345
        finally:
            opener.join(DEADLINE)
    finally:
        os.close(fd)
