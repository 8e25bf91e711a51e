"""SharedMemory between Python processes: the design card's test.

Process A creates a segment and writes; process B opens it by name, checks
what A wrote and replies at another offset; A reads the reply.  The parent
(pytest) only starts them (the roles are in peer.py), relays the handshake
and compares digests.  Peers that are not pyshm (the standard library, a C
program) are in test_interop.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import pyshm

from .peer import pattern, regions

PEER = Path(__file__).with_name("peer.py")     # the child roles

SIZES = [1, 2, 4095, 4096, 4097, 0x100, 1 << 20, (1 << 20) + 3]


def exchange(pyshm_child, name: str, size: int) -> None:
    a = pyshm_child.script(PEER, "create", name, str(size), "7")
    a.expect("ready")
    b = pyshm_child.script(PEER, "answer", name, "7", "11")
    b.expect("ok")
    b.finish()
    a.send_line("go")
    digest = a.line()
    a.finish()
    _, _, reply = regions(size)
    assert digest == hashlib.sha256(pattern(11, reply[1])).hexdigest()


@pytest.mark.parametrize("size", SIZES)
def test_two_processes_exchange_both_ways(pyshm_child, pyshm_name, size):
    exchange(pyshm_child, pyshm_name, size)


def test_two_processes_one_gib(pyshm_child, pyshm_name):
    # 1 GiB: reserved up front on tmpfs (no SIGBUS later), touched only at
    # the ends and in the middle.
    exchange(pyshm_child, pyshm_name, 1 << 30)


def test_seed_scenario_strings(pyshm_child, pyshm_name):
    """The Windows recipe's exchange: a NUL-terminated string each way."""
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100) as shm:
        shm.write(b"data from process 1\0")
        b = pyshm_child.script(PEER, "poke", pyshm_name, "128", b"reply from process 2\0".hex())
        b.expect("done")
        b.finish()
        assert shm.read(21, 128) == b"reply from process 2\0"
        text = pyshm_child((
            "import pyshm, sys; s = pyshm.SharedMemory(sys.argv[1]); "
            "print(s.read().split(b'\\0')[0].decode(), flush=True); s.close()"
        ), pyshm_name)
        assert text.finish().strip() == "data from process 1"


def test_child_writes_while_parent_holds_memoryview(pyshm_child, pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8192) as shm:
        view = memoryview(shm)      # a view of the user's own: it pins the mapping
        try:
            assert view[4000:4004] == b"\0\0\0\0"
            child = pyshm_child.script(PEER, "poke", pyshm_name, "4000", "deadbeef")
            child.expect("done")
            child.finish()
            # The parent's long-lived view sees the child's write: same pages.
            assert view[4000:4004] == bytes.fromhex("deadbeef")
            with pytest.raises(BufferError):
                shm.close()
            assert not shm.closed
            assert shm.read(4, 4000) == bytes.fromhex("deadbeef")
        finally:
            view.release()
