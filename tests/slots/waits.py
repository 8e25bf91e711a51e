"""Waiting for a thread or process to block in a slot's wait, for the slot tests.

Not a state letter (a thread on its way that waits for the GIL is in state
S too): the thread has registered as a sleeper in the slot's header -- the
futex build sets WAITERS in the wait word gen_seq, Windows counts it in
gen_waiters -- or, in the fallback build (which registers nothing), naps in
nanosleep, which /proc/self/task/TID/syscall shows by number (x86-64's or
arm64's; under qemu-user the host's).
"""

from __future__ import annotations

import os
import struct
import time

import pytest

import pyshm
from pyshm.pytest_plugin import DEADLINE

from .layout import GEN_SEQ, WAITERS

__all__ = ["DEADLINE", "wait_until_in_slot_wait", "nap_syscalls"]

#: nanosleep, clock_nanosleep: x86-64, arm64
nap_syscalls = {35, 230, 101, 115}


def _blocked_in(path: str) -> int | None:
    with open(path) as f:
        fields = f.read().split()
    return int(fields[0]) if fields and fields[0].isdigit() else None


def wait_until_in_slot_wait(name: str, tid: int, pid: int | None = None,
                            timeout: float = DEADLINE) -> None:
    """Wait (deadline, no fixed sleep) until thread TID -- of this process,
    or the only thread of process PID -- the only one waiting on slot NAME,
    is inside the slot's wait."""
    end = time.monotonic() + timeout
    if pyshm.CHANNEL_WAIT == "fallback":
        path = (f"/proc/self/task/{tid}/syscall" if pid is None
                else f"/proc/{pid}/task/{pid}/syscall")
        if not os.path.exists(path):
            return
        while _blocked_in(path) not in nap_syscalls:
            if time.monotonic() > end:
                pytest.fail(f"thread {tid} never napped in the slot's wait")
            time.sleep(0.001)   # pacing a poll with a deadline, not a guess
        return
    with pyshm.SharedMemory(name, readonly=True) as header:
        while True:
            seq, waiters = struct.unpack("<II", header.read(8, GEN_SEQ))
            if (seq & WAITERS) if pyshm.CHANNEL_WAIT == "futex" else waiters > 0:
                return
            if time.monotonic() > end:
                pytest.fail(f"no waiter of {name} ever registered as a sleeper")
            time.sleep(0.001)   # pacing a poll with a deadline, not a guess
