"""pyshm: named shared memory, message channels and published values between
processes.

The classic recipe in one interpreter (in real use, the second open is
another process's):

    >>> import pyshm
    >>> shm = pyshm.SharedMemory("COMMUNICATION", create=True, size=0x100)
    >>> shm.write(b"data from process 1\\0")
    20
    >>> with pyshm.SharedMemory("COMMUNICATION") as other:     # process 2
    ...     other.read(19)
    b'data from process 1'
    >>> shm.close()
    >>> shm.unlink()        # the name goes: the example can run again

The work is done by the C extension ``pyshm._pyshm``: ``shm_open``/``mmap``
on POSIX, ``CreateFileMappingW``/``MapViewOfFile`` on Windows.
"""

import os as _os

from ._pyshm import (CHANNEL_WAIT, NAME_MAX, PAGE_SIZE, Channel, Loan, MessageBuffer,
                     ProtocolError, SharedMemory, Slot, unlink, wait)
from ._version import __version__


def get_include() -> str:
    """The folder holding ``pyshm.h`` and ``pyshm.c``: the C API that lets a
    native program open the slots and channels Python uses.  Build it with
    one command, e.g. ``cc app.c "$INC/pyshm.c" -I "$INC" -pthread`` (Linux)
    or ``x86_64-w64-mingw32-gcc app.c "$INC/pyshm.c" -I "$INC" -o app.exe``;
    pyshm.h documents every call."""
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "include")


class _Octal(int):
    """An int that shows itself in octal, as permission bits are written."""

    def __repr__(self) -> str:
        return oct(self)


# The default `mode` of every constructor.  Their signatures name it
# (``mode=_DEFAULT_MODE``) so that help() and inspect.signature() show
# ``mode=0o600`` rather than ``mode=384``.
_DEFAULT_MODE = _Octal(0o600)

__all__ = [
    "CHANNEL_WAIT",
    "Channel",
    "Loan",
    "MessageBuffer",
    "NAME_MAX",
    "PAGE_SIZE",
    "ProtocolError",
    "SharedMemory",
    "Slot",
    "unlink",
    "wait",
    "__version__",
    "get_include",
]
