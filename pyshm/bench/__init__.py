"""``python -m pyshm bench``: pyshm against its peers, measured in one run.

Three sections, every figure next to a ratio against a peer measured in the
same run:

1. Round trip of a 64-byte message between two processes (median and p99):
   pyshm.Channel, multiprocessing.Pipe, multiprocessing.Queue,
   socket.socketpair, and the standard library's shared_memory with a
   busy-polled flag byte -- the floor for Python code.
2. Streaming messages of each size to another process: Channel ``recv`` and
   ``recv_into``, Pipe ``send_bytes``/``recv_bytes``, socketpair with
   ``recv_into``, Queue; a single-process bytearray slice copy of the same
   size is the limit.  Messages/s and GB/s.
3. Objects: a 64 MiB float64 array sent one way (Channel ``send_obj`` /
   ``recv_obj``, ``reserve`` / ``recv_view`` with ``numpy.frombuffer``) against
   multiprocessing Queue and Pipe, faster-fifo, pyzmq (``send_pyobj`` and
   ``send(copy=False)``) and the standard library's shared_memory hand-off,
   with numpy's warm copy as the limit; small dicts in messages/s; a queued
   message received by ``recv``, ``recv_into`` and ``recv_view``; and the CPU
   time a receiver spends per 10,000 messages arriving at 100, 1,000, 10,000
   and 50,000 per second with each wait policy (``spin=True`` / ``spin=False``)
   and with a Pipe.
4. SharedMemory ``write``/``read`` of 64 bytes and of a big buffer against
   memoryview slicing of the standard library's shared_memory, with a
   bytearray slice copy as the limit.
5. Slot: the ``wait()`` wake-up round trip (in section 1's table, against the
   channel's); reads of a 64 KiB value while another process publishes it
   flat out, against an idle writer; ``publish``+``read`` of 64 bytes against
   SharedMemory ``write``+``read``; and how many of 200,000 reads of a 24-byte
   struct rewritten flat out by another process come back torn, from a raw
   SharedMemory and from a Slot (a count).
6. asyncio (``bench/aio.py``): a 64-byte ping-pong and an awaited 64-byte
   stream, pyshm.asyncio against asyncio streams over a socketpair and
   zmq.asyncio; pyshm.wait over 10 channels against a recv on one; the sync
   round trip with and without an idle async waiter in another process.

Third-party peers (faster-fifo, pyzmq, iceoryx2) are measured when they
import, and skipped with a note when not.  Trials of pyshm and its peers alternate (in
an order rotated each trial) so that noise on the machine hits all alike; a
figure is the median of its trials.  Children are started with the 'spawn'
method, each driven over a control pipe: it blocks there between trials
(so a busy-polling child never steals a CPU from another trial), and says
"ready" before each trial starts.

pyshm's own goals are printed next to the figures they concern (met /
short); a missed goal is a finding, never a failure: the exit status is 0
unless something broke.

The parts: ``children`` (the child processes and their control protocol),
``peers`` (the parent's end of each transport), ``runner`` (the trials and
the timing loops), ``report`` (ratios, goals, text and JSON); this module is
the command line (``add_arguments``, ``run``, ``main``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence

from pyshm._units import parse_size
from pyshm.bench.common import (DEFAULT_ARRAY_SIZE, DEFAULT_SHM_SIZE, DEFAULT_SIZES, Config,
                                progress)
from pyshm.bench.report import document, finish_rows, machine, render
from pyshm.bench.runner import Bench

__all__ = ["add_arguments", "run", "main"]


def positive_size(text: str) -> int:
    """parse_size, refusing 0: every size the benchmark takes is one it sends or copies."""
    value = parse_size(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive: {text!r}")
    return value


def parse_sizes(text: str) -> List[int]:
    return [positive_size(part) for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="short trials (about 20 s in all) instead of the full run")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (progress stays on stderr)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, metavar="LIST",
                        help="streaming message sizes, e.g. 64,4KiB,1MiB,64MiB (the default)")
    parser.add_argument("--shm-size", type=positive_size, default=DEFAULT_SHM_SIZE, metavar="SIZE",
                        help="the big SharedMemory copy (default 256MiB)")
    parser.add_argument("--array-size", type=positive_size, default=DEFAULT_ARRAY_SIZE,
                        metavar="SIZE", help="the float64 array of the object rows "
                        "(default 64MiB)")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="interleaved trials per figure (default 3 quick, 7 full)")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="target length of one trial (default 0.08 quick, 0.4 full)")
    parser.add_argument("--no-third-party", dest="third_party", action="store_false",
                        help="skip faster-fifo, pyzmq and iceoryx2 even where installed")
    parser.add_argument("--pin", action="store_true",
                        help="pin this process to CPU 0 and the children to CPU 1")


def run(args: argparse.Namespace) -> int:
    cfg = Config(
        quick=args.quick,
        trials=args.trials if args.trials else (3 if args.quick else 7),
        seconds=args.seconds if args.seconds else (0.08 if args.quick else 0.4),
        sizes=args.sizes if args.sizes else list(DEFAULT_SIZES),
        shm_size=args.shm_size,
        third_party=args.third_party,
        pin=args.pin,
        # A multiple of 8 bytes: whole float64 items.
        array_size=max(8, args.array_size // 8 * 8),
        cpu_seconds=0.1 if args.quick else 0.4,
    )
    if cfg.trials < 1 or cfg.seconds <= 0:
        print("pyshm bench: --trials and --seconds must be positive", file=sys.stderr)
        return 2
    if args.pin and (os.cpu_count() or 1) < 2:
        print("pyshm bench: --pin needs two CPUs", file=sys.stderr)
        return 2
    bench = Bench(cfg)
    t0 = time.monotonic()
    try:
        bench.run()
    except KeyboardInterrupt:
        print("pyshm bench: interrupted (children reaped, segments unlinked)", file=sys.stderr)
        return 130
    finish_rows(bench.rows, cfg)
    info = machine()
    progress(f"finished in {time.monotonic() - t0:.1f} s")
    if args.json:
        json.dump(document(bench.rows, info, cfg, bench.notes), sys.stdout, indent=1)
        print()
    else:
        print(render(bench.rows, info, cfg, bench.notes))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyshm.bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_arguments(parser)
    return run(parser.parse_args(argv))

