"""pytest fixtures for code that uses pyshm (active wherever pyshm is installed)::

    from pyshm.pytest_plugin import ChildFactory

    def test_exchange(pyshm_segment, pyshm_child: ChildFactory) -> None:
        shm = pyshm_segment(64)
        shm.write(b"ping")
        child = pyshm_child(
            "import pyshm, sys\\n"
            "print(pyshm.SharedMemory(sys.argv[1]).read(4).decode())",
            shm.name)
        child.expect("ping")
        child.finish()

Fixtures::

  pyshm_name     a fresh unique name; whatever was created under it is removed
  pyshm_names    factory: pyshm_names() -> a fresh name per call, each removed
  pyshm_segment  factory: pyshm_segment(size, name=None) -> SharedMemory
  pyshm_channel  factory: pyshm_channel(capacity=..., name=None) -> Channel
  pyshm_slot     factory: pyshm_slot(size, name=None) -> Slot
  pyshm_child    factory (ChildFactory): pyshm_child(source, *args) -> Child,
                 a subprocess.Popen (fresh interpreter that imports this
                 pyshm; text-mode stdin/stdout/stderr pipes; killed if
                 running and reaped) with line(), expect(), send_line() and
                 finish(); pyshm_child.script(path, *args), .module(name,
                 *args) and .command(*argv) start other programs the same way

Names are the session's prefix ("pyt", five random characters, "_") and a
counter: 14 characters at most (FreeBSD's limit, like pyshm's own random
names), unique within the session and recognisable afterwards; every fixture
above draws from the one session-wide ``session_names``.  When a Child's
helper fails a test, the traceback ends at the test's own line: the helpers
hide their frames (``__tracebackhide__``).
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import string
import subprocess
import sys
import threading
from typing import IO, Any, Callable, Iterator, List, Optional, Set, Tuple, Union

import pytest

import pyshm
from pyshm._subprocess import child_env

__all__ = ["pyshm_name", "pyshm_names", "pyshm_segment", "pyshm_channel", "pyshm_slot",
           "pyshm_child",
           "Child", "ChildFactory", "NameFactory", "SessionNames", "session_names",
           "DEADLINE"]

#: How long a child may take to say a line or to finish, by default: generous,
#: so that a loaded machine does not turn a slow child into a failure.
DEADLINE = 60.0

_DIGITS = string.digits + string.ascii_lowercase
_MAX_NAME = 14


def _base36(n: int) -> str:
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if n == 0:
            return out


def _remove(name: str) -> None:
    try:
        pyshm.unlink(name)
    except FileNotFoundError:
        pass


# ---- names -------------------------------------------------------------------

class SessionNames:
    """The names of one test session: ``prefix`` plus a base-36 counter."""

    def __init__(self, prefix: Optional[str] = None) -> None:
        self.prefix = prefix or "pyt" + "".join(secrets.choice(_DIGITS) for _ in range(5)) + "_"
        self._counter = itertools.count()

    def __call__(self) -> str:
        """A name no one in this session has had."""
        name = self.prefix + _base36(next(self._counter))
        if len(name) > _MAX_NAME:
            raise RuntimeError(f"this session has used up its names ({name!r} is too long)")
        return name

    def remove(self, name: str) -> None:
        """Remove NAME now if it exists."""
        _remove(name)

    def in_dev_shm(self) -> Set[str]:
        """This session's names present in /dev/shm now (Linux; empty where
        the OS has no such folder to list)."""
        if not sys.platform.startswith("linux"):
            # Elsewhere "/dev/shm" is no list of segments, even where the
            # path exists (Windows under Wine sees the host's as \dev\shm).
            return set()
        try:
            entries = os.listdir("/dev/shm")
        except OSError:
            return set()
        return {n for n in entries if n.startswith(self.prefix)}


#: The one generator behind every fixture here.
session_names = SessionNames()


class NameFactory:
    """``pyshm_names()``: a fresh name per call; each one is removed after the
    test if anything was created under it."""

    def __init__(self, names: SessionNames = session_names) -> None:
        self._names = names
        self.made: List[str] = []

    @property
    def prefix(self) -> str:
        """What every name of this session starts with."""
        return self._names.prefix

    def __call__(self) -> str:
        self.made.append(self._names())
        return self.made[-1]

    def in_dev_shm(self) -> Set[str]:
        """This session's names present in /dev/shm now (see SessionNames)."""
        return self._names.in_dev_shm()

    def remove(self, name: str) -> None:
        """Remove NAME now if it exists (a test that makes many segments in a
        loop frees each one as it goes)."""
        self._names.remove(name)

    def remove_all(self) -> None:
        for name in self.made:
            self._names.remove(name)


@pytest.fixture
def pyshm_names() -> Iterator[NameFactory]:
    """Factory ``pyshm_names()``: a fresh unique name per call; anything created
    under any of them is removed after the test."""
    factory = NameFactory()
    yield factory
    factory.remove_all()


@pytest.fixture
def pyshm_name(pyshm_names: NameFactory) -> str:
    """A fresh unique segment name; anything created under it is removed after the test."""
    return pyshm_names()


# ---- segments, channels and slots ----------------------------------------------------

@pytest.fixture
def pyshm_segment(pyshm_names: NameFactory) -> Iterator[Callable[..., "pyshm.SharedMemory"]]:
    """Factory ``pyshm_segment(size, name=None)``: a new SharedMemory, closed and
    removed after the test."""
    made: List[pyshm.SharedMemory] = []

    def make(size: int, name: Optional[str] = None) -> pyshm.SharedMemory:
        shm = pyshm.SharedMemory(name or pyshm_names(), create=True, size=size)
        made.append(shm)
        return shm

    yield make
    _close_all(made)


@pytest.fixture
def pyshm_channel(pyshm_names: NameFactory) -> Iterator[Callable[..., Any]]:
    """Factory ``pyshm_channel(capacity=1 << 20, name=None)``: a new Channel,
    closed and removed after the test."""
    made: List[Any] = []

    def make(capacity: int = 1 << 20, name: Optional[str] = None) -> Any:
        chan = pyshm.Channel(name or pyshm_names(), create=True, capacity=capacity)
        made.append(chan)
        return chan

    yield make
    _close_all(made)


@pytest.fixture
def pyshm_slot(pyshm_names: NameFactory) -> Iterator[Callable[..., Any]]:
    """Factory ``pyshm_slot(size, name=None)``: a new Slot for values of up to
    SIZE bytes, closed and removed after the test."""
    made: List[Any] = []

    def make(size: int, name: Optional[str] = None) -> Any:
        slot = pyshm.Slot(name or pyshm_names(), create=True, size=size)
        made.append(slot)
        return slot

    yield make
    _close_all(made)


def _close_all(objs: List[Any]) -> None:
    errors = []
    for obj in objs:
        try:
            obj.close()
        except BufferError as exc:  # a view left alive by the test
            errors.append(exc)
        try:
            obj.unlink()
        except FileNotFoundError:
            pass
    if errors:
        raise errors[0]


# ---- child processes ------------------------------------------------------------

class Child(subprocess.Popen[str]):
    """A child process with text-mode pipes on stdin, stdout and stderr.

    A ``subprocess.Popen``, with helpers for tests that talk to it line by
    line.  The first ``line()`` or ``expect()`` hands stdout to a reader
    thread (``stdout`` is None from then on); ``communicate()`` and
    ``finish()`` still return what is left of it.  Leaving a ``with`` block
    kills the child if it still runs, and reaps it.
    """

    def __init__(self, argv: List[str]) -> None:
        super().__init__(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=child_env(PYTHONUNBUFFERED="1"))
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader: Optional[threading.Thread] = None
        self._out: Optional[IO[str]] = None

    def _read(self) -> None:
        assert self._out is not None
        try:
            for line in self._out:
                self._lines.put(line)
        except (OSError, ValueError):  # closed under us by reap()
            pass
        self._lines.put(None)

    def _start_reader(self) -> None:
        if self._reader is None:
            self._out, self.stdout = self.stdout, None
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _rest(self, timeout: float) -> str:
        """The stdout lines not yet taken, once the reader has seen the end."""
        if self._reader is None:
            return ""
        self._reader.join(timeout)
        rest = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)       # the end stays visible to line()
                break
            rest.append(line)
        return "".join(rest)

    def _stderr_tail(self) -> str:
        try:
            return self.stderr.read()[-4000:] if self.stderr else ""
        except (OSError, ValueError):
            return ""

    def line(self, timeout: float = DEADLINE) -> str:
        """The next line the child prints, without its line ending.  Fails the
        test if none comes within TIMEOUT seconds (the child is then killed)
        or if the child ends first; the message shows the child's stderr."""
        __tracebackhide__ = True    # a failure points at the test's line, not here
        self._start_reader()
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.reap()
            pytest.fail(f"child {self.pid} said nothing for {timeout} s; killed it; "
                        f"stderr:\n{self._stderr_tail()}")
        if line is None:
            self._lines.put(None)
            try:
                self.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.reap()
            pytest.fail(f"child {self.pid} ended (rc {self.returncode}) without a line; "
                        f"stderr:\n{self._stderr_tail()}")
        return line.rstrip("\r\n")

    def expect(self, text: str, timeout: float = DEADLINE) -> str:
        """``line()``, asserted to be TEXT."""
        __tracebackhide__ = True
        line = self.line(timeout)
        assert line == text, f"child {self.pid} said {line!r}, expected {text!r}"
        return line

    def send_line(self, text: str) -> None:
        """Write TEXT and a newline to the child's stdin, flushed."""
        __tracebackhide__ = True    # a child that is gone: BrokenPipeError at the test's line
        assert self.stdin is not None
        self.stdin.write(text + "\n")
        self.stdin.flush()

    def communicate(self, input: Optional[str] = None,
                    timeout: Optional[float] = None) -> Tuple[Any, Any]:
        out, err = super().communicate(input, timeout)
        if self._reader is not None:
            out = self._rest(DEADLINE if timeout is None else timeout)
        return out, err

    def finish(self, timeout: float = DEADLINE) -> str:
        """Close stdin, wait for the child to exit, assert it exited 0 (showing
        its stderr otherwise) and return the rest of its stdout."""
        __tracebackhide__ = True
        try:
            out, err = self.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.reap()
            pytest.fail(f"child {self.pid} did not finish within {timeout} s")
        assert self.returncode == 0, f"child {self.pid} failed (rc {self.returncode}):\n{err}"
        return str(out)

    def reap(self) -> None:
        """Kill the child if it still runs, wait for it, close the pipes.  Safe
        to call at any time, and again."""
        if self.poll() is None:
            self.kill()
        self.wait()
        if self._reader is not None:
            self._reader.join(DEADLINE)
        for pipe in (self.stdin, self.stdout, self._out):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def __exit__(self, *exc: object) -> None:
        self.reap()
        if self.stderr is not None:
            self.stderr.close()


class ChildFactory:
    """``pyshm_child(source, *args)`` and its methods: start a child process
    that imports this very pyshm (its folder goes first on ``PYTHONPATH``,
    ``PYTHONUNBUFFERED`` is set).  Arguments are passed as ``str(arg)``.
    Every child is killed if still running, and reaped, after the test."""

    def __init__(self) -> None:
        self.children: List[Child] = []

    def __call__(self, source: str, *args: object) -> Child:
        """Python SOURCE in a fresh interpreter, ARGS in ``sys.argv[1:]``."""
        return self.command(sys.executable, "-c", source, *args)

    def script(self, path: Union[str, "os.PathLike[str]"], *args: object) -> Child:
        """``python PATH ARGS...``"""
        return self.command(sys.executable, os.fspath(path), *args)

    def module(self, name: str, *args: object) -> Child:
        """``python -m NAME ARGS...``"""
        return self.command(sys.executable, "-m", name, *args)

    def command(self, *argv: object) -> Child:
        """Any program: ARGV[0] and its arguments, with the same environment."""
        child = Child([str(a) for a in argv])
        self.children.append(child)
        return child

    def reap_all(self) -> None:
        for child in self.children:
            child.reap()
            if child.stderr is not None:
                child.stderr.close()


@pytest.fixture
def pyshm_child(pyshm_names: NameFactory) -> Iterator[ChildFactory]:
    """Factory ``pyshm_child(source, *args)``: run Python SOURCE in a fresh
    interpreter with ARGS in ``sys.argv[1:]``; returns a Child (a
    ``subprocess.Popen`` with text pipes).  ``pyshm_child.script(path, *args)``,
    ``.module(name, *args)`` and ``.command(*argv)`` start other programs.
    Still-running children are killed, and all are reaped, after the test
    (before the test's names are removed, so that no child can make one again)."""
    factory = ChildFactory()
    yield factory
    factory.reap_all()
