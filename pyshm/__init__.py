"""pyshm: named shared memory and message channels between Python processes.

    >>> import pyshm
    >>> shm = pyshm.SharedMemory("COMMUNICATION", create=True, size=0x100)
    >>> shm.write(b"data from process 1\\0")          # another process:
    20
    >>> pyshm.SharedMemory("COMMUNICATION").read(19)  # b'data from process 1'

The work is done by the C extension ``pyshm._pyshm``: ``shm_open``/``mmap``
on POSIX, ``CreateFileMappingW``/``MapViewOfFile`` on Windows.
"""

from ._pyshm import (CHANNEL_WAIT, NAME_MAX, PAGE_SIZE, Channel, Loan, MessageBuffer,
                     ProtocolError, SharedMemory, unlink, wait)
from ._version import __version__


class _Octal(int):
    """An int that shows itself in octal, as permission bits are written."""

    def __repr__(self) -> str:
        return oct(self)


# The default `mode` of both constructors.  Their signatures name it
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
    "unlink",
    "wait",
    "__version__",
]
