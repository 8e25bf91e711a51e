"""Leaks: 20,000 SharedMemory create/open/use/close cycles keep descriptors
(Windows: handles and mapped views), names and memory flat (the Channel
counterpart is channels/test_leaks.py).

Each cycle creates a segment, writes it, opens it again read-only and reads
it through a view and with read(), is refused an exclusive create, opens it
with exist_ok, and unlinks.  Every tenth cycle also takes the error paths --
a missing name, a negative size, a write to a read-only
object, an offset past the end, close() refused while a view lives, a
forgotten close() -- each asserted with pytest.raises, so that a call that
wrongly succeeds fails the test.  assert_no_leaks (tests/conftest.py)
checks descriptors, names, and the memory a cycle keeps, measured per cycle
after a warm-up.
"""

from __future__ import annotations

import pytest

import pyshm


def test_twenty_thousand_cycles_leak_nothing(pyshm_names, assert_no_leaks):
    name, missing = pyshm_names(), pyshm_names()

    def errors(a: pyshm.SharedMemory, b: pyshm.SharedMemory) -> None:
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(missing)
        with pytest.raises(ValueError):
            pyshm.SharedMemory(missing, create=True, size=-1)
        with pytest.raises(TypeError):
            b.write(b"read-only")
        with pytest.raises(ValueError):
            a.read(8, a.size)
        view = a.buf[:8]                        # close() releases buf, not a slice of it
        with pytest.raises(BufferError):
            a.close()
        view.release()
        # Left to the garbage collector: dealloc must release the mapping.
        pyshm.SharedMemory(name)

    def cycle(i: int) -> None:
        data = i.to_bytes(8, "little")
        with pyshm.SharedMemory(name, create=True, size=4096) as a:
            a.write(data)
            with pyshm.SharedMemory(name, readonly=True) as b:
                view = b.buf
                assert view[:8] == data
                view.release()
                assert b.read(8) == data
                if i % 10 == 0:
                    errors(a, b)
            with pytest.raises(FileExistsError):
                pyshm.SharedMemory(name, create=True, size=4096)
            with pyshm.SharedMemory(name, create=True, size=4096, exist_ok=True) as c:
                assert c.read(8) == data
            with pytest.raises(ValueError):     # smaller than asked: mapped, refused, unmapped
                pyshm.SharedMemory(name, create=True, size=1 << 20, exist_ok=True)
            a.unlink()

    assert_no_leaks(cycle)
