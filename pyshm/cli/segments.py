"""pyshm ls, info, create, write, cat, rm: segments (raw, channel or slot) from the shell.

``ls`` and ``info`` describe each segment as one record (:func:`describe`),
printed as a table or, with ``--json``, as JSON with the same keys.  Telling
a channel or a slot from a raw segment reads the first four bytes only (the
magic numbers, which the extension exports): a raw segment is never opened
as a channel or a slot.  Whether a channel's creator still runs, and (Linux)
which processes have a segment mapped, are in :mod:`pyshm.cli.processes`;
how many Channel objects have a channel open (its liveness slots, in every
PID namespace) comes from the extension (``_pyshm._channel_users``).

Entries of /dev/shm that are not segments -- anyone may put a FIFO, a
socket, a directory or a symbolic link there -- are never opened in a way
that could block or follow them: ``ls`` lists them with their file type as
their kind ("fifo", "socket", "directory", "symlink", "device") and the
error the extension gives for them; ``info`` and ``cat`` fail with that
error; ``rm --stale`` keeps them.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import struct
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import pyshm
from pyshm import _pyshm
from pyshm._units import human_size, parse_mode, parse_size
from pyshm.cli import (EXIT_ERROR, Command, _input_bytes, _message, _output_for_a_person,
                       _shown, _table)
from pyshm.cli.processes import attached_processes, creator_alive

DEV_SHM = "/dev/shm"

# The keys of every record, in the order --json prints them.  Keys that do
# not apply are None: capacity is a channel's ring or a slot's size (its
# largest value); queued and messages are a channel's, generation a slot's;
# mode, uid, gid and mtime are None where the OS gives no file to stat (not
# Linux).  users: how many Channel objects have the channel open (None where
# the build cannot tell, see rm --stale; and for slots).
KEYS = ("name", "size", "kind", "mode", "uid", "gid", "mtime", "capacity", "queued",
        "messages", "generation", "creator_pid", "creator_alive", "users", "error")

# The kind of a /dev/shm entry that is not a segment, by file type.
_OTHER_KINDS = {stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFDIR: "directory",
                stat.S_IFLNK: "symlink", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}

# Opening an entry ourselves: as the extension opens names, never waiting
# (a FIFO) and never following a link.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | \
    getattr(os, "O_CLOEXEC", 0)


def _listable() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir(DEV_SHM)


def _other_kind(st: os.stat_result) -> Optional[str]:
    """The kind of an entry that is not a segment (lstat's ST); None for a
    regular file."""
    if stat.S_ISREG(st.st_mode):
        return None
    return _OTHER_KINDS.get(stat.S_IFMT(st.st_mode), "other")


def _lstat(name: str) -> os.stat_result:
    """NAME's entry in /dev/shm, not followed if it is a link."""
    return os.lstat(os.path.join(DEV_SHM, name))


def _entries() -> Iterator[Tuple[str, os.stat_result]]:
    for entry in sorted(os.listdir(DEV_SHM)):
        try:
            st = _lstat(entry)
        except OSError:
            continue
        # POSIX named semaphores live here too, as "sem.NAME": not segments.
        if not entry.startswith("sem."):
            yield entry, st


def _refusal(name: str, fallback: OSError) -> OSError:
    """Why NAME, found not to be a regular file, is not a segment: the error
    the extension raises for it, which says what it is.  (Opening it there
    neither waits nor follows a link.)  FALLBACK if it now opens: it was
    replaced by a segment meanwhile."""
    try:
        pyshm.SharedMemory(name, readonly=True).close()
    except OSError as exc:
        return exc
    return fallback


def _head(name: str) -> bytes:
    """The first four bytes of segment NAME, read-only (less if it is smaller)."""
    if not _listable():
        with pyshm.SharedMemory(name, readonly=True) as shm:
            return shm.read(min(4, shm.size))
    try:
        fd = os.open(os.path.join(DEV_SHM, name), _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:      # a socket (ENXIO), a link (ELOOP), no permission...
        raise _refusal(name, exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refusal(name, OSError(errno.ENODEV, "not a shared-memory segment", name))
        return os.read(fd, 4)
    finally:
        os.close(fd)


def _kind_of_head(head: bytes) -> str:
    """"channel", "slot" or "raw", by a segment's first four bytes.  A
    creator stores the magic number last, so a segment still being made
    reads as raw for that moment."""
    if len(head) == 4:
        magic = struct.unpack("=I", head)[0]
        if magic == _pyshm._CHANNEL_MAGIC:
            return "channel"
        if magic == _pyshm._SLOT_MAGIC:
            return "slot"
    return "raw"


def _describe_slot(record: Dict[str, Any], name: str) -> None:
    """Fill in a slot's keys: its size and generation.  (A Slot does not
    give its creator's pid.)"""
    try:
        with pyshm.Slot(name) as slot:
            record.update(capacity=slot.size, generation=slot.generation)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pyshm.ProtocolError) as exc:
        record["error"] = _message(exc)


def describe(name: str, st: Optional[os.stat_result]) -> Dict[str, Any]:
    """One segment as a record with the KEYS.  ST: its /dev/shm entry (Linux),
    else None.  Raises FileNotFoundError when it is gone."""
    record: Dict[str, Any] = dict.fromkeys(KEYS)
    record["name"] = name
    other = None if st is None else _other_kind(st)
    if st is not None and other is not None:
        # Not a segment: listed for what it is, never opened as one.
        record.update(kind=other, mode=f"{st.st_mode & 0o7777:#o}", uid=st.st_uid,
                      gid=st.st_gid, mtime=st.st_mtime,
                      error=_message(_refusal(name, OSError(errno.ENODEV, other, name))))
        return record
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
    record["kind"] = _kind_of_head(head)
    if record["kind"] == "raw":
        # A raw segment (zero-filled, or anything else) is never opened as
        # a channel or a slot.
        return record
    if record["kind"] == "slot":
        _describe_slot(record, name)
        return record
    try:
        # First, before our own Channel below holds a slot too; read-only,
        # so it answers where opening the channel is not allowed.
        record["users"] = _pyshm._channel_users(name)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pyshm.ProtocolError) as exc:
        record["error"] = _message(exc)
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


def _count_text(n: Optional[int]) -> str:
    return "" if n is None else str(n)


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
                                    "GENERATION", "CREATOR")]
    for r in records:
        rows.append((_shown(r["name"]), _size_text(r["size"], args.bytes), r["kind"],
                     _size_text(r["capacity"], args.bytes), _size_text(r["queued"], args.bytes),
                     _count_text(r["messages"]), _count_text(r["generation"]),
                     _creator_text(r)))
    _table(rows)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    st = None
    if _listable():
        try:
            st = _lstat(args.name)
        except FileNotFoundError:
            pass    # the open below says so, with the name
    if st is not None and _other_kind(st) is not None:
        # Not a segment: the extension's error says what it is.
        raise _refusal(args.name, OSError(errno.ENODEV, "not a shared-memory segment",
                                          args.name))
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
                  ("creator", _creator_text(record) or "unknown"),
                  ("users", "unknown" if record["users"] is None else
                   f"{record['users']} Channel object(s) have it open")]
    if record["kind"] == "slot" and record["capacity"] is not None:
        lines += [("capacity", f"{_size_text(record['capacity'], args.bytes)} "
                               "(its largest value)"),
                  ("latest", f"generation {record['generation']}" if record["generation"]
                   else "generation 0 (nothing published yet)")]
    if record["mode"] is not None:
        mode = stat.S_IFREG | int(record["mode"], 8)
        lines += [("mode", f"{stat.filemode(mode)} ({record['mode']})"),
                  ("owner", f"uid {record['uid']}, gid {record['gid']}")]
    if record["error"]:
        lines.append(("error", record["error"]))
    for key, value in lines:
        print(f"{key + ':':<10}{value}")
    return 0


def _create(args: argparse.Namespace, exist_ok: bool) -> Union[pyshm.Channel,
                                                                  pyshm.SharedMemory]:
    if args.channel:
        return pyshm.Channel(args.name, create=True, capacity=args.size, mode=args.mode,
                             exist_ok=exist_ok)
    return pyshm.SharedMemory(args.name, create=True, size=args.size, mode=args.mode,
                              exist_ok=exist_ok)


def _described(obj: Union[pyshm.Channel, pyshm.SharedMemory]) -> str:
    if isinstance(obj, pyshm.Channel):
        return f"channel {obj.name!r}, capacity {obj.capacity}"
    return f"{obj.name!r}, {obj.size} bytes"


def _misfit(args: argparse.Namespace) -> str:
    """Why --exist-ok refused the existing NAME, in this command's words
    (the extension's message names the Python arguments: size=, capacity=)."""
    again = f"or remove it first: pyshm rm {_shown(args.name)}"
    if args.channel:
        with pyshm.Channel(args.name) as chan:
            return (f"channel {args.name!r} exists with capacity {chan.capacity}, not the "
                    f"{args.size} asked for; nothing was changed (ask for {chan.capacity}, "
                    f"{again})")
    with pyshm.SharedMemory(args.name, readonly=True) as shm:
        return (f"{args.name!r} exists with {shm.size} bytes, fewer than the {args.size} "
                f"asked for; nothing was changed (ask for {shm.size} or less, {again})")


def cmd_create(args: argparse.Namespace) -> int:
    try:
        obj = _create(args, exist_ok=False)
    except FileExistsError as exc:
        if not args.exist_ok:
            # The extension's hint names the Python argument (exist_ok=True):
            # a person at the shell gets this command's own flag instead.
            # (os.strerror: the OS's words without that hint.)
            text = os.strerror(exc.errno) if exc.errno else "File exists"
            print(f"pyshm create: {text}: {args.name!r} (add --exist-ok to use it as it "
                  f"is, or remove it first: pyshm rm {_shown(args.name)})", file=sys.stderr)
            return EXIT_ERROR
        # The existing one, with the checks exist_ok=True makes: a smaller
        # segment, or a channel of another capacity, is refused and left as
        # it was.
        try:
            with _create(args, exist_ok=True) as obj:
                print(f"exists: {_described(obj)}")
        except ValueError:
            print(f"pyshm create: {_misfit(args)}", file=sys.stderr)
            return EXIT_ERROR
        return 0
    with obj:
        print(f"created {_described(obj)}")
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
    _output_for_a_person(data)
    return 0


def _stale_verdict(r: Dict[str, Any], pids: List[int]) -> Tuple[bool, str]:
    """(stale?, why) for the record R; PIDS: the processes of this PID
    namespace that have it mapped (looked up for the candidates only)."""
    if r["kind"] == "missing":
        return False, "no such segment"
    if r["kind"] in _OTHER_KINDS.values() or r["kind"] == "other":
        return False, f"not a segment: {r['kind']}"
    if r["kind"] == "slot":
        return False, "slot: --stale removes channels only"
    if r["kind"] != "channel":
        return False, f"{r['kind']} segment: pyshm records no users of raw segments"
    mapped = "mapped by pid " + ", ".join(map(str, pids)) if pids else ""
    if r["users"] is not None:
        # What the channel itself knows: a liveness slot is held for every
        # Channel object attached to it, in any process and PID namespace.
        # The creator and the mappings are information only: pids mean
        # nothing in another namespace.
        if r["users"]:
            return False, (f"open by {r['users']} Channel object(s): liveness slots held, "
                           f"in any PID namespace")
        alive = r["creator_alive"]
        notes = ["no liveness slot is held",
                 "creator unknown" if not r["creator_pid"] else
                 f"creator pid {r['creator_pid']} "
                 f"{'gone' if alive is False else 'running' if alive else 'unknown'}"]
        if mapped:
            notes.append(mapped + " (not as a Channel)")
        return True, "channel; no Channel object has it open: " + ", ".join(notes)
    # This build cannot tell (the fallback's locks record no users): the
    # creator and the mappings of this PID namespace decide.
    if r["creator_alive"] is None:
        return False, "its creator is unknown" + (f": {r['error']}" if r["error"] else "")
    if r["creator_alive"]:
        return False, f"its creator (pid {r['creator_pid']}) is running"
    if mapped:
        return False, mapped
    return True, (f"channel; its creator (pid {r['creator_pid']}) has exited and no process "
                  f"has it mapped")


def _stale(names: List[str]) -> Tuple[List[Tuple[str, bool, str]], int]:
    """[(name, stale?, why)] for NAMES (every segment when empty), and how
    many processes could not be checked for mappings (see
    pyshm.cli.processes).  A channel is stale when no Channel object has it
    open: no liveness slot is held on its file (the futex build; every PID
    namespace sees them).  Where the build cannot tell (the fallback), when
    its creator has exited and no process has it mapped (pids: this PID
    namespace only).  Raw segments record no users and are never stale;
    entries that are not segments neither."""
    if names:
        records = []
        for name in names:
            try:
                records.append(describe(name, _lstat(name)))
            except FileNotFoundError:
                records.append(dict.fromkeys(KEYS, None) | {"name": name, "kind": "missing"})
    else:
        records = _records()
    candidates = [r["name"] for r in records if r["kind"] == "channel" and
                  (r["users"] == 0 or (r["users"] is None and r["creator_alive"] is False))]
    attached, unchecked = attached_processes(candidates)
    if not any(r["kind"] == "channel" and r["users"] is None for r in records):
        unchecked = 0       # the mappings decided nothing: no warning about them
    verdicts = []
    for r in records:
        pids = sorted(attached.get(r["name"], ()))
        verdicts.append((r["name"], *_stale_verdict(r, pids)))
    return verdicts, unchecked


def _nothing_stale(count: int, dry_run: bool) -> str:
    """What rm --stale says when it finds nothing to remove among the COUNT
    entries of /dev/shm."""
    done = "nothing would be removed" if dry_run else "nothing removed"
    if not count:
        return f"{done}: {DEV_SHM} holds no segment"
    return f"{done}: no stale channel among the {count} segment(s) in {DEV_SHM}"


def _rm_stale(args: argparse.Namespace) -> int:
    if not _listable():
        print(f"pyshm rm: --stale needs /dev/shm (Linux) to find and check segments "
              f"({sys.platform})", file=sys.stderr)
        return EXIT_ERROR
    status = 0
    verdicts, unchecked = _stale(args.names)
    if not args.names and not any(stale for _, stale, _ in verdicts):
        # Every segment looked at and none stale: the kept ones are not listed
        # one by one (a shared /dev/shm holds many), but a person is told.
        print(_nothing_stale(len(verdicts), args.dry_run))
    for name, stale, why in verdicts:
        if not stale:
            if args.names:      # asked about it by name: say why it stays
                print(f"kept {_shown(name)} ({why})")
            continue
        if not args.dry_run:
            try:
                # Asked again just before: an object that attached since
                # the listing keeps it.
                users = _pyshm._channel_users(name)
            except FileNotFoundError:
                continue        # someone else removed it meanwhile
            except (OSError, ValueError, pyshm.ProtocolError) as exc:
                print(f"kept {_shown(name)} ({_message(exc)})")
                continue
            if users:
                print(f"kept {_shown(name)} (open by {users} Channel object(s) now)")
                continue
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
    p = command("ls", cmd_ls, "list segments (size, kind; channel queue, slot generation)",
                "List shared memory segments with their size and kind (channel, slot or "
                "raw); for channels also capacity, bytes and messages queued; for slots "
                "their size (under CAPACITY: the largest value) and generation (values "
                "published); and the creator's pid, marked (gone) when that process has "
                "exited.  Linux reads /dev/shm; other systems offer no listing.")
    _add_output(p)

    p = command("info", cmd_info, "show one segment: size, kind, mode, owner (--json)",
                "Show segment NAME: its size and kind (channel, slot or raw); a channel's "
                "capacity, queue and users; a slot's size (its largest value) and "
                "generation; the creator, mode and owner.")
    p.add_argument("name")
    _add_output(p)

    p = command("create", cmd_create, "create a segment (or a channel with --channel)",
                "Create a raw segment of SIZE bytes, or with --channel a channel of "
                "capacity SIZE.  SIZE takes suffixes: 4096, 0x100, 64K, 1M, 2G.  A name "
                "that is taken fails (exit status 1), unless --exist-ok: then the "
                "existing one is kept as it is if it fits.")
    p.add_argument("name")
    p.add_argument("size", type=parse_size)
    p.add_argument("--channel", action="store_true", help="create a Channel")
    p.add_argument("--exist-ok", action="store_true",
                   help="a segment (channel) of that name may exist already: use it as it "
                        "is if it has at least SIZE bytes (a channel: that capacity), "
                        "else fail and change nothing")
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
                "--size bytes (default: to the end); on a terminal, with a newline after "
                "them if they lack one.")
    p.add_argument("name")
    p.add_argument("--offset", type=parse_size, default=0)
    p.add_argument("--size", type=parse_size, default=None)

    p = command("rm", cmd_rm, "remove segment names (or --stale channels)",
                "Remove each NAME (POSIX shm_unlink); processes that have it mapped keep "
                "their mapping.  --stale removes the channels (all, or those among the "
                "NAMEs) that no Channel object has open, in any process or PID namespace "
                "(none of its liveness slots is held); the creator's pid and the "
                "processes that have it mapped are shown, not used.  A build that "
                "cannot count users (PYSHM_WAIT=fallback) removes those whose creator "
                "has exited and that no process has mapped (read from /proc: this PID "
                "namespace only; other users' processes only when run as root).  Raw "
                "segments record no users and are never stale; entries that are not "
                "segments (a FIFO...) are kept.  On Windows names die with their last "
                "handle.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--stale", action="store_true",
                   help="remove the channels (all, or among the NAMEs) that no Channel "
                        "object has open, in any process or PID namespace")
    p.add_argument("--dry-run", action="store_true",
                   help="with --stale: only print what would be removed")
    p.set_defaults(check=lambda args: _rm_args(args, p))
