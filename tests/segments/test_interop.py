"""Real peers see the same bytes: the standard library and a C program.

On Windows the C program is shmpeer.exe, cross-built on the host with
mingw-w64 (conftest's c_programs); tests/windows/ adds seed.exe, the
classic Win32 recipe with no pyshm code at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import pyshm

from .peer import opened_size

PEER = Path(__file__).with_name("peer.py")     # the Python child roles
WINDOWS = sys.platform == "win32"


def test_stdlib_opens_pyshm_segment(pyshm_child, pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096) as shm:
        shm.write(b"from pyshm")
        child = pyshm_child.script(PEER, "stdlib-read", pyshm_name, "10")
        assert bytes.fromhex(child.line()) == b"from pyshm"
        child.finish()
        assert shm.read(6, 64) == b"stdlib"


def test_pyshm_opens_stdlib_segment(pyshm_child, pyshm_name):
    child = pyshm_child.script(PEER, "stdlib-create", pyshm_name, b"from stdlib".hex())
    child.expect("ready")
    with pyshm.SharedMemory(pyshm_name) as shm:
        assert shm.read(11) == b"from stdlib"
        # 4096 as asked (a whole page: nothing to round on Windows either).
        assert shm.size == opened_size(4096) == 4096
        shm.write(b"pyshm!", 64)
    child.send_line("go")
    assert bytes.fromhex(child.line()) == b"pyshm!"
    child.finish()


@pytest.fixture(scope="module")
def shmpeer(c_programs):
    """The native C peer (tests/c/shmpeer.c)."""
    return str(c_programs / ("shmpeer.exe" if WINDOWS else "shmpeer"))


def test_c_peer_reads_pyshm_and_replies(pyshm_child, pyshm_name, shmpeer):
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100) as shm:
        shm.write(b"data from python\0")
        peer = pyshm_child.command(shmpeer, "read", pyshm_name, "reply from C")
        assert peer.finish() == "data from python\n"
        assert shm.read(13, 128) == b"reply from C\0"


def test_pyshm_reads_c_peer_and_replies(pyshm_child, pyshm_name, shmpeer):
    peer = pyshm_child.command(shmpeer, "serve", pyshm_name, "256", "data from C")
    peer.expect("ready")
    with pyshm.SharedMemory(pyshm_name) as shm:
        assert shm.size == opened_size(256)
        assert shm.read(12) == b"data from C\0"
        shm.write(b"reply from python\0", 128)
        # The C side's mapping is live: a second C reader sees our reply.
        reader = pyshm_child.command(shmpeer, "read", pyshm_name)
        assert reader.finish() == "data from C\n"
        assert shm.read(18, 128) == b"reply from python\0"
    peer.send_line("")
    peer.finish()
    # shmpeer serve removes the name when it is done (Windows: its handle,
    # the last one, closed).
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_c_peer_reports_missing_name(pyshm_child, pyshm_name, shmpeer):
    peer = pyshm_child.command(shmpeer, "read", pyshm_name)
    out, err = peer.communicate(timeout=30)
    assert peer.returncode == 1
    assert ("OpenFileMappingW failed (OS error 2)" if WINDOWS else "shm_open") in err
