"""pyshm demo: data crossing between two processes, and the second process's roles.

The demo starts ``python -m pyshm demo --child NAME`` (a SharedMemory) and
``... --channel-child REQ REP`` (two Channels) as its second process; those
options are hidden from the help.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import List

import pyshm
from pyshm._subprocess import child_env
from pyshm.cli import Command

REPLY_OFFSET = 128


def _second_process(*role: str) -> List[str]:
    """The command line of the demo's second process in ROLE."""
    return [sys.executable, "-m", "pyshm", "demo", *role]


# ---- the second process -------------------------------------------------------

def _demo_child(name: str) -> int:
    """The second process of the demo: read what the first wrote, reply."""
    with pyshm.SharedMemory(name) as shm:
        text = shm.read().split(b"\0", 1)[0].decode()
        print(f"  [process 2, pid {os.getpid()}] opened {name!r}, read: {text!r}", flush=True)
        reply = f"hello back from process 2 (pid {os.getpid()})".encode() + b"\0"
        shm.write(reply, REPLY_OFFSET)
        print(f"  [process 2] wrote {len(reply)} bytes at offset {REPLY_OFFSET}", flush=True)
    return 0


def _demo_channel_child(req_name: str, rep_name: str) -> int:
    """The second process of the channel demo: answer each message until b''."""
    with pyshm.Channel(req_name) as req, pyshm.Channel(rep_name) as rep:
        print(f"  [process 2] attached to {req!r}", flush=True)
        while True:
            message = req.recv(timeout=60)
            if not message:
                return 0
            rep.send(b"echo: " + message, timeout=60)


# ---- the first process --------------------------------------------------------

def _demo_channel() -> int:
    """Messages both ways through two Channels, then a round-trip timing."""
    print("Now messages: two Channels (request and reply), any size up to the capacity")
    req = pyshm.Channel(create=True, capacity=1 << 16)
    rep = pyshm.Channel(create=True, capacity=1 << 16)
    child = None
    try:
        child = subprocess.Popen(_second_process("--channel-child", req.name, rep.name),
                                 env=child_env())
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
        child = subprocess.run(_second_process("--child", shm.name),
                               env=child_env(), timeout=60)
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


def add_commands(command: Command) -> None:
    p = command("demo", cmd_demo, "show data crossing between two processes",
                "Start a second Python process and show data crossing both ways "
                "through a SharedMemory, then messages through two Channels.")
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--channel-child", nargs=2, metavar=("REQ", "REP"), help=argparse.SUPPRESS)
