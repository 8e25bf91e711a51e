"""Targets for processes started by multiprocessing with 'spawn' in the
channel tests: the child imports this module by name, and gets its pyshm
objects by unpickling them (pickling by name), never by inheritance.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import pyshm

_worker_channel: Optional[pyshm.Channel] = None


def report(ch: pyshm.Channel, shm: pyshm.SharedMemory) -> None:
    """Say what arrived, through the channel itself."""
    ch.send_obj({"channel": (ch.name, ch.spin, ch.capacity),
                 "segment": (shm.name, shm.readonly, shm.read(5)), "pid": os.getpid()})


def echo(requests: pyshm.Channel, replies: pyshm.Channel, n: int) -> None:
    for _ in range(n):
        replies.send_obj(requests.recv_obj())


def pool_init(ch: pyshm.Channel) -> None:
    global _worker_channel
    _worker_channel = ch


def pool_work(x: Any) -> int:
    assert _worker_channel is not None
    _worker_channel.send_obj((os.getpid(), x))
    return os.getpid()
