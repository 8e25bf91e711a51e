"""pyshm ls, info, create, write, cat, rm: segments (raw or channel) from the shell."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Iterator, List, Optional, Tuple

import pyshm
from pyshm._units import parse_size
from pyshm.cli import Command, _input_bytes, _message, _output_bytes

DEV_SHM = "/dev/shm"


def _describe(name: str) -> Tuple[str, Optional[int], Optional[int]]:
    """(kind, capacity, queued bytes) of segment NAME: 'channel' or 'raw'."""
    try:
        chan = pyshm.Channel(name)
    except (pyshm.ProtocolError, ValueError):
        return "raw", None, None
    try:
        return "channel", chan.capacity, chan.queued
    finally:
        chan.close()


def _listable() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir(DEV_SHM)


def _entries() -> Iterator[Tuple[str, os.stat_result]]:
    for entry in sorted(os.listdir(DEV_SHM)):
        path = os.path.join(DEV_SHM, entry)
        try:
            st = os.stat(path)
        except OSError:
            continue
        # POSIX named semaphores live here too, as "sem.NAME": not segments.
        if stat.S_ISREG(st.st_mode) and not entry.startswith("sem."):
            yield entry, st


def cmd_ls(args: argparse.Namespace) -> int:
    if not _listable():
        print(f"pyshm ls: this OS offers no way to list shared memory segments "
              f"({sys.platform}); open one by name with `pyshm info NAME`", file=sys.stderr)
        return 1
    rows: List[Tuple[str, ...]] = []
    for name, st in _entries():
        try:
            kind, capacity, queued = _describe(name)
        except PermissionError:
            kind, capacity, queued = "?", None, None
        except OSError:
            continue    # removed while we looked
        rows.append((name, str(st.st_size), kind,
                     "" if capacity is None else str(capacity),
                     "" if queued is None else str(queued)))
    header = ("NAME", "SIZE", "KIND", "CAPACITY", "QUEUED")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with pyshm.SharedMemory(args.name, readonly=True) as shm:
        size = shm.size
    kind, capacity, queued = _describe(args.name)
    print(f"name:     {args.name}")
    print(f"size:     {size}")
    print(f"kind:     {kind}")
    if capacity is not None:
        print(f"capacity: {capacity}")
    if queued is not None:
        print(f"queued:   {queued}")
    if _listable():
        st = os.stat(os.path.join(DEV_SHM, args.name))
        print(f"mode:     {stat.filemode(st.st_mode)} ({st.st_mode & 0o7777:#o})")
        print(f"owner:    uid {st.st_uid}, gid {st.st_gid}")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    if args.channel:
        with pyshm.Channel(args.name, create=True, capacity=args.size) as chan:
            print(f"created channel {chan.name!r}, capacity {chan.capacity}")
        return 0
    with pyshm.SharedMemory(args.name, create=True, size=args.size) as shm:
        print(f"created {shm.name!r}, {shm.size} bytes")
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    payload = _input_bytes(args.data)
    with pyshm.SharedMemory(args.name) as shm:
        count = shm.write(payload, args.offset)
    print(f"wrote {count} bytes at offset {args.offset}", file=sys.stderr)
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    with pyshm.SharedMemory(args.name, readonly=True) as shm:
        data = shm.read(-1 if args.size is None else args.size, args.offset)
    _output_bytes(data)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        try:
            pyshm.unlink(name)
        except (OSError, ValueError) as exc:
            print(f"pyshm rm: {_message(exc)}", file=sys.stderr)
            status = 1
    return status


def add_commands(command: Command) -> None:
    command("ls", cmd_ls, "list segments (name, size, kind; channel capacity and queue)",
            "List shared memory segments with their size and kind (channel or raw); "
            "for channels also capacity and bytes queued.  Linux reads /dev/shm; "
            "other systems offer no listing.")

    p = command("info", cmd_info, "show one segment's size, kind, mode and owner")
    p.add_argument("name")

    p = command("create", cmd_create, "create a segment (or a channel with --channel)",
                "Create a raw segment of SIZE bytes, or with --channel a channel of "
                "capacity SIZE.  SIZE takes suffixes: 4096, 0x100, 64K, 1M, 2G.")
    p.add_argument("name")
    p.add_argument("size", type=parse_size)
    p.add_argument("--channel", action="store_true", help="create a Channel")

    p = command("write", cmd_write, "write DATA (or stdin) into a segment",
                "Write DATA (UTF-8) or, when DATA is absent, all of standard input "
                "into segment NAME at --offset.  All or nothing.")
    p.add_argument("name")
    p.add_argument("data", nargs="?")
    p.add_argument("--offset", type=parse_size, default=0)

    p = command("cat", cmd_cat, "copy a segment's bytes to stdout",
                "Write the raw bytes of segment NAME to standard output, from --offset, "
                "--size bytes (default: to the end).")
    p.add_argument("name")
    p.add_argument("--offset", type=parse_size, default=0)
    p.add_argument("--size", type=parse_size, default=None)

    p = command("rm", cmd_rm, "remove segment names",
                "Remove each NAME (POSIX shm_unlink); processes that have it mapped keep "
                "their mapping.  On Windows names die with their last handle.")
    p.add_argument("names", nargs="+", metavar="NAME")
