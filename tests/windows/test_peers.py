"""Windows programs that are not pyshm, on the same memory.

* seed.exe (tests/c/win32/seed.c): the classic Win32 recipe this project
  exists for -- CreateFileMappingA on the paging file, a 0x100-byte view,
  sprintf in, printf out -- with no pyshm code at all; each side writes and
  the other reads, both ways.
* multiprocessing.shared_memory, which uses CreateFileMappingW on Windows
  too: both ways, with the Windows rule that an opener's size is whole pages.

shmpeer.exe (pyshm's own platform layer in C) is met in
segments/test_interop.py, which runs here as on Linux.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import pyshm

pytestmark = pytest.mark.skipif(
    sys.platform != "win32",
    reason="Windows programs (tools/winbuild.py test runs these in Windows Python under Wine)")


@pytest.fixture(scope="module")
def seed(c_programs: Path) -> str:
    return str(c_programs / "seed.exe")


def test_seed_creates_python_reads_and_replies(pyshm_child, pyshm_name, seed):
    creator = pyshm_child.command(seed, "create", pyshm_name, "data from process 1")
    creator.expect("ready")
    with pyshm.SharedMemory(pyshm_name) as shm:
        assert shm.size == pyshm.PAGE_SIZE          # 0x100 asked, a page seen
        assert shm.read().split(b"\0")[0] == b"data from process 1"
        shm.write(b"reply from python\0", 128)
    creator.send_line("")
    assert creator.finish() == "reply: reply from python\n"
    # seed closed the last handle: the name is gone.
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_python_creates_seed_reads(pyshm_child, pyshm_name, seed):
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100) as shm:
        shm.write(b"data from python\0")
        assert pyshm_child.command(seed, "read", pyshm_name).finish() == \
            "text: data from python\n"


def test_seed_sees_a_missing_name(pyshm_child, pyshm_name, seed):
    reader = pyshm_child.command(seed, "read", pyshm_name)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 1 and "OpenFileMapping failed (2)" in err


def test_exclusive_create_refuses_a_name_seed_made(pyshm_child, pyshm_name, seed):
    """CreateFileMapping opens an existing name; pyshm's create=True must
    not, and must leave seed's object as it was."""
    creator = pyshm_child.command(seed, "create", pyshm_name, "seed's own")
    creator.expect("ready")
    with pytest.raises(FileExistsError) as info:
        pyshm.SharedMemory(pyshm_name, create=True, size=1 << 20)
    assert info.value.filename == pyshm_name
    with pytest.raises(ValueError, match=f"size={pyshm.PAGE_SIZE}, smaller than"):
        pyshm.SharedMemory(pyshm_name, create=True, size=1 << 20, exist_ok=True)
    with pyshm.SharedMemory(pyshm_name, create=True, size=64, exist_ok=True) as shm:
        assert shm.size == pyshm.PAGE_SIZE          # seed's size (a page), not ours
        assert shm.read(10) == b"seed's own"
    creator.send_line("")
    assert creator.finish() == "reply: \n"


STDLIB_CREATE = """
import sys
from multiprocessing import shared_memory
s = shared_memory.SharedMemory(sys.argv[1], create=True, size=5000)
s.buf[:11] = b"from stdlib"
print("ready", flush=True)
sys.stdin.readline()
print(bytes(s.buf[64:70]).hex(), s.size, flush=True)
s.close()
"""


def test_pyshm_opens_a_stdlib_segment(pyshm_child, pyshm_name):
    child = pyshm_child(STDLIB_CREATE, pyshm_name)
    child.expect("ready")
    with pyshm.SharedMemory(pyshm_name) as shm:
        assert shm.size == 8192                     # 5000 rounded up to pages
        assert shm.read(11) == b"from stdlib"
        assert shm.read(3192, 5000) == bytes(3192)  # the pages' tail: zeros
        shm.write(b"pyshm!", 64)
    child.send_line("")
    # The standard library's creator keeps the size it asked for.
    assert child.finish() == f"{b'pyshm!'.hex()} 5000\n"


def test_stdlib_opens_a_pyshm_segment(pyshm_child, pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=5000) as shm:
        assert shm.size == 5000                     # the creator's exact size
        shm.write(b"from pyshm")
        child = pyshm_child(
            "import sys\n"
            "from multiprocessing import shared_memory\n"
            "s = shared_memory.SharedMemory(sys.argv[1])\n"
            "print(bytes(s.buf[:10]).decode(), s.size, flush=True)\n"
            "s.buf[64:70] = b'stdlib'\n"
            "s.close()\n", pyshm_name)
        assert child.finish() == "from pyshm 8192\n"
        assert shm.read(6, 64) == b"stdlib"
