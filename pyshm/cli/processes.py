"""Who uses a segment: whether a channel's creator still runs, and (Linux)
which processes have a segment mapped.  For ``ls`` (the CREATOR column) and
``rm --stale``, which decides by them only in a build that cannot count a
channel's users itself (the fallback; see pyshm.cli.segments).  Both
describe this PID namespace only: a process of another one (another
container sharing /dev/shm) has other pids and its own /proc.

What can be known, and how:

* A channel records its creator's process id (``Channel.creator_pid``).
  The creator is alive when a process with that id exists, is not a zombie,
  and (Linux) started before the segment was made -- a younger process holds
  a reused id.  On Windows pyshm does not probe processes (``os.kill`` would
  end them): unknown.
* A process is attached when it has the segment mapped.  Linux lists every
  mapping of a process in ``/proc/PID/maps`` with the device and inode of the
  file behind it, which identify a /dev/shm segment exactly (even one that
  was removed and made again under the same name).  A process whose maps
  this user may not read (another user's, unless we are root) cannot be
  checked; the caller is told how many there were.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Iterable, Optional, Set, Tuple

# A process that started this much after the segment's ctime holds a
# reused pid.  Start times come in clock ticks since boot and the boot time
# in whole seconds, so they are a second or so off at worst.
_REUSE_MARGIN = 2.0


def _proc_stat(pid: int) -> Optional[Tuple[str, float]]:
    """(state letter, start time as a Unix time) of PID from /proc, or None."""
    if sys.platform == "win32":     # (also tells type checkers: no os.sysconf)
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
        with open("/proc/stat", "rb") as f:
            btime = next(float(line.split()[1]) for line in f.read().decode().splitlines()
                         if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # pid (comm) state ppid ... : comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2:].split()
    try:
        state, ticks = fields[0], int(fields[19])   # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None
    return state, btime + ticks / os.sysconf("SC_CLK_TCK")


def creator_alive(pid: Optional[int], since: Optional[float]) -> Optional[bool]:
    """Whether process PID, the creator of a segment made at Unix time SINCE
    (its ctime; None when unknown), still runs: True, False, or None when
    this OS cannot tell."""
    if not pid or sys.platform == "win32":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                # exists: another user's process
    except OSError:
        return None
    stat = _proc_stat(pid) if sys.platform.startswith("linux") else None
    if stat is not None:
        state, started = stat
        if state in ("Z", "X"):
            return False    # exited, not yet reaped by its parent
        if since is not None and started > since + _REUSE_MARGIN:
            return False    # the pid was reused by a younger process
    return True


def attached_processes(segments: Iterable[str],
                       dev_shm: str = "/dev/shm") -> Tuple[Dict[str, Set[int]], int]:
    """{name: pids that have it mapped} for the SEGMENTS in DEV_SHM, and how
    many processes could not be checked.  Linux only (empty elsewhere).
    This process itself is left out."""
    found: Dict[str, Set[int]] = {name: set() for name in segments}
    # (The platform test first also tells type checkers: no os.major on Windows.)
    if not sys.platform.startswith("linux"):
        return found, 0
    wanted: Dict[Tuple[int, int, int], str] = {}
    for name in found:
        try:
            # Not followed: a link's target is not the segment NAME.
            st = os.lstat(os.path.join(dev_shm, name))
        except OSError:
            continue
        wanted[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = name
    if not wanted:
        return found, 0
    unchecked = 0
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as f:
                maps = f.read()
        except PermissionError:
            unchecked += 1
            continue
        except OSError:
            continue        # exited meanwhile
        for line in maps.splitlines():
            # address perms offset dev inode [path]; dev is "major:minor" in hex.
            parts = line.split(None, 5)
            if len(parts) < 6 or parts[4] == b"0":
                continue
            try:
                major, minor = (int(x, 16) for x in parts[3].split(b":"))
                key = (major, minor, int(parts[4]))
            except ValueError:
                continue
            if key in wanted:
                found[wanted[key]].add(int(entry))
    return found, unchecked
