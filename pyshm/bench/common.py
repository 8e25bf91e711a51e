"""What every part of the benchmark shares: the sizes it measures, the run's
configuration, the clock and the progress lines."""

from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import dataclass
from typing import List

ns = time.perf_counter_ns

RT_SIZE = 64                # the round-trip message (children echo exactly this much)
SMALL = 64                  # the small SharedMemory write/read
DEFAULT_SIZES = (64, 4 << 10, 1 << 20, 64 << 20)
DEFAULT_SHM_SIZE = 256 << 20
DEFAULT_ARRAY_SIZE = 64 << 20   # the big float64 array of the object section
SLOT_BIG = 64 << 10          # the slot value read while a writer publishes flat out
TEAR_SIZE = 24              # the struct of the torn-read count (issue 20's figure)
TEAR_READS = 200_000        # reads per trial of that count
SLOT_RT = "pyshm.Slot publish/wait"     # the slot's row in the round trip
# Messages per second while a receiver's CPU is measured, one test each;
# CPU_RATE's carries the goals.
CPU_RATES = (100, 1_000, 10_000, 50_000)
CPU_RATE = 10_000
CHILD_TIMEOUT = 120.0       # seconds a trial may take before we call it hung


@dataclass
class Config:
    quick: bool
    trials: int
    seconds: float
    sizes: List[int]
    shm_size: int
    third_party: bool
    pin: bool
    array_size: int = DEFAULT_ARRAY_SIZE
    cpu_seconds: float = 0.4        # per trial, wait policy and rate (at least 20 messages)


NAME_PREFIX = "pyshm_bench_"   # run_prefix(): every name a run creates starts so
_counter = itertools.count()


def run_prefix(pid: int = 0) -> str:
    """What every name the run of process PID (this one: 0) creates starts
    with -- its segments (segment_name) and iceoryx2's files (children.
    iceoryx_config) -- so that what a run leaves behind can be told from
    everyone else's segments (nothing, tests/tools/test_bench.py checks)."""
    return f"{NAME_PREFIX}{pid or os.getpid()}_"


def segment_name() -> str:
    """A fresh name for a segment this run creates (pyshm's or the standard
    library's); the run unlinks each one."""
    return f"{run_prefix()}{next(_counter)}"


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)
