"""The channel header's lock words and the Linux liveness slots, seen from outside.

Mirrors src/core/ring.h (the offsets) and src/platform/sync_linux.c (the
slots): every attached Channel object holds an F_OFD_SETLK write lock on
one byte at SLOT_BASE + slot of the segment's file, and a lock word holds 0
or its owner's slot (plus WAITERS).  ``live_slots`` asks the kernel which
slot bytes are locked (F_OFD_GETLK from a description of our own, which
conflicts with every other), without any help from the extension.
"""

from __future__ import annotations

import os
import struct
import sys

if sys.platform != "win32":     # Windows: no slots (named mutexes), no fcntl
    import fcntl

# core/ring.h, version 3 (since 2): the lock words, a cache line each.
SEND_LOCK, RECV_LOCK = 192, 256
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


def slot_held(name: str, slot: int) -> bool:
    """Whether liveness slot SLOT of channel NAME is held right now."""
    fd = os.open(f"/dev/shm/{name}", os.O_RDONLY)
    try:
        return _locked_range(fd, SLOT_BASE + slot, SLOT_BASE + slot + 1) is not None
    finally:
        os.close(fd)


def free_slot(name: str) -> int:
    """A slot number that no one holds (a 'dead owner' for a lock word)."""
    live = live_slots(name)
    slot = SLOT_MAX // 2 + 12345
    while slot in live:
        slot += 1
    return slot


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
