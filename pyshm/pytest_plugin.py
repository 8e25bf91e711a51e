"""pytest fixtures for code that uses pyshm (active wherever pyshm is installed).

    def test_exchange(pyshm_segment, pyshm_child):
        shm = pyshm_segment(64)
        shm.write(b"ping")
        child = pyshm_child(
            "import pyshm, sys\\n"
            "print(pyshm.SharedMemory(sys.argv[1]).read(4).decode())",
            shm.name)
        out, err = child.communicate(timeout=30)
        assert out.strip() == "ping"

Fixtures:
  pyshm_name     a fresh unique name; whatever was created under it is removed
  pyshm_segment  factory: pyshm_segment(size, name=None) -> SharedMemory
  pyshm_channel  factory: pyshm_channel(capacity=..., name=None) -> Channel
  pyshm_child    factory: pyshm_child(source, *args) -> subprocess.Popen
                 (fresh interpreter that imports this pyshm; text-mode
                 stdin/stdout/stderr pipes; killed if running and reaped)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import pyshm

__all__ = ["pyshm_name", "pyshm_segment", "pyshm_channel", "pyshm_child"]


def _fresh_name() -> str:
    # 14 characters at most, like pyshm's own random names: portable to the
    # BSDs, and recognisable as a test's.
    return "pyt_" + secrets.token_hex(5)


def _remove(name: str) -> None:
    try:
        pyshm.unlink(name)
    except FileNotFoundError:
        pass


def _child_env() -> Dict[str, str]:
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyshm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def pyshm_name() -> Iterator[str]:
    """A fresh unique segment name; anything created under it is removed after the test."""
    name = _fresh_name()
    yield name
    _remove(name)


@pytest.fixture
def pyshm_segment() -> Iterator[Callable[..., "pyshm.SharedMemory"]]:
    """Factory ``pyshm_segment(size, name=None)``: a new SharedMemory, closed and
    removed after the test."""
    made: List[pyshm.SharedMemory] = []

    def make(size: int, name: Optional[str] = None) -> pyshm.SharedMemory:
        shm = pyshm.SharedMemory(name or _fresh_name(), create=True, size=size)
        made.append(shm)
        return shm

    yield make
    _close_all(made)


@pytest.fixture
def pyshm_channel() -> Iterator[Callable[..., Any]]:
    """Factory ``pyshm_channel(capacity=1 << 20, name=None)``: a new Channel,
    closed and removed after the test."""
    made: List[Any] = []

    def make(capacity: int = 1 << 20, name: Optional[str] = None) -> Any:
        chan = pyshm.Channel(name or _fresh_name(), create=True, capacity=capacity)
        made.append(chan)
        return chan

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


@pytest.fixture
def pyshm_child() -> Iterator[Callable[..., "subprocess.Popen[str]"]]:
    """Factory ``pyshm_child(source, *args)``: run Python SOURCE in a fresh
    interpreter with ARGS in ``sys.argv[1:]``; returns the Popen (text pipes).
    Still-running children are killed, and all are reaped, after the test."""
    procs: List["subprocess.Popen[str]"] = []

    def start(source: str, *args: str) -> "subprocess.Popen[str]":
        proc = subprocess.Popen(
            [sys.executable, "-c", source, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=_child_env(),
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=30)
        except (subprocess.TimeoutExpired, ValueError):
            pass
        proc.wait()
