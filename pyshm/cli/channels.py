"""pyshm send, recv: messages through a channel from the shell.

(``pyshm create --channel`` makes one; ``ls``/``info`` show its capacity and
queue: those live with the segment commands.)  A --timeout that runs out is
exit status 3 (pyshm.cli.EXIT_TIMEOUT), told apart from every other error.
"""

from __future__ import annotations

import argparse

import pyshm
from pyshm.cli import Command, _input_bytes, _output_bytes, _output_for_a_person, _timeout


def cmd_send(args: argparse.Namespace) -> int:
    payload = _input_bytes(args.data)
    with pyshm.Channel(args.name) as chan:
        chan.send(payload, timeout=args.timeout)
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    with pyshm.Channel(args.name) as chan:
        if not args.follow:
            _output_for_a_person(chan.recv(timeout=args.timeout))
            return 0
        # Every message, each followed by a newline, until Ctrl-C or until
        # --timeout passes with no message (the normal end of a follow: 0).
        while True:
            try:
                message = chan.recv(timeout=args.timeout)
            except TimeoutError:
                return 0
            _output_bytes(message + b"\n")


def _add_timeout(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                   help=f"give up after S seconds {what}, with exit status 3 "
                        "(default: wait for ever; 0: do not wait)")


def add_commands(command: Command) -> None:
    p = command("send", cmd_send, "send one message (DATA or stdin) through a channel",
                "Send DATA (UTF-8) or, when DATA is absent, all of standard input as one "
                "message through channel NAME; waits while the channel is full.")
    p.add_argument("name")
    p.add_argument("data", nargs="?")
    _add_timeout(p, "while the channel stays full")

    p = command("recv", cmd_recv, "receive a message (or --follow: all) to stdout",
                "Receive one message from channel NAME and write its raw bytes to "
                "standard output (on a terminal, with a newline after them if they lack "
                "one); waits while the channel is empty.  With --follow, "
                "write every message followed by a newline until interrupted, or until "
                "--timeout seconds pass with no message (then exit status 0).")
    p.add_argument("name")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep receiving; each message is followed by a newline")
    _add_timeout(p, "while the channel stays empty")
