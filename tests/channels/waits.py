"""Waiting for a process or thread to block, for the channel tests.

DEADLINE is the plugin's: generous, so that a loaded machine does not turn
a slow child into a failure.
"""

import os
import struct
import time

import pytest

import pyshm
from pyshm.pytest_plugin import DEADLINE

from .slots import DATA_SEQ, DATA_WAITERS, WAITERS

__all__ = ["DEADLINE", "wait_until_sleeping", "wait_until_in_channel_wait"]


def wait_until_sleeping(pid, tid=None, timeout=DEADLINE):
    """Wait (deadline, no fixed sleep) until PID (thread TID) blocks in the kernel.

    Linux only: /proc/PID[/task/TID]/stat state 'S'.  Elsewhere return at once.
    For a process whose only busy thread is the one that waits.  A thread
    of a process with other Python threads also shows 'S' while it waits
    for the GIL: see wait_until_in_channel_wait.
    """
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    if not os.path.exists(path):
        return
    end = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < end:
        with open(path) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        # Several readings in a row: a spin phase between short sleeps
        # (fallback waits) must not count as blocked.
        seen = seen + 1 if state == "S" else 0
        if seen >= 3:
            return
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess
    pytest.fail(f"process {pid} never blocked")


# Where a channel's receivers register before they sleep (slots.py mirrors
# the header): the futex build sets WAITERS in the data wait word, Windows
# counts them in the data waiter count.  The fallback registers nothing: its
# waiters nap in nanosleep, which /proc/self/task/TID/syscall shows, by
# number -- x86-64's or arm64's (under qemu-user the host's numbers show);
# no other blocking call of either has those numbers.
_NAPS = {35, 230, 101, 115}     # nanosleep, clock_nanosleep: x86-64, arm64


def _blocked_in(tid):
    """The number of the system call that thread TID of this process is
    blocked in now, or None when it runs ("running") or is in none."""
    with open(f"/proc/self/task/{tid}/syscall") as f:
        fields = f.read().split()
    return int(fields[0]) if fields and fields[0].isdigit() else None


def wait_until_in_channel_wait(name, tid, wait, timeout=DEADLINE):
    """Wait (deadline, no fixed sleep) until thread TID of this process, the
    only one waiting for a message of channel NAME, is inside the channel's
    wait -- and so has pinned it -- WAIT being the build's scheme
    (pyshm.CHANNEL_WAIT): registered as a sleeper in the channel's header
    ("futex", "win32"), or napping in nanosleep ("fallback"; Linux, else
    return at once).  Not a state letter: a thread on its way that waits
    for the GIL is in state S too."""
    end = time.monotonic() + timeout
    if wait == "fallback":
        if not os.path.exists(f"/proc/self/task/{tid}/syscall"):
            return
        while _blocked_in(tid) not in _NAPS:
            if time.monotonic() > end:
                pytest.fail(f"thread {tid} never napped in the channel's wait")
            time.sleep(0.001)   # pacing a poll with a deadline, not a guess
        return
    with pyshm.SharedMemory(name, readonly=True) as header:
        while True:
            seq, waiters = struct.unpack("<II", header.read(8, DATA_SEQ))
            if (seq & WAITERS) if wait == "futex" else waiters > 0:
                return
            if time.monotonic() > end:
                pytest.fail(f"no receiver of {name} ever registered as a sleeper")
            time.sleep(0.001)   # pacing a poll with a deadline, not a guess
