"""Windows names: passed to the OS unchanged, Local\\ and Global\\ included.

docs/windows.md, platform differences: a Windows name keeps its namespace prefix,
counts UTF-16 characters (at most 250), and a name without a prefix lives in
the session's Local\\ namespace.  Each name is used by a second Windows
Python process too, since a name only matters between processes.
(Wine does not check the privilege Global\\ needs outside session 0: that
part of Windows is not covered here.)
"""

from __future__ import annotations

import sys

import pytest

import pyshm

pytestmark = pytest.mark.skipif(
    sys.platform != "win32",
    reason="Windows names (tools/winbuild.py test runs these in Windows Python under Wine)")

READ = """
import sys, pyshm
with pyshm.SharedMemory(sys.argv[1]) as shm:
    print(shm.read(int(sys.argv[2])).decode(), flush=True)
    shm.write(b"child was here", 64)
"""


def exchange(name: str, pyshm_child) -> None:
    """Create NAME here, have a child open it by NAME, read and reply."""
    with pyshm.SharedMemory(name, create=True, size=4096) as shm:
        assert shm.name == name                 # unchanged, prefix and all
        shm.write(b"parent wrote this")
        child = pyshm_child(READ, name, 17)
        assert child.finish() == "parent wrote this\n"
        assert shm.read(14, 64) == b"child was here"


@pytest.mark.parametrize("prefix", ["Local\\", "Global\\"])
def test_namespace_prefixes_work_between_processes(pyshm_name, pyshm_child, prefix):
    exchange(prefix + pyshm_name, pyshm_child)


def test_a_bare_name_is_in_the_local_namespace(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096) as shm:
        shm.write(b"one object")
        with pyshm.SharedMemory("Local\\" + pyshm_name) as same:
            assert same.read(10) == b"one object"
        with pytest.raises(FileExistsError):
            pyshm.SharedMemory("Local\\" + pyshm_name, create=True, size=4096)
        # Global\ is another namespace: nothing of that name there.
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory("Global\\" + pyshm_name)


@pytest.mark.parametrize("prefix", ["Local\\", "Global\\"])
def test_channels_with_prefixed_names(pyshm_names, pyshm_child, prefix):
    """A channel's sync objects are named after it: a prefix must carry over."""
    requests, replies = prefix + pyshm_names(), prefix + pyshm_names()
    with pyshm.Channel(requests, create=True, capacity=4096) as req, \
            pyshm.Channel(replies, create=True, capacity=4096) as rep:
        child = pyshm_child(
            "import sys, pyshm\n"
            "with pyshm.Channel(sys.argv[1]) as req, pyshm.Channel(sys.argv[2]) as rep:\n"
            "    rep.send(req.recv(timeout=60)[::-1], timeout=60)\n", requests, replies)
        req.send(b"olleh")
        assert rep.recv(timeout=60) == b"hello"
        child.finish()


@pytest.mark.parametrize("name", [
    "\u00e9" * 126,             # 252 bytes in UTF-8, too long on POSIX; 126 characters here
    "\u00e9" * 250,             # the limit, in characters
    "caf\u00e9 \u2615 \U0001f600",  # beyond the BMP: a surrogate pair in UTF-16
    "\ud800",                   # a lone surrogate is a valid UTF-16 name
])
def test_utf16_names(pyshm_child, name):
    # The session prefix is left out on purpose: these names are the test.
    try:
        exchange(name, pyshm_child)
    finally:
        pyshm.unlink(name)      # does nothing on Windows; kept for symmetry


def test_a_backslash_names_a_namespace(pyshm_name):
    """'\\' separates a namespace from the name: one that names no namespace
    is the OS's refusal (ERROR_PATH_NOT_FOUND), with the name attached."""
    for name in ("nowhere\\" + pyshm_name, "Local\\nowhere\\" + pyshm_name):
        with pytest.raises(FileNotFoundError) as info:
            pyshm.SharedMemory(name, create=True, size=8)
        assert info.value.winerror == 3 and info.value.filename == name  # type: ignore[attr-defined]


def test_too_long_counts_characters():
    with pytest.raises(ValueError, match="too long"):
        pyshm.SharedMemory("\u00e9" * 251, create=True, size=8)
