"""Self-checking slot values, for the tests of this folder and their children.

A value's head says who wrote it (tid, seq) and how long it is; its tail is
the SHA-256 of the rest: a read that mixes two values, or cuts one short,
fails ``is_whole`` whoever made it.  Child processes import this file by
path (sys.path gets this folder).
"""

from __future__ import annotations

import hashlib
import struct

HEAD = struct.Struct("<III")    # tid, seq, length


def value(tid: int, seq: int, size: int) -> bytes:
    """Writer TID's value number SEQ, 44 to SIZE bytes long (SIZE >= 44)."""
    n = 44 + (tid * 131 + seq * 17) % (size - 43)
    head = HEAD.pack(tid, seq, n)
    body = (head * (n // 12 + 1))[:n - 44]
    return head + body + hashlib.sha256(head + body).digest()


def is_whole(data: bytes) -> bool:
    """DATA is one value as value() made it (or b"": nothing published yet)."""
    if data == b"":
        return True
    if len(data) < 44:
        return False
    _, _, n = HEAD.unpack_from(data)
    return len(data) == n and hashlib.sha256(data[:-32]).digest() == data[-32:]
