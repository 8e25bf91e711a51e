"""pyshm watch: a slot's values from the shell, as they are published.

(``ls``/``info`` show a slot's size and generation: those live with the
segment commands.)  ``watch`` prints the slot's current value, then each new
one, sleeping in ``Slot.wait`` in between: it never polls, and a slot that
nobody publishes to costs it no CPU.  A slot holds only its latest value,
so values published faster than they are printed are skipped (the
generations printed say how many); every value printed is whole.

Output, one value per line: hex by default (``generation G, N bytes: HEX``,
HEX in groups of eight bytes), ``--json`` (one object per line: generation,
length, hex), ``--raw`` (the value's own bytes, then a newline).  It runs
until Ctrl-C (exit status 130, as for every command), ``--count`` values,
or ``--timeout`` seconds without a new value (then exit status 0, as
``recv --follow``).  A missing name is the usual error at once; ``--wait S``
waits up to S seconds for it to be created first.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

import pyshm
from pyshm.cli import Command, _output_bytes, _timeout

# Hex output: bytes per space-separated group (a 64-bit word).
HEX_GROUP = 8


def _line(generation: int, data: bytes, fmt: str) -> bytes:
    """How one value is printed, with its line ending."""
    if fmt == "raw":
        return data + b"\n"
    if fmt == "json":
        record = {"generation": generation, "length": len(data), "hex": data.hex()}
        return json.dumps(record).encode() + b"\n"
    text = data.hex(" ", -HEX_GROUP) if data else "(empty)"
    return f"generation {generation}, {len(data)} bytes: {text}\n".encode()


def watch(slot: "pyshm.Slot", fmt: str, count: Optional[int], timeout: Optional[float]) -> int:
    """Print SLOT's value now (if one was published) and each newer one;
    stop after COUNT values or TIMEOUT seconds without one."""
    printed = 0
    seen = 0
    while count is None or printed < count:
        generation, data = slot.snapshot()
        if generation > seen:
            _output_bytes(_line(generation, data, fmt))
            printed += 1
            seen = generation
            continue
        try:
            # Sleeps until a publish moves the generation past SEEN (GIL
            # released; Ctrl-C ends it with KeyboardInterrupt).
            slot.wait(seen, timeout=timeout)
        except TimeoutError:
            return 0
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    fmt = "raw" if args.raw else "json" if args.json else "hex"
    with pyshm.Slot(args.name, wait=args.wait) as slot:
        return watch(slot, fmt, args.count, args.timeout)


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"count must be at least 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):      # also refuses NaN
        raise argparse.ArgumentTypeError(f"seconds must be >= 0 and finite, not {text!r}")
    return value


def add_commands(command: Command) -> None:
    p = command("watch", cmd_watch, "print a slot's value and each new one as published",
                "Print the value of slot NAME, then each new value as it is published, "
                "one per line: hex by default, --json or --raw.  Sleeps between values "
                "(never polls); a slot keeps only its latest value, so values published "
                "faster than they are printed are skipped (the generations say how many). "
                "Runs until Ctrl-C (exit status 130), --count values, or --timeout "
                "seconds without a new value (exit status 0).")
    p.add_argument("name")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help='one JSON object per line: {"generation": G, "length": N, '
                          '"hex": "..."}')
    out.add_argument("--raw", action="store_true",
                     help="each value's own bytes, followed by a newline")
    p.add_argument("--count", type=_positive_count, default=None, metavar="N",
                   help="stop after N values")
    p.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                   help="stop (exit status 0) when S seconds pass without a new value")
    p.add_argument("--wait", type=_seconds, default=None, metavar="S",
                   help="wait up to S seconds for NAME to be created (default: a missing "
                        "name is an error at once)")
