"""pyshm send, recv: one message through a channel from the shell.

(``pyshm create --channel`` makes one; ``ls``/``info`` show its capacity and
queue: those live with the segment commands.)
"""

from __future__ import annotations

import argparse

import pyshm
from pyshm.cli import Command, _input_bytes, _output_bytes, _timeout


def cmd_send(args: argparse.Namespace) -> int:
    payload = _input_bytes(args.data)
    with pyshm.Channel(args.name) as chan:
        chan.send(payload, timeout=args.timeout)
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    with pyshm.Channel(args.name) as chan:
        message = chan.recv(timeout=args.timeout)
    _output_bytes(message)
    return 0


def _add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                   help="give up after S seconds (default: wait for ever)")


def add_commands(command: Command) -> None:
    p = command("send", cmd_send, "send one message (DATA or stdin) through a channel",
                "Send DATA (UTF-8) or, when DATA is absent, all of standard input as one "
                "message through channel NAME; waits while the channel is full.")
    p.add_argument("name")
    p.add_argument("data", nargs="?")
    _add_timeout(p)

    p = command("recv", cmd_recv, "receive one message from a channel to stdout",
                "Receive one message from channel NAME and write its raw bytes to "
                "standard output; waits while the channel is empty.")
    p.add_argument("name")
    _add_timeout(p)
