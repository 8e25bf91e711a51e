"""pyshm.asyncio: pyshm objects whose blocking methods are coroutines.

    import pyshm.asyncio

    async def worker(name):
        with pyshm.asyncio.Channel(name) as ch:
            while True:
                job = await ch.recv_obj()
                ...

``pyshm.asyncio.Channel`` subclasses ``pyshm.Channel`` (as ``zmq.asyncio.Socket``
subclasses ``zmq.Socket``): ``send``, ``recv``, ``recv_into``, ``send_obj`` and
``recv_obj`` are coroutines taking the same arguments; everything else is the
sync object's.  ``pyshm.asyncio.Slot`` subclasses ``pyshm.Slot`` the same way:
``await slot.wait(after=None, timeout=None)``.  A message that is there (a
newer generation) is taken at once (the sync call with ``timeout=0``: no
system call, no thread hop).  A channel's wait spins first as a sync one
does before it blocks (not with ``spin=False``), only while the loop has
nothing else to run.  Otherwise the object arms its
readiness (``platform/ready.h``: io_uring's futex wait on Linux, the system
thread pool on Windows, one watcher thread elsewhere) and waits through the
running loop: ``add_reader`` on its descriptor, or, on the ProactorEventLoop
(which has none), the proactor's own wait on its event handle.  No thread per
waiting object, no polling, and nothing changes for senders.

A cancelled or timed-out await loses nothing: a message is only ever taken
by a synchronous call that either returns it or leaves it queued, and the
last waiter of an object takes its registrations back.  close() (from any
task or thread) ends the object's waits with ValueError; a loop closed
under a waiting coroutine leaves nothing behind that the next loop trips on.
An object's waits belong to one loop at a time: awaiting it from another
running loop (another thread's) while the first one still waits on it is a
RuntimeError.
"""

import asyncio as _asyncio
import sys as _sys
from typing import Any, Callable, Optional, Set, TypeVar

from . import _DEFAULT_MODE, _pyshm  # noqa: F401  (_DEFAULT_MODE: see below)

# The types' text signatures say mode=_DEFAULT_MODE.  For the subclasses
# below, inspect.signature() of some CPython 3.9 releases (3.9.10, the
# Windows one CI runs) looks that name up in this module, not in pyshm, and
# fails without it: help() and the documentation showed no signature.

__all__ = ["Channel", "Slot"]

_RECV = 0
_SEND = 1
# How long a loop's registration of an object outlives its last wait (a
# coroutine awaiting message after message registers once).
_IDLE_S = 0.05
_T = TypeVar("_T")


class _Waits:
    """An object's waits in one loop: the futures of its waiting coroutines
    and the registration of its readiness with that loop."""

    __slots__ = ("loop", "count", "futures", "fd", "handle", "token", "proactor", "pending",
                 "over", "registered", "idle", "used")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.count = 0                      # coroutines inside a wait
        self.futures: Set[Any] = set()      # those awaiting readiness now
        self.fd = -1
        self.handle = 0
        self.token = 0                      # our _hold()'s: _take(token) is ours alone
        # The ProactorEventLoop (Windows default) has no add_reader: its
        # proactor waits on the event handle (wait_for_handle, the system
        # thread pool), one wait at a time, issued while futures wait.
        self.proactor = getattr(loop, "_proactor", None) if _sys.platform == "win32" else None
        self.pending: Any = None
        self.over = False                   # let go of: a late _leave is a no-op
        self.registered = False             # the reader (or a pending wait) and the hold
        self.idle = False                   # a _drop_idle timer is set
        self.used = False                   # a wait ended since it was set


def _wake(waits: _Waits) -> None:
    for fut in waits.futures:
        if not fut.done():
            fut.set_result(None)


class _Async:
    """The waiting shared by the async types (mixed in front of the sync one).

    Registrations.  A coroutine that must wait arms the object's watches
    (C: its waiter registrations in the shared header) and waits for the
    object's descriptor through the loop; the last one to leave disarms at
    once, so nothing of this process stays registered in shared memory.
    The loop's own registration (add_reader, or the proactor's pending wait,
    and the hold that keeps the descriptor open) outlives it by _IDLE_S at
    least (close() in the loop's thread ends it at once): a coroutine that
    awaits message after message reuses it instead of paying add_reader and
    remove_reader (two epoll_ctl calls and their Python) every time.
    Another loop that needs the object takes over an idle registration: the
    first loop's callbacks then take nothing (the token of _take) and it
    drops its reader in its own thread.
    """

    _waits: Optional[_Waits] = None

    # ---- readiness with the running loop ---------------------------------------

    def _enter(self, loop: Any) -> _Waits:
        waits = self._waits
        if waits is not None and not waits.over and waits.loop is not loop:
            if waits.count > 0 and not waits.loop.is_closed():
                raise RuntimeError(
                    f"{self!r} is being awaited in another event loop (of another "
                    "thread?): an object's waits belong to one loop at a time")
            # An idle registration of another loop, or one of a loop that
            # was closed under its waiting coroutines.
            self._let_go(waits)
            waits = None
        if waits is None or waits.over:
            waits = _Waits(loop)
            waits.fd, waits.handle, waits.token = self._hold()  # type: ignore[attr-defined]
            if waits.proactor is None:
                try:
                    loop.add_reader(waits.fd, self._on_ready, waits)
                except BaseException:
                    self._release()                 # type: ignore[attr-defined]
                    raise
            waits.registered = True
            self._waits = waits
        waits.count += 1
        return waits

    def _leave(self, waits: _Waits) -> None:
        if waits.over:
            return          # a coroutine of a loop that let go, finalised late
        waits.count -= 1
        if waits.count > 0:
            return
        # No coroutine of this process waits here any more: nothing stays
        # registered in the shared header.
        self._disarm()                              # type: ignore[attr-defined]
        waits.used = True
        if waits.loop.is_closed() or self.closed:   # type: ignore[attr-defined]
            self._forget(waits)
        elif not waits.idle:
            # A timer, not a callback of the loop's next round: a callback
            # would be "something else to run" for the next wait, which
            # then would not spin.
            waits.idle = True
            waits.used = False
            waits.loop.call_later(_IDLE_S, self._drop_idle, waits)

    def _drop_idle(self, waits: _Waits) -> None:
        """The timer of an idle registration: dropped unless a wait came and
        went meanwhile (then looked at again later) or one waits now (its
        _leave sets a new timer)."""
        if waits.over or waits.count > 0:
            waits.idle = False
        elif waits.used:
            waits.used = False
            waits.loop.call_later(_IDLE_S, self._drop_idle, waits)
        else:
            waits.idle = False
            self._forget(waits)

    def _unregister(self, waits: _Waits) -> None:
        """Drop WAITS' registration with its loop (in the loop's thread, or
        with the loop closed or not running) and its hold."""
        if not waits.registered:
            return
        waits.registered = False
        if waits.pending is not None:
            waits.pending.cancel()
            waits.pending = None
        elif waits.proactor is None and not waits.loop.is_closed():
            waits.loop.remove_reader(waits.fd)
        self._release()                             # type: ignore[attr-defined]

    def _forget(self, waits: _Waits) -> None:
        waits.over = True
        waits.count = 0
        waits.futures.clear()
        if self._waits is waits:
            self._disarm()                          # type: ignore[attr-defined]
        self._unregister(waits)

    def _let_go(self, waits: _Waits) -> None:
        """WAITS (another loop's, idle or closed) is let go of from this
        thread."""
        if waits.loop.is_closed() or not waits.loop.is_running():
            self._forget(waits)     # nothing runs that loop now: safe from here
            return
        # Running in another thread, idle: its callbacks must not take what
        # is ours from now on (our _hold's token), and it drops its reader
        # itself, at once.
        waits.over = True
        waits.futures.clear()
        try:
            waits.loop.call_soon_threadsafe(self._unregister, waits)
        except RuntimeError:
            self._unregister(waits)     # it closed meanwhile

    def close(self) -> None:
        """As pyshm.Channel.close(); an idle registration with this thread's
        loop, and waits of a loop that was closed under them (their
        coroutines will never run again), are let go of first, so that the
        descriptor goes now (another thread's running loop lets go of its
        idle registration when its timer runs)."""
        waits = self._waits
        if waits is not None and not waits.over:
            if waits.loop.is_closed():
                self._forget(waits)
            elif waits.count == 0 and (not waits.loop.is_running()
                                       or _asyncio._get_running_loop() is waits.loop):
                self._forget(waits)
        super().close()                             # type: ignore[misc]

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _on_ready(self, waits: _Waits) -> None:
        if waits.over:
            self._unregister(waits)     # let go of by another loop: drop it here
            return
        self._take(waits.token)                     # type: ignore[attr-defined]
        _wake(waits)

    def _on_handle(self, waits: _Waits, fut: Any) -> None:
        if waits.pending is fut:
            waits.pending = None
        # A wait that completed just before its waits were let go of (its
        # callback queued, cancel() too late): the readiness it saw may be
        # a newer waiter's now, whose own wait on the event would miss it
        # were it taken here (a manual-reset event set and reset before the
        # pool looks).  Left alone, that waiter's wait sees it.
        if fut.cancelled() or waits.over:
            return
        self._take(waits.token)                     # type: ignore[attr-defined]
        _wake(waits)

    async def _ready(self, waits: _Waits, deadline: Optional[float]) -> None:
        """Wait for readiness, or for DEADLINE (loop time; the caller's
        next try then raises the TimeoutError)."""
        loop = waits.loop
        fut = loop.create_future()
        waits.futures.add(fut)
        timer = None
        try:
            if waits.proactor is not None and waits.pending is None:
                waits.pending = waits.proactor.wait_for_handle(waits.handle)
                waits.pending.add_done_callback(
                    lambda f, w=waits: self._on_handle(w, f))
            if deadline is not None:
                timer = loop.call_at(deadline, _done, fut)
            await fut
        finally:
            waits.futures.discard(fut)
            if timer is not None:
                timer.cancel()

    async def _wait(self, side: int, size: Callable[[], Optional[int]],
                    attempt: Callable[[float], _T], timeout: Any, tried: bool = False) -> _T:
        """Run ATTEMPT(0) until it does not raise TimeoutError, waiting for
        SIDE's readiness in between (SIZE: what _arm compares with -- the
        bytes a send needs, the generation a slot waits after).  TRIED:
        the caller's own first try (with timeout=None) failed already."""
        seconds = _pyshm._timeout(timeout)
        if not tried:
            try:
                return attempt(0)
            except TimeoutError:
                if seconds == 0:
                    raise
        loop = _asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        need = size()
        waits = self._enter(loop)
        try:
            retried = False
            # The first arm spins first, as a sync wait does before it
            # blocks (adaptive, a few tens of us at most; none with
            # spin=False), but only while the loop has nothing else to run:
            # a peer that answers that soon is met without a wake-up on
            # either side.
            spin = not getattr(loop, "_ready", True)
            while True:
                # Arm, then look (C): 1 when it looks possible now, 2 when
                # the spin saw a move (nothing armed).  After a try that
                # failed anyway, wait: the wait word is armed.
                armed = self._arm(side, need, spin)         # type: ignore[attr-defined]
                spin = False
                if armed == 0 or (armed == 1 and retried):
                    await self._ready(waits, deadline)
                    retried = False
                else:
                    retried = armed == 1
                try:
                    return attempt(0)
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        raise
        finally:
            self._leave(waits)


def _done(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


def _no_size() -> Optional[int]:
    return None


_send = _pyshm.Channel.send
_recv = _pyshm.Channel.recv
_recv_into = _pyshm.Channel.recv_into
_send_obj = _pyshm.Channel.send_obj
_recv_obj = _pyshm.Channel.recv_obj


class Channel(_Async, _pyshm.Channel):
    """A pyshm.Channel whose send, recv, recv_into, send_obj and recv_obj are
    coroutines (see the module's docstring); every other member is the sync
    one's.

    Each first tries the sync call with timeout=0 right here (the common
    case, a message or room there, costs one C call), and waits only when
    that raises TimeoutError."""

    async def send(self, data: Any, timeout: Optional[float] = None) -> None:  # type: ignore[override]
        """Queue the bytes-like DATA as one message, awaiting room; as
        pyshm.Channel.send."""
        if timeout is None:
            try:
                return _send(self, data, 0)
            except TimeoutError:
                pass

        def size() -> int:
            return memoryview(data).nbytes
        return await self._wait(_SEND, size, lambda t: _send(self, data, t), timeout,
                                timeout is None)

    async def recv(self, timeout: Optional[float] = None) -> bytes:  # type: ignore[override]
        """The next message as bytes, awaiting one; as pyshm.Channel.recv."""
        if timeout is None:
            try:
                return _recv(self, 0)
            except TimeoutError:
                pass
        return await self._wait(_RECV, _no_size, lambda t: _recv(self, t), timeout,
                                timeout is None)

    async def recv_into(self, buffer: Any, timeout: Optional[float] = None) -> int:  # type: ignore[override]
        """Copy the next message into BUFFER, awaiting one; as
        pyshm.Channel.recv_into."""
        if timeout is None:
            try:
                return _recv_into(self, buffer, 0)
            except TimeoutError:
                pass
        return await self._wait(_RECV, _no_size, lambda t: _recv_into(self, buffer, t),
                                timeout, timeout is None)

    async def send_obj(self, obj: Any, timeout: Optional[float] = None) -> None:  # type: ignore[override]
        """Send the Python object OBJ, awaiting room; as
        pyshm.Channel.send_obj."""
        if timeout is None:
            try:
                return _send_obj(self, obj, 0)
            except TimeoutError:
                pass

        def size() -> int:
            return int(_pyshm._frame_size(obj))
        return await self._wait(_SEND, size, lambda t: _send_obj(self, obj, t), timeout,
                                timeout is None)

    async def recv_obj(self, timeout: Optional[float] = None) -> Any:
        """The next object message, awaiting one; as pyshm.Channel.recv_obj."""
        if timeout is None:
            try:
                return _recv_obj(self, 0)
            except TimeoutError:
                pass
        return await self._wait(_RECV, _no_size, lambda t: _recv_obj(self, t), timeout,
                                timeout is None)


class Slot(_Async, _pyshm.Slot):
    """A pyshm.Slot whose wait is a coroutine (see the module's docstring);
    every other member is the sync one's."""

    async def wait(self, after: Optional[int] = None,  # type: ignore[override]
                   timeout: Optional[float] = None) -> int:
        """The generation once it is greater than AFTER (None: the last one
        this object returned or saw when the call began), awaiting a
        publish from any process; as pyshm.Slot.wait."""
        if after is None:
            after = self._seen
        last = after
        return await self._wait(_RECV, lambda: last,
                                lambda t: _pyshm.Slot.wait(self, last, t), timeout)
