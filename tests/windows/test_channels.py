"""Channels between Windows Python processes: the named semaphores, lock
words and liveness slots of src/platform/sync_win32.c at work.

channels/ runs here whole (between processes, peers killed at any instant
with TerminateProcess, hostile memory); these tests add what only Windows
has: a receiver that is really blocked in WaitForSingleObject (seen through
the channel header's count of waiting receivers) is woken by a send from
another process, and Ctrl-C reaches a blocked call through the wait slices
(there is no EINTR on Windows).
"""

from __future__ import annotations

import struct
import sys
import time

import pytest

import pyshm

pytestmark = pytest.mark.skipif(
    sys.platform != "win32",
    reason="Windows sync objects (tools/winbuild.py test runs these in Windows Python "
           "under Wine)")

RECV_WAITERS = 76       # core/ring.h: ring_header.recv_waiters (receivers blocked now)

BLOCKED_RECEIVER = """
import sys, pyshm
with pyshm.Channel(sys.argv[1]) as c:
    print("ready", flush=True)
    print(c.recv(timeout=120).decode(), flush=True)
"""


def wait_for_blocked_receivers(name: str, count: int, timeout: float = 60.0) -> None:
    """Poll the header until COUNT receivers are registered as blocked."""
    end = time.monotonic() + timeout
    with pyshm.SharedMemory(name, readonly=True) as raw:
        while struct.unpack("<I", raw.read(4, RECV_WAITERS))[0] != count:
            assert time.monotonic() < end, f"{count} receivers never blocked"
            time.sleep(0.001)       # pacing a poll with a deadline, not a guess


def test_a_blocked_receiver_in_another_process_is_woken(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        children = [pyshm_child(BLOCKED_RECEIVER, pyshm_name) for _ in range(2)]
        for child in children:
            child.expect("ready")
        wait_for_blocked_receivers(pyshm_name, 2)
        chan.send(b"one")
        chan.send(b"two")
        got = sorted(child.finish().strip() for child in children)
        assert got == ["one", "two"]
        assert chan.queued == 0


CTRL_C = """
import signal, struct, sys, threading, time, pyshm
signal.signal(signal.SIGINT, signal.default_int_handler)
name = sys.argv[1]
chan, raw = pyshm.Channel(name), pyshm.SharedMemory(name, readonly=True)

def press_ctrl_c():
    # Once the main thread is blocked in recv(), raise SIGINT as a console
    # Ctrl-C would: Python's handler runs here, the main thread must notice.
    while struct.unpack("<I", raw.read(4, 76))[0] == 0:
        time.sleep(0.001)
    signal.raise_signal(signal.SIGINT)

threading.Thread(target=press_ctrl_c).start()
try:
    chan.recv()
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
print(chan.recv(timeout=60).decode(), flush=True)
"""


def test_ctrl_c_interrupts_a_blocked_recv(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        child = pyshm_child(CTRL_C, pyshm_name)
        child.expect("KeyboardInterrupt")
        chan.send(b"usable after")              # the channel still works
        assert child.finish() == "usable after\n"
