"""A slot's shared layout, seen from outside (raw SharedMemory views).

Mirrors src/core/slot.h (docs/format.md, "The slot"): the header, the cells,
the words a writer and a reader move.  test_hostile_memory.py holds these
numbers against the compiler's view (tests/c/format_consts) where it can
build it.
"""

from __future__ import annotations

import struct

import pyshm

HEADER = 512                # SLOT_HEADER_SIZE: cell 0's offset
CELL_HEAD = 128             # SLOT_CELL_HEADER: a value's offset in its cell
CELLS = 4                   # SLOT_CELLS: cells of a slot pyshm creates
GEN_SHIFT = 8               # latest = (generation << 8) | cell
BUSY = 1 << 63              # SLOT_BUSY in a cell's state

# slot_header
MAGIC, VERSION, HEADER_SIZE, NCELLS = 0, 4, 8, 12
VALUE_SIZE, CELL_SIZE = 16, 24
SYNC_KIND, SYNC_DOMAIN, CREATOR_PID = 32, 36, 40
LATEST, GEN_SEQ, GEN_WAITERS, PUBLISH_CPU = 64, 72, 76, 80
WRITE_LOCK = 128

# slot_cell, from the cell's start
STATE, LENGTH, MARKS = 0, 8, 64

WAITERS = 0x80000000        # platform/sync.h: a sleeper's bit in a lock or wait word

U32, U64 = struct.Struct("<I"), struct.Struct("<Q")


def cell_size(value_size: int) -> int:
    """Bytes from one cell to the next (the value padded to 64)."""
    return CELL_HEAD + (value_size + 63) // 64 * 64


def cell_at(value_size: int, i: int) -> int:
    """The offset of cell I in the segment."""
    return HEADER + i * cell_size(value_size)


def latest(raw: bytes) -> tuple[int, int]:
    """(generation, cell) that the header's latest word names."""
    word, = U64.unpack_from(raw, LATEST)
    return word >> GEN_SHIFT, word & 0xFF


def cell_value(raw: bytes, value_size: int, i: int) -> tuple[int, bytes]:
    """(state, value bytes by its length word) of cell I."""
    at = cell_at(value_size, i)
    state, length = struct.unpack_from("<QQ", raw, at)
    return state, raw[at + CELL_HEAD:at + CELL_HEAD + min(length, value_size)]


def lock_word(name: str) -> int:
    """Slot NAME's write lock word now (0: free), through a raw view."""
    with pyshm.SharedMemory(name, readonly=True) as raw:
        return U32.unpack(raw.read(4, WRITE_LOCK))[0]
