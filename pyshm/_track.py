"""track=True: a segment this process created is removed when it exits.

The C types call :func:`register` after a create with ``track=True``, and
every unlink (``unlink()``, ``pyshm.unlink``) calls :func:`forget`.  The
work is done by the standard library's resource tracker, the process that
``multiprocessing.shared_memory`` uses for the same purpose: it is started
on first use, outlives this process, and removes each name still registered
once this process (and any child it forked, which share the tracker) has
exited -- normally or killed.  As in the standard library, it then warns
about "leaked shared_memory objects": a segment that should outlive its
creator must not be tracked.

Only creators track (an opener never does), and never on Windows, where a
name lives until its last handle closes anyway.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Set

_lock = threading.Lock()
_tracked: Set[str] = set()


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held the lock at the fork; that
    # thread is not in the child, and would never let go of it there.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# The tracker's resource type for POSIX shared memory; it removes each
# registered name with shm_unlink(), so names carry the leading "/".
_RTYPE = "shared_memory"


def _key(name: str) -> str:
    return "/" + name


def register(name: str) -> None:
    """Have NAME removed when this process exits without unlinking it."""
    if sys.platform == "win32":
        return
    from multiprocessing import resource_tracker

    with _lock:
        resource_tracker.register(_key(name), _RTYPE)
        _tracked.add(name)


def forget(name: str) -> None:
    """NAME was unlinked: nothing left to remove at exit."""
    with _lock:
        if name not in _tracked:
            return
        _tracked.discard(name)
        from multiprocessing import resource_tracker

        resource_tracker.unregister(_key(name), _RTYPE)


def tracked() -> Set[str]:
    """The names this process tracks now (a copy)."""
    with _lock:
        return set(_tracked)
