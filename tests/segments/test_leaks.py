"""Leaks: 20,000 SharedMemory create/open/use/close cycles keep descriptors
(Windows: handles and mapped views), names and memory flat (the Channel
counterpart is channels/test_leaks.py)."""

from __future__ import annotations

import pyshm


def test_twenty_thousand_cycles_leak_nothing(pyshm_name, assert_no_leaks):
    name = pyshm_name

    def cycle(i: int) -> None:
        with pyshm.SharedMemory(name, create=True, size=4096) as a:
            a.write(i.to_bytes(8, "little"))
            with pyshm.SharedMemory(name, readonly=True) as b:
                view = b.buf
                assert view[:8] == i.to_bytes(8, "little")
                view.release()
                assert b.read(8) == i.to_bytes(8, "little")
            try:
                pyshm.SharedMemory(name, create=True, size=4096)
            except FileExistsError:
                pass
            try:        # exist_ok on a smaller segment: mapped, refused, unmapped
                pyshm.SharedMemory(name, create=True, size=1 << 20, exist_ok=True)
            except ValueError:
                pass
            a.unlink()

    assert_no_leaks(cycle)

