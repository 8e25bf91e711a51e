"""The design card's test: two Python processes share a named segment.

Process A creates a segment and writes; process B opens it by name, checks
what A wrote and replies at another offset; A reads the reply.  The parent
(pytest) only starts them, relays the handshake and compares digests.
"""

from __future__ import annotations

import hashlib

import pytest

import pyshm
from conftest import expect_line, finish

from .peer import pattern, regions

SIZES = [1, 2, 4095, 4096, 4097, 0x100, 1 << 20, (1 << 20) + 3]


def exchange(children, name: str, size: int) -> None:
    a = children.peer("create", name, str(size), "7")
    expect_line(a, "ready")
    b = children.peer("answer", name, "7", "11")
    expect_line(b, "ok")
    finish(b)
    a.stdin.write("go\n")
    a.stdin.flush()
    digest = expect_line(a)
    finish(a)
    _, _, reply = regions(size)
    assert digest == hashlib.sha256(pattern(11, reply[1])).hexdigest()


@pytest.mark.parametrize("size", SIZES)
def test_two_processes_exchange_both_ways(children, shm_name, size):
    exchange(children, shm_name, size)


def test_two_processes_one_gib(children, shm_name):
    # 1 GiB: reserved up front on tmpfs (no SIGBUS later), touched only at
    # the ends and in the middle.
    exchange(children, shm_name, 1 << 30)


def test_seed_scenario_strings(children, shm_name):
    """The Windows recipe's exchange: a NUL-terminated string each way."""
    with pyshm.SharedMemory(shm_name, create=True, size=0x100) as shm:
        shm.write(b"data from process 1\0")
        b = children.peer("poke", shm_name, "128", b"reply from process 2\0".hex())
        expect_line(b, "done")
        finish(b)
        assert shm.read(21, 128) == b"reply from process 2\0"
        text = children.start("-c", (
            "import pyshm, sys; s = pyshm.SharedMemory(sys.argv[1]); "
            "print(s.read().split(b'\\0')[0].decode(), flush=True); s.close()"
        ), shm_name)
        assert finish(text).strip() == "data from process 1"


def test_child_writes_while_parent_holds_memoryview(children, shm_name):
    with pyshm.SharedMemory(shm_name, create=True, size=8192) as shm:
        view = shm.buf
        try:
            assert view[4000:4004] == b"\0\0\0\0"
            child = children.peer("poke", shm_name, "4000", "deadbeef")
            expect_line(child, "done")
            finish(child)
            # The parent's long-lived view sees the child's write: same pages.
            assert view[4000:4004] == bytes.fromhex("deadbeef")
            with pytest.raises(BufferError):
                shm.close()
            assert not shm.closed
            assert shm.read(4, 4000) == bytes.fromhex("deadbeef")
        finally:
            view.release()
