"""The channel header's lock words and the liveness slots, seen from outside.

Mirrors src/core/ring.h (the offsets), src/platform/sync_linux.c and
src/platform/sync_win32.c (the slots).  A lock word holds 0 or its owner's
slot (plus WAITERS).

Linux: every attached Channel object holds an F_OFD_SETLK write lock on
one byte at SLOT_BASE + slot of the segment's file.  ``live_slots`` asks
the kernel which slot bytes are locked (F_OFD_GETLK from a description of
our own, which conflicts with every other), without any help from the
extension.

Windows: slot N is held while a kernel object named NAME#lvN (N in five
hex digits) exists.  ``win32_slot_held`` asks the kernel whether it does
(OpenEventW opens only an existing name).  Names cannot be listed, so an
object's own slot is read from a lock word while it holds the lock
(``own_owner``).
"""

from __future__ import annotations

import os
import struct
import sys

if sys.platform != "win32":     # Windows: slots are named objects, no fcntl
    import fcntl

# core/ring.h, version 3 (since 2): the lock words, a cache line each.
SEND_LOCK, RECV_LOCK = 192, 256
WRITE_CURSOR, READ_CURSOR = 64, 128
DATA_SEQ, SPACE_SEQ = 72, 136
DATA_WAITERS, SPACE_WAITERS = 76, 140

# platform/sync.h and sync_linux.c
WAITERS = 0x80000000
SLOT_BASE = 1 << 62
SLOT_MAX = 0xFFFFF

# struct flock on Linux x86-64 / arm64: l_type, l_whence, l_start, l_len,
# l_pid (native alignment pads after l_whence and at the end).
_FLOCK = struct.Struct("@hhqqi4x")

have_ofd_locks = sys.platform.startswith("linux") and hasattr(fcntl, "F_OFD_GETLK")


def _locked_range(fd: int, start: int, end: int):
    """A lock held by another description somewhere in bytes [start, end), as
    (start, length), or None."""
    arg = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, end - start, 0)
    typ, _, lstart, llen, _ = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, arg))
    if typ == fcntl.F_UNLCK:
        return None
    return lstart, llen


def live_slots(name: str) -> set[int]:
    """The liveness slots held in channel NAME's file right now."""
    fd = os.open(f"/dev/shm/{name}", os.O_RDONLY)
    found: set[int] = set()
    try:
        # Halve the range until each part holds no lock or is one byte: the
        # kernel reports one conflicting lock per question, not the lowest.
        todo = [(SLOT_BASE + 1, SLOT_BASE + SLOT_MAX + 1)]
        while todo:
            start, end = todo.pop()
            hit = _locked_range(fd, start, end)
            if hit is None:
                continue
            if end - start == 1:
                found.add(start - SLOT_BASE)
                continue
            mid = (start + end) // 2
            todo += [(start, mid), (mid, end)]
    finally:
        os.close(fd)
    return found


def win32_slot_held(name: str, slot: int) -> bool:
    """Whether slot SLOT of channel NAME is held (Windows): its name exists."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenEventW.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.LPCWSTR]
    kernel32.OpenEventW.restype = wintypes.HANDLE
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    synchronize, error_file_not_found = 0x00100000, 2
    handle = kernel32.OpenEventW(synchronize, False, f"{name}#lv{slot:05x}")
    if handle:
        kernel32.CloseHandle(handle)
        return True
    # Any other error (an object of another type under that name): taken.
    return ctypes.get_last_error() != error_file_not_found


def slot_held(name: str, slot: int) -> bool:
    """Whether liveness slot SLOT of channel NAME is held right now."""
    fd = os.open(f"/dev/shm/{name}", os.O_RDONLY)
    try:
        return _locked_range(fd, SLOT_BASE + slot, SLOT_BASE + slot + 1) is not None
    finally:
        os.close(fd)


def free_slot(name: str) -> int:
    """A slot number that no one holds (a 'dead owner' for a lock word)."""
    live = set() if sys.platform == "win32" else live_slots(name)
    slot = SLOT_MAX // 2 + 12345
    while slot in live or (sys.platform == "win32" and win32_slot_held(name, slot)):
        slot += 1
    return slot


class _Discard(Exception):
    pass


def own_owner(chan, name: str) -> int:
    """The owner id that CHAN (an open Channel on NAME) writes into a lock
    word: read from the send lock's word while CHAN holds that lock in a
    loan, which is then discarded.  So that the loan can be had whatever
    the channel holds (full, or corrupted by a test), the whole segment is
    saved, the send lock and the cursors cleared (an empty ring), and the
    segment put back afterwards byte for byte.  CHAN keeps the cleared read
    cursor as the last one it saw: a stale read cursor only understates the
    free space, which a sender then reads again (core/ring.c)."""
    import pyshm

    seen = None
    with pyshm.SharedMemory(name) as raw:
        saved = raw.read()
        try:
            raw.write(bytes(4), SEND_LOCK)
            raw.write(bytes(8), WRITE_CURSOR)
            raw.write(bytes(8), READ_CURSOR)
            with chan.reserve(0, timeout=0):
                seen = int.from_bytes(raw.read(4, SEND_LOCK), "little")
                raise _Discard
        except _Discard:
            pass
        finally:
            raw.write(saved)
    assert seen is not None
    return seen & ~WAITERS


# A process that holds the liveness slots of channel NAME (argv[1]) itself,
# all of them or all but KEEP (argv[2], 0 for none), with two F_OFD_SETLK
# range locks on a description of its own; says "holding" and keeps them
# until a line (or the end) on stdin.  No channel object may be attached
# when it starts (a held slot byte would refuse its range).
SLOT_HOG = r"""
import fcntl, os, struct, sys
name, keep = sys.argv[1], int(sys.argv[2])
SLOT_BASE, SLOT_MAX = 1 << 62, 0xFFFFF
flock = struct.Struct("@hhqqi4x")
fd = os.open("/dev/shm/" + name, os.O_RDWR)

def hold(first, last):
    if first <= last:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock.pack(fcntl.F_WRLCK, os.SEEK_SET,
                                                      SLOT_BASE + first, last - first + 1, 0))

if keep:
    hold(1, keep - 1)
    hold(keep + 1, SLOT_MAX)
else:
    hold(1, SLOT_MAX)
print("holding", flush=True)
sys.stdin.readline()
"""
