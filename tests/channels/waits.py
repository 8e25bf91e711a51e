"""Waiting for a process or thread to block, for the channel tests.

DEADLINE is the plugin's: generous, so that a loaded machine does not turn
a slow child into a failure.
"""

import os
import time

import pytest

from pyshm.pytest_plugin import DEADLINE

__all__ = ["DEADLINE", "wait_until_sleeping"]


def wait_until_sleeping(pid, tid=None, timeout=DEADLINE):
    """Wait (deadline, no fixed sleep) until PID (thread TID) blocks in the kernel.

    Linux only: /proc/PID[/task/TID]/stat state 'S'.  Elsewhere return at once.
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
