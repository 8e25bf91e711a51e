"""What every part of the benchmark shares: the sizes it measures, the run's
configuration, the clock and the progress lines."""

from __future__ import annotations

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
CPU_RATE = 10_000.0         # messages per second while a receiver's CPU is measured
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
    cpu_messages: int = 10_000      # per trial and wait policy (1 s at CPU_RATE)


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)
