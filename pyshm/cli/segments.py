"""pyshm ls, info, create, write, cat, rm: segments (raw or channel) from the shell.

``ls`` and ``info`` describe each segment as one record (:func:`describe`),
printed as a table or, with ``--json``, as JSON with the same keys.  Telling
a channel from a raw segment reads the first four bytes only (the channel
magic number): a raw segment is never opened as a channel.  Whether a
channel's creator still runs, and (Linux) which processes have a segment
mapped, are in :mod:`pyshm.cli.processes`.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import struct
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pyshm
from pyshm import _pyshm
from pyshm._units import human_size, parse_mode, parse_size
from pyshm.cli import (EXIT_ERROR, Command, _input_bytes, _message, _output_bytes, _shown,
                       _table)
from pyshm.cli.processes import attached_processes, creator_alive

DEV_SHM = "/dev/shm"

# The keys of every record, in the order --json prints them.  Channel keys
# are None for raw segments; mode, uid, gid and mtime are None where the OS
# gives no file to stat (not Linux).
KEYS = ("name", "size", "kind", "mode", "uid", "gid", "mtime", "capacity", "queued",
        "messages", "creator_pid", "creator_alive", "error")


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


def _head(name: str) -> bytes:
    """The first four bytes of segment NAME, read-only (less if it is smaller)."""
    if _listable():
        with open(os.path.join(DEV_SHM, name), "rb") as f:
            return f.read(4)
    with pyshm.SharedMemory(name, readonly=True) as shm:
        return shm.read(min(4, shm.size))


def _is_channel_head(head: bytes) -> bool:
    return len(head) == 4 and struct.unpack("=I", head)[0] == _pyshm._CHANNEL_MAGIC


def describe(name: str, st: Optional[os.stat_result]) -> Dict[str, Any]:
    """One segment as a record with the KEYS.  ST: its /dev/shm entry (Linux),
    else None.  Raises FileNotFoundError when it is gone."""
    record: Dict[str, Any] = dict.fromkeys(KEYS)
    record["name"] = name
    if st is not None:
        record.update(size=st.st_size, mode=f"{st.st_mode & 0o7777:#o}", uid=st.st_uid,
                      gid=st.st_gid, mtime=st.st_mtime)
    else:
        with pyshm.SharedMemory(name, readonly=True) as shm:
            record["size"] = shm.size
    try:
        head = _head(name)
    except FileNotFoundError:
        raise
    except OSError as exc:      # no read permission, say
        record.update(kind="unknown", error=_message(exc))
        return record
    if not _is_channel_head(head):
        # A channel's creator stores the magic number last; a raw segment
        # (zero-filled, or anything else) is never opened as a channel.
        record["kind"] = "raw"
        return record
    record["kind"] = "channel"
    try:
        with pyshm.Channel(name) as chan:
            record.update(capacity=chan.capacity, queued=chan.queued,
                          messages=chan.messages, creator_pid=chan.creator_pid)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pyshm.ProtocolError) as exc:
        record["error"] = _message(exc)
        return record
    record["creator_alive"] = creator_alive(record["creator_pid"],
                                            None if st is None else st.st_ctime)
    return record


def _records() -> List[Dict[str, Any]]:
    records = []
    for name, st in _entries():
        try:
            records.append(describe(name, st))
        except FileNotFoundError:
            continue    # removed while we looked
    return records


def _size_text(n: Optional[int], exact: bool) -> str:
    if n is None:
        return ""
    return str(n) if exact else human_size(n)


def _creator_text(record: Dict[str, Any]) -> str:
    pid, alive = record["creator_pid"], record["creator_alive"]
    if not pid:
        return ""
    return f"{pid}" if alive or alive is None else f"{pid} (gone)"


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def cmd_ls(args: argparse.Namespace) -> int:
    if not _listable():
        print(f"pyshm ls: this OS offers no way to list shared memory segments "
              f"({sys.platform}); open one by name with `pyshm info NAME`", file=sys.stderr)
        return EXIT_ERROR
    records = _records()
    if args.json:
        _print_json(records)
        return 0
    rows: List[Tuple[str, ...]] = [("NAME", "SIZE", "KIND", "CAPACITY", "QUEUED", "MESSAGES",
                                    "CREATOR")]
    for r in records:
        rows.append((_shown(r["name"]), _size_text(r["size"], args.bytes), r["kind"],
                     _size_text(r["capacity"], args.bytes), _size_text(r["queued"], args.bytes),
                     "" if r["messages"] is None else str(r["messages"]), _creator_text(r)))
    _table(rows)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    st = None
    if _listable():
        try:
            st = os.stat(os.path.join(DEV_SHM, args.name))
        except FileNotFoundError:
            pass    # the open below says so, with the name
    if st is None:
        with pyshm.SharedMemory(args.name, readonly=True):
            pass    # FileNotFoundError (or a bad name) with the usual message
    record = describe(args.name, st)
    if args.json:
        _print_json(record)
        return 0
    lines = [("name", _shown(record["name"])),
             ("size", _size_text(record["size"], args.bytes)),
             ("kind", record["kind"])]
    if record["kind"] == "channel" and record["capacity"] is not None:
        lines += [("capacity", _size_text(record["capacity"], args.bytes)),
                  ("queued", _size_text(record["queued"], args.bytes)),
                  ("messages", str(record["messages"])),
                  ("creator", _creator_text(record) or "unknown")]
    if record["mode"] is not None:
        mode = stat.S_IFREG | int(record["mode"], 8)
        lines += [("mode", f"{stat.filemode(mode)} ({record['mode']})"),
                  ("owner", f"uid {record['uid']}, gid {record['gid']}")]
    if record["error"]:
        lines.append(("error", record["error"]))
    for key, value in lines:
        print(f"{key + ':':<10}{value}")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    if args.channel:
        with pyshm.Channel(args.name, create=True, capacity=args.size, mode=args.mode) as chan:
            print(f"created channel {chan.name!r}, capacity {chan.capacity}")
        return 0
    with pyshm.SharedMemory(args.name, create=True, size=args.size, mode=args.mode) as shm:
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


def _stale(names: List[str]) -> Tuple[List[Tuple[str, bool, str]], int]:
    """[(name, stale?, why)] for NAMES (every segment when empty): stale means
    a channel whose creator has exited and that no process has mapped.  Also
    how many processes could not be checked (see pyshm.cli.processes)."""
    if names:
        records = []
        for name in names:
            try:
                records.append(describe(name, os.stat(os.path.join(DEV_SHM, name))))
            except FileNotFoundError:
                records.append(dict.fromkeys(KEYS, None) | {"name": name, "kind": "missing"})
    else:
        records = _records()
    gone = [r for r in records if r["kind"] == "channel" and r["creator_alive"] is False]
    attached, unchecked = attached_processes([r["name"] for r in gone])
    verdicts = []
    for r in records:
        pids = sorted(attached.get(r["name"], ()))
        if r["kind"] == "missing":
            verdict = (False, "no such segment")
        elif r["kind"] != "channel":
            verdict = (False, f"{r['kind']} segment: no creator recorded")
        elif r["creator_alive"] is None:
            verdict = (False, "its creator is unknown" + (f": {r['error']}" if r["error"] else ""))
        elif r["creator_alive"]:
            verdict = (False, f"its creator (pid {r['creator_pid']}) is running")
        elif pids:
            verdict = (False, "mapped by pid " + ", ".join(map(str, pids)))
        else:
            verdict = (True, f"channel; its creator (pid {r['creator_pid']}) has exited "
                             f"and no process has it mapped")
        verdicts.append((r["name"], *verdict))
    return verdicts, unchecked


def _rm_stale(args: argparse.Namespace) -> int:
    if not _listable():
        print(f"pyshm rm: --stale needs /dev/shm (Linux) to find and check segments "
              f"({sys.platform})", file=sys.stderr)
        return EXIT_ERROR
    status = 0
    verdicts, unchecked = _stale(args.names)
    for name, stale, why in verdicts:
        if not stale:
            if args.names:      # asked about it by name: say why it stays
                print(f"kept {_shown(name)} ({why})")
            continue
        if not args.dry_run:
            try:
                pyshm.unlink(name)
            except FileNotFoundError:
                continue        # someone else removed it meanwhile
            except (OSError, ValueError) as exc:
                print(f"pyshm rm: {_message(exc)}", file=sys.stderr)
                status = EXIT_ERROR
                continue
        print(f"{'would remove' if args.dry_run else 'removed'} {_shown(name)} ({why})")
    if unchecked:
        print(f"pyshm rm: {unchecked} process(es) could not be checked for mappings: "
              f"their /proc/PID/maps is not readable (other users' processes, unless "
              f"run as root)", file=sys.stderr)
    return status


def cmd_rm(args: argparse.Namespace) -> int:
    if args.stale:
        return _rm_stale(args)
    status = 0
    for name in args.names:
        try:
            pyshm.unlink(name)
        except (OSError, ValueError) as exc:
            print(f"pyshm rm: {_message(exc)}", file=sys.stderr)
            status = EXIT_ERROR
    return status


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print JSON (exact byte counts; keys: " + ", ".join(KEYS) + ")")
    p.add_argument("--bytes", action="store_true",
                   help="sizes as exact byte counts instead of 4 KiB, 1.5 MiB, ...")


def _rm_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """What argparse cannot say: NAMEs or --stale, --dry-run only with --stale."""
    if not args.names and not args.stale:
        parser.error("give NAME(s), or --stale")
    if args.dry_run and not args.stale:
        parser.error("--dry-run goes with --stale")


def add_commands(command: Command) -> None:
    p = command("ls", cmd_ls, "list segments (size, kind; channel queue and creator)",
                "List shared memory segments with their size and kind (channel or raw); "
                "for channels also capacity, bytes and messages queued, and the creator's "
                "pid, marked (gone) when that process has exited.  Linux reads /dev/shm; "
                "other systems offer no listing.")
    _add_output(p)

    p = command("info", cmd_info, "show one segment: size, kind, mode, owner (--json)")
    p.add_argument("name")
    _add_output(p)

    p = command("create", cmd_create, "create a segment (or a channel with --channel)",
                "Create a raw segment of SIZE bytes, or with --channel a channel of "
                "capacity SIZE.  SIZE takes suffixes: 4096, 0x100, 64K, 1M, 2G.")
    p.add_argument("name")
    p.add_argument("size", type=parse_size)
    p.add_argument("--channel", action="store_true", help="create a Channel")
    p.add_argument("--mode", type=parse_mode, default=0o600,
                   help="POSIX permission bits in octal (default 600: owner only; "
                        "the umask applies)")

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

    p = command("rm", cmd_rm, "remove segment names (or --stale channels)",
                "Remove each NAME (POSIX shm_unlink); processes that have it mapped keep "
                "their mapping.  --stale removes the channels (all, or those among the "
                "NAMEs) whose creator has exited and that no process has mapped (Linux: "
                "read from /proc; processes of other users are checked only when run as "
                "root); raw segments record no creator and are never stale.  On Windows "
                "names die with their last handle.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--stale", action="store_true",
                   help="remove the channels (all, or among the NAMEs) whose creator is gone "
                        "and that no process has mapped")
    p.add_argument("--dry-run", action="store_true",
                   help="with --stale: only print what would be removed")
    p.set_defaults(check=lambda args: _rm_args(args, p))
