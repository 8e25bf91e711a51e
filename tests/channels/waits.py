"""Waiting for a process or thread to block, for the channel tests.

DEADLINE is the plugin's: generous, so that a loaded machine does not turn
a slow child into a failure.
"""

import os
import platform
import time

import pytest

from pyshm.pytest_plugin import DEADLINE

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


# Linux system call numbers of the calls a channel's wait blocks in, by
# machine (asm/unistd_64.h; arm64: asm-generic/unistd.h).
_SYSCALLS = {
    "x86_64": {"futex": 202, "sleep": (35, 230)},       # nanosleep, clock_nanosleep
    "aarch64": {"futex": 98, "sleep": (101, 115)},
}


def _blocked_in(tid):
    """(system call number, first argument) that thread TID of this process
    is blocked in now, or None when it runs ("running") or is in none."""
    with open(f"/proc/self/task/{tid}/syscall") as f:
        fields = f.read().split()
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), int(fields[1], 16)


def wait_until_in_channel_wait(tid, mapping, wait, timeout=DEADLINE):
    """Wait (deadline, no fixed sleep) until thread TID of this process is
    blocked inside a wait of a channel mapped at MAPPING (its address
    ranges: the shm_mappings fixture), WAIT being the build's scheme
    (pyshm.CHANNEL_WAIT): in FUTEX_WAIT on an address in MAPPING (a wait
    or lock word; "futex"), or in the fallback's nanosleep ("fallback").  A
    thread there has pinned the channel.  Not a state letter: a thread
    waiting for the GIL is in state S too, but in a futex outside the
    channel's mapping.

    Linux only (/proc/self/task/TID/syscall); elsewhere return at once."""
    if not os.path.exists(f"/proc/self/task/{tid}/syscall"):
        return
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        pytest.skip(f"system call numbers of {platform.machine()} not known here")
    assert mapping, "the channel is not mapped in this process"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        call = _blocked_in(tid)
        if call is not None:
            number, arg = call
            if wait == "futex" and number == numbers["futex"] and \
                    any(lo <= arg < hi for lo, hi in mapping):
                return
            if wait == "fallback" and number in numbers["sleep"]:
                return
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess
    pytest.fail(f"thread {tid} never blocked in the channel's wait")
