"""Real peers see the same bytes: the standard library and a C program."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import pyshm
from conftest import expect_line, finish, source_dir

C_DIR = Path(__file__).resolve().parent.parent / "c"
SHMPEER = C_DIR / "build" / "shmpeer"


def test_stdlib_opens_pyshm_segment(children, shm_name):
    with pyshm.SharedMemory(shm_name, create=True, size=4096) as shm:
        shm.write(b"from pyshm")
        child = children.peer("stdlib-read", shm_name, "10")
        assert bytes.fromhex(expect_line(child)) == b"from pyshm"
        finish(child)
        assert shm.read(6, 64) == b"stdlib"


def test_pyshm_opens_stdlib_segment(children, shm_name):
    child = children.peer("stdlib-create", shm_name, b"from stdlib".hex())
    expect_line(child, "ready")
    with pyshm.SharedMemory(shm_name) as shm:
        assert shm.read(11) == b"from stdlib"
        # The standard library rounds nothing on Linux: 4096 as asked.
        assert shm.size == 4096
        shm.write(b"pyshm!", 64)
    child.stdin.write("go\n")
    child.stdin.flush()
    assert bytes.fromhex(expect_line(child)) == b"pyshm!"
    finish(child)


@pytest.fixture(scope="module")
def shmpeer():
    """The native C peer, built with make -C tests/c."""
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        if os.environ.get("CI"):
            pytest.fail("make and a C compiler are required in CI")
        pytest.skip("make or a C compiler is missing")
    src = source_dir() / "src"
    result = subprocess.run(["make", "-C", str(C_DIR), "native", f"SRC={src}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(SHMPEER)


def test_c_peer_reads_pyshm_and_replies(children, shm_name, shmpeer):
    with pyshm.SharedMemory(shm_name, create=True, size=0x100) as shm:
        shm.write(b"data from python\0")
        peer = children.start(shmpeer, "read", shm_name, "reply from C", python=False)
        assert finish(peer) == "data from python\n"
        assert shm.read(13, 128) == b"reply from C\0"


def test_pyshm_reads_c_peer_and_replies(children, shm_name, shmpeer):
    peer = children.start(shmpeer, "serve", shm_name, "256", "data from C", python=False)
    expect_line(peer, "ready")
    with pyshm.SharedMemory(shm_name) as shm:
        assert shm.size == 256
        assert shm.read(12) == b"data from C\0"
        shm.write(b"reply from python\0", 128)
        # The C side's mapping is live: a second C reader sees our reply.
        reader = children.start(shmpeer, "read", shm_name, python=False)
        assert finish(reader) == "data from C\n"
        assert shm.read(18, 128) == b"reply from python\0"
    peer.stdin.write("\n")
    peer.stdin.flush()
    finish(peer)
    # shmpeer serve removes the name when it is done.
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(shm_name)


def test_c_peer_reports_missing_name(children, shm_name, shmpeer):
    peer = children.start(shmpeer, "read", shm_name, python=False)
    out, err = peer.communicate(timeout=30)
    assert peer.returncode == 1
    assert "shm_open" in err
