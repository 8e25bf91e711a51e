"""Child-process roles for the two-process tests (run as `python peer.py ROLE ...`).

Each role prints lines on stdout for the parent to read, flushing every time.

  create NAME SIZE SEED     create NAME (SIZE bytes), fill it with pattern(SEED) at
                            the start and at the end, print "ready", wait for a
                            line on stdin, then print the hex SHA-256 of the
                            reply region and exit (the parent unlinks)
  answer NAME SIZE SEED REPLY
                            open NAME, check that it has the size an opener of a
                            SIZE-byte segment sees here (Windows rounds it up to
                            a page), check pattern(SEED) at both ends of the
                            SIZE bytes, print "ok", write pattern(REPLY) into the
                            reply region
  poke NAME OFFSET HEX      open NAME, write bytes.fromhex(HEX) at OFFSET, print "done"
  stdlib-read NAME SIZE     open NAME with multiprocessing.shared_memory, print
                            the hex of the first SIZE bytes, write b"stdlib" at 64
  stdlib-create NAME HEX    create NAME with multiprocessing.shared_memory, write
                            HEX at 0, print "ready", wait for a line, print the
                            hex of bytes 64..70, unlink it
"""

from __future__ import annotations

import hashlib
import sys

import pyshm

CHUNK = 1 << 20  # patterns cover at most this much at each end


def pattern(seed: int, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def regions(size: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(offset, length) of the head, the tail and the reply region."""
    n = min(CHUNK, max(1, size // 4))
    head = (0, n)
    tail = (size - n, n)
    reply = (size // 2, min(n, size - size // 2))
    return head, tail, reply


def opened_size(size: int) -> int:
    """What an opener of a SIZE-byte segment sees (docs/windows.md, platform
    differences): the exact size on POSIX, whole pages on Windows."""
    if sys.platform == "win32":
        return -(-size // pyshm.PAGE_SIZE) * pyshm.PAGE_SIZE
    return size


def say(*words: object) -> None:
    print(*words, flush=True)


def main(argv: list[str]) -> int:
    role = argv[0]
    if role == "create":
        name, size, seed = argv[1], int(argv[2]), int(argv[3])
        with pyshm.SharedMemory(name, create=True, size=size) as shm:
            head, tail, reply = regions(size)
            for off, n in (head, tail):
                shm.write(pattern(seed, n), off)
            say("ready")
            sys.stdin.readline()
            say(hashlib.sha256(shm.read(reply[1], reply[0])).hexdigest())
        return 0
    if role == "answer":
        name, size, seed, rseed = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        with pyshm.SharedMemory(name) as shm:
            if shm.size != opened_size(size):
                say(f"opened {shm.size} bytes of a {size}-byte segment")
                return 1
            head, tail, reply = regions(size)
            for off, n in (head, tail):
                if shm.read(n, off) != pattern(seed, n):
                    say(f"mismatch at {off}")
                    return 1
            say("ok")
            shm.write(pattern(rseed, reply[1]), reply[0])
        return 0
    if role == "poke":
        name, offset, data = argv[1], int(argv[2]), bytes.fromhex(argv[3])
        with pyshm.SharedMemory(name) as shm:
            shm.write(data, offset)
        say("done")
        return 0
    if role in ("stdlib-read", "stdlib-create"):
        from multiprocessing import resource_tracker, shared_memory

        if role == "stdlib-read":
            name, n = argv[1], int(argv[2])
            s = shared_memory.SharedMemory(name)
            if sys.platform != "win32":
                # Python < 3.13 registers attached segments too and would
                # unlink this one at exit: it is not ours to remove.  (Windows
                # has no resource tracker for them, nor anything to unlink.)
                resource_tracker.unregister(s._name, "shared_memory")  # type: ignore[attr-defined]
            say(bytes(s.buf[:n]).hex())
            s.buf[64:70] = b"stdlib"
            s.close()
            return 0
        name, data = argv[1], bytes.fromhex(argv[2])
        s = shared_memory.SharedMemory(name, create=True, size=4096)
        s.buf[: len(data)] = data
        say("ready")
        sys.stdin.readline()
        say(bytes(s.buf[64:70]).hex())
        s.close()
        s.unlink()
        return 0
    print(f"unknown role {role!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
