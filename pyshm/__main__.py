"""Command line: python -m pyshm COMMAND (also installed as `pyshm`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Sequence

import pyshm

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


def cmd_demo(args: argparse.Namespace) -> int:
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
    return 0


# ---- entry point ----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyshm", description="Named shared memory between processes.")
    parser.add_argument("--version", action="version", version=f"pyshm {pyshm.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="show data crossing between two processes",
                          description="Start a second Python process and show data "
                                      "crossing both ways through a SharedMemory.")
    demo.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("pyshm: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, pyshm.ProtocolError) as exc:
        print(f"pyshm {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
