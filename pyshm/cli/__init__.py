"""Command line: python -m pyshm COMMAND (also installed as `pyshm`)."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import pyshm
from pyshm import bench
from pyshm._units import parse_size

REPLY_OFFSET = 128


# ---- demo ---------------------------------------------------------------------

def _demo_child(name: str) -> int:
    """The second process of the demo: read what the first wrote, reply."""
    with pyshm.SharedMemory(name) as shm:
        text = shm.read().split(b"\0", 1)[0].decode()
        print(f"  [process 2, pid {os.getpid()}] opened {name!r}, read: {text!r}", flush=True)
        reply = f"hello back from process 2 (pid {os.getpid()})".encode() + b"\0"
        shm.write(reply, REPLY_OFFSET)
        print(f"  [process 2] wrote {len(reply)} bytes at offset {REPLY_OFFSET}", flush=True)
    return 0


def _child_env() -> dict[str, str]:
    # The child must import this very pyshm, wherever it was imported from.
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyshm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def _demo_channel_child(req_name: str, rep_name: str) -> int:
    """The second process of the channel demo: answer each message until b''."""
    with pyshm.Channel(req_name) as req, pyshm.Channel(rep_name) as rep:
        print(f"  [process 2] attached to {req!r}", flush=True)
        while True:
            message = req.recv(timeout=60)
            if not message:
                return 0
            rep.send(b"echo: " + message, timeout=60)


def _demo_channel() -> int:
    """Messages both ways through two Channels, then a round-trip timing."""
    print("Now messages: two Channels (request and reply), any size up to the capacity")
    req = pyshm.Channel(create=True, capacity=1 << 16)
    rep = pyshm.Channel(create=True, capacity=1 << 16)
    child = None
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "pyshm", "demo", "--channel-child", req.name, rep.name],
            env=_child_env())
        for text in ("first message", "second, a little longer message"):
            req.send(text.encode(), timeout=60)
            print(f"  [process 1] sent {text!r}; got back {rep.recv(timeout=60).decode()!r}")
        rounds = 20000
        start = time.perf_counter()
        for _ in range(rounds):
            req.send(b"x" * 64, timeout=60)
            rep.recv(timeout=60)
        took = time.perf_counter() - start
        print(f"  [process 1] {rounds} round trips of 64 bytes: "
              f"{took / rounds * 1e6:.1f} us each (wait scheme: {pyshm.CHANNEL_WAIT})")
        req.send(b"", timeout=60)
        if child.wait(timeout=60) != 0:
            print("pyshm demo: the channel process failed", file=sys.stderr)
            return 1
        print("Messages crossed both ways.")
        return 0
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        for chan in (req, rep):
            chan.close()
            chan.unlink()


def cmd_demo(args: argparse.Namespace) -> int:
    if args.channel_child:
        return _demo_channel_child(*args.channel_child)
    if args.child:
        return _demo_child(args.child)
    print(f"pyshm {pyshm.__version__}: two processes sharing one named segment")
    shm = pyshm.SharedMemory(create=True, size=0x100)
    try:
        message = f"data from process 1 (pid {os.getpid()})".encode() + b"\0"
        shm.write(message)
        print(f"  [process 1, pid {os.getpid()}] created {shm!r}")
        print(f"  [process 1] wrote {message[:-1].decode()!r} at offset 0")
        child = subprocess.run(
            [sys.executable, "-m", "pyshm", "demo", "--child", shm.name],
            env=_child_env(), timeout=60,
        )
        if child.returncode != 0:
            print(f"pyshm demo: the second process failed ({child.returncode})",
                  file=sys.stderr)
            return 1
        reply = shm.read(size=shm.size - REPLY_OFFSET, offset=REPLY_OFFSET)
        text = reply.split(b"\0", 1)[0].decode()
        print(f"  [process 1] read at offset {REPLY_OFFSET}: {text!r}")
        if not text.startswith("hello back from process 2"):
            print("pyshm demo: the reply did not arrive", file=sys.stderr)
            return 1
        print("Data crossed both ways.")
    finally:
        shm.close()
        shm.unlink()
    return _demo_channel()


# ---- raw segments -----------------------------------------------------------

DEV_SHM = "/dev/shm"


def _describe(name: str) -> Tuple[str, Optional[int], Optional[int]]:
    """(kind, capacity, queued bytes) of segment NAME: 'channel' or 'raw'."""
    channel_type = getattr(pyshm, "Channel", None)
    if channel_type is None:
        return "raw", None, None
    try:
        chan = channel_type(name)
    except pyshm.ProtocolError:
        return "raw", None, None
    except ValueError:
        return "raw", None, None
    try:
        return "channel", chan.capacity, getattr(chan, "queued", None)
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


def _input_bytes(data: Optional[str]) -> bytes:
    if data is not None:
        return data.encode()
    return sys.stdin.buffer.read()


def cmd_write(args: argparse.Namespace) -> int:
    payload = _input_bytes(args.data)
    with pyshm.SharedMemory(args.name) as shm:
        count = shm.write(payload, args.offset)
    print(f"wrote {count} bytes at offset {args.offset}", file=sys.stderr)
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    with pyshm.SharedMemory(args.name, readonly=True) as shm:
        data = shm.read(-1 if args.size is None else args.size, args.offset)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def _timeout(text: str) -> Optional[float]:
    if text.lower() in ("none", "forever", "inf"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:      # also refuses NaN
        raise argparse.ArgumentTypeError(f"timeout must be >= 0 seconds, not {text!r}")
    return value


def cmd_send(args: argparse.Namespace) -> int:
    payload = _input_bytes(args.data)
    with pyshm.Channel(args.name) as chan:
        chan.send(payload, timeout=args.timeout)
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    with pyshm.Channel(args.name) as chan:
        message = chan.recv(timeout=args.timeout)
    sys.stdout.buffer.write(message)
    sys.stdout.buffer.flush()
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


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename!r}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


# ---- entry point ----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyshm", description="Named shared memory and channels between processes.")
    parser.add_argument("--version", action="version", version=f"pyshm {pyshm.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                description: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help)
        p.set_defaults(func=func)
        return p

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

    p = command("send", cmd_send, "send one message (DATA or stdin) through a channel",
                "Send DATA (UTF-8) or, when DATA is absent, all of standard input as one "
                "message through channel NAME; waits while the channel is full.")
    p.add_argument("name")
    p.add_argument("data", nargs="?")
    p.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                   help="give up after S seconds (default: wait for ever)")

    p = command("recv", cmd_recv, "receive one message from a channel to stdout",
                "Receive one message from channel NAME and write its raw bytes to "
                "standard output; waits while the channel is empty.")
    p.add_argument("name")
    p.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                   help="give up after S seconds (default: wait for ever)")

    bench.add_arguments(command(
        "bench", bench.run, "measure pyshm against multiprocessing, sockets and the stdlib",
        "Measure, between two processes and in one run, pyshm against "
        "multiprocessing.Pipe and Queue, socketpair and the standard library's "
        "shared_memory; print every figure with its ratio."))

    p = command("demo", cmd_demo, "show data crossing between two processes",
                "Start a second Python process and show data crossing both ways "
                "through a SharedMemory, then messages through two Channels.")
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--channel-child", nargs=2, metavar=("REQ", "REP"), help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"pyshm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `pyshm cat X | head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (OSError, ValueError, TypeError, BufferError, pyshm.ProtocolError) as exc:
        print(f"pyshm {args.command}: {_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
