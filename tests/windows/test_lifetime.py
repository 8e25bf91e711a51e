"""Windows segments between Windows Python processes: lifetime and size.

docs/windows.md, platform differences: a name lives until the last handle to it
closes, in any process (unlink() does nothing); a segment over 4 GiB needs
both words of CreateFileMappingW's size (WINDOWS-TESTING.md measured one of
4 GiB + 64 KiB across processes in ~20 ms under Wine).
"""

from __future__ import annotations

import sys

import pytest

import pyshm

pytestmark = pytest.mark.skipif(
    sys.platform != "win32",
    reason="Windows rules (tools/winbuild.py test runs these in Windows Python under Wine)")

HOLDER = """
import sys, pyshm
shm = pyshm.SharedMemory(sys.argv[1], create=True, size=int(sys.argv[2]))
shm.write(b"made by the child")
print("ready", flush=True)
sys.stdin.readline()
shm.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def test_the_name_lives_while_any_process_holds_it(pyshm_child, pyshm_name):
    child = pyshm_child(HOLDER, pyshm_name, 4096)
    child.expect("ready")
    mine = pyshm.SharedMemory(pyshm_name)
    child.send_line("close")
    child.expect("closed")
    # The creator closed, and still exits later: our handle keeps the name.
    with pyshm.SharedMemory(pyshm_name) as again:
        assert again.read(17) == b"made by the child"
    child.send_line("exit")
    child.finish()
    pyshm.unlink(pyshm_name)                 # does nothing
    with pyshm.SharedMemory(pyshm_name) as again:
        assert again.read(17) == b"made by the child"
    mine.close()                             # the last handle
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)
    # A fresh create of that name starts from zeros.
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096) as fresh:
        assert fresh.read(17) == bytes(17)


OPEN_LARGE = """
import sys, pyshm
with pyshm.SharedMemory(sys.argv[1]) as shm:
    print(shm.size, shm.read(8, shm.size - 8).decode(), flush=True)
    shm.write(b"head", 0)
    shm.write(b"past4GiB", 1 << 32)
"""


def test_a_segment_over_4_gib_between_processes(pyshm_child, pyshm_name):
    size = (4 << 30) + (64 << 10)            # needs dwMaximumSizeHigh
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as shm:
        assert shm.size == size
        shm.write(b"the tail", size - 8)
        child = pyshm_child(OPEN_LARGE, pyshm_name)
        # A whole number of pages: the opener sees exactly this size.
        assert child.finish() == f"{size} the tail\n"
        assert shm.read(4) == b"head"
        assert shm.read(8, 1 << 32) == b"past4GiB"
        assert shm.read(8, (64 << 10) - 8) == bytes(8)   # where a dropped high word would end
