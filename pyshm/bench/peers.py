"""The parent's end of each transport the benchmark measures, with its child.

A Peer owns its transport (channels, pipe, queues, socket, segment) and one
child (``children.child_main``) that it drives over a control pipe:
``round_trips`` times request/reply pairs, ``stream`` times N messages one
way, ``objects`` N Python objects one way (a big array, or small dicts),
``cpu`` paces N messages at a fixed rate and returns the receiver's CPU
time; the slot's peer also times reads here while its child writes
(``reads``) and counts torn reads (``torn``).  A subclass says what the
child is given (``child_args``) and how a round trip and a send are spelled
for its transport.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import sys
import tempfile
from multiprocessing import shared_memory
from typing import Any, Callable, Generic, Iterator, List, Optional, Sequence, Tuple, TypeVar

import pyshm
from pyshm.bench.children import (DATA_REP, DATA_REQ, FLAG_REP, FLAG_REQ, Connection,
                                  child_main, iceoryx_ports, iceoryx_put, iceoryx_take,
                                  recv_exact)
from pyshm.bench.common import CHILD_TIMEOUT, RT_SIZE, SLOT_BIG, SLOT_RT, TEAR_SIZE, ns


# The measured loops of the transports whose calls need no glue: each call
# bound to a local (here, a parameter) before the loop, as in the children.

def _timed_round_trips(send: Callable[[bytes], Any], recv: Callable[[], Any], n: int,
                       msg: bytes) -> List[int]:
    out = []
    for _ in range(n):
        t0 = ns()
        send(msg)
        recv()
        out.append(ns() - t0)
    return out


def _send_n(send: Callable[[Any], Any], n: int, data: Any) -> None:
    for _ in range(n):
        send(data)


SMALL_NAME = "x" * 32


def _send_small(send: Callable[[Any], Any], n: int) -> None:
    """N small objects, each made anew (as a real sender would)."""
    for i in range(n):
        send({"id": i, "name": SMALL_NAME})


def _send_paced(send: Callable[[bytes], Any], n: int, rate: float, msg: bytes) -> None:
    """N sends at RATE per second, on a schedule (a late send goes at once,
    never a burst to catch up with more than one)."""
    period = 1e9 / rate
    start = ns()
    for i in range(n):
        target = start + i * period
        while ns() < target:
            pass
        send(msg)


class Peer:
    """The parent's end of one transport, with its child."""

    label = "?"             # its row in the round trip
    # The pyshm row its round trip is compared with, when it is not a peer
    # of pyshm's but another pyshm object (Row.ref).
    rt_ref: Optional[str] = None
    kind = "?"              # its handler in the child
    # Its rows in streaming: (row label, the child's receive mode) each.
    stream_rows: Tuple[Tuple[str, str], ...] = ()
    # Its rows in the object sections (a big array; small dicts) and in the
    # receiver's CPU at a fixed rate: (row label, mode) each.
    array_rows: Tuple[Tuple[str, str], ...] = ()
    small_rows: Tuple[Tuple[str, str], ...] = ()
    cpu_rows: Tuple[Tuple[str, str], ...] = ()

    def __init__(self, ctx: Any, pin: int) -> None:
        self.ctx = ctx
        self.pin = pin
        self.ctl: Optional[Connection] = None
        self.proc: Any = None

    # subclass hooks
    def child_args(self) -> Tuple[Any, ...]:
        raise NotImplementedError

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        raise NotImplementedError

    def stream_key(self, size: int) -> str:
        return ""

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        raise NotImplementedError

    def object_key(self, what: str) -> str:
        """The child's key for WHAT ("array", "small", "cpu")."""
        return ""

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        """Send N objects: OBJ each time ("array"), or small_object(i) ("small")."""
        raise NotImplementedError

    def paced_send(self, n: int, rate: float, msg: bytes) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass

    # the driving
    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.ctl = parent
        self.proc = self.ctx.Process(target=child_main, name=f"pyshm-bench-{self.kind}",
                                     args=(self.kind, child, self.child_args(), self.pin),
                                     daemon=True)
        self.proc.start()
        child.close()

    def _command(self, *cmd: Any) -> None:
        assert self.ctl is not None
        self.ctl.send(cmd)
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self.ctl is not None
        if not self.ctl.poll(CHILD_TIMEOUT):
            raise RuntimeError(f"{self.label}: the child did not answer in {CHILD_TIMEOUT} s")
        answer = self.ctl.recv()
        if answer != word:
            raise RuntimeError(f"{self.label}: the child says {answer!r}")

    def round_trips(self, warm: int, n: int) -> List[int]:
        msg = b"r" * RT_SIZE
        self._command("echo", warm + n)
        self.rt_loop(warm, msg)
        samples = self.rt_loop(n, msg)
        self._expect("done")
        return samples

    def stream(self, size: int, n: int, mode: str, data: bytes) -> int:
        self._command("sink", self.stream_key(size), size, n, mode)
        t0 = ns()
        self.stream_send(size, n, data)
        self._expect("done")
        return ns() - t0

    def objects(self, what: str, n: int, mode: str, obj: Any) -> int:
        self._command("objsink", self.object_key(what), n, mode)
        t0 = ns()
        self.object_send(what, n, mode, obj)
        self._expect("done")
        return ns() - t0

    def cpu(self, n: int, mode: str, rate: float) -> Tuple[float, float]:
        """(CPU seconds, wall seconds) of the child receiving N messages sent
        at RATE per second."""
        assert self.ctl is not None
        self._command("cpu", self.object_key("cpu"), n, mode)
        self.paced_send(n, rate, b"c" * RT_SIZE)
        if not self.ctl.poll(CHILD_TIMEOUT):
            raise RuntimeError(f"{self.label}: the child did not answer in {CHILD_TIMEOUT} s")
        answer = self.ctl.recv()
        if not (isinstance(answer, tuple) and answer[0] == "cpu"):
            raise RuntimeError(f"{self.label}: the child says {answer!r}")
        self._expect("done")
        return float(answer[1]), float(answer[2])

    def stop(self) -> None:
        if self.ctl is not None:
            try:
                self.ctl.send(None)
            except OSError:
                pass
        if self.proc is not None:
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)
        if self.ctl is not None:
            self.ctl.close()
        self.cleanup()


class ChannelPeer(Peer):
    label = "pyshm.Channel"
    stream_rows = (("Channel.recv", "recv"), ("Channel.recv_into", "recv_into"))
    array_rows = (("Channel.send_obj/recv_obj", "obj"),
                  ("Channel.reserve/recv_view", "view"))
    small_rows = (("Channel.send_obj/recv_obj", "obj"),)
    cpu_rows = (("Channel.recv spin=True", "spin"), ("Channel.recv spin=False", "block"))
    kind = "channel"

    def __init__(self, ctx: Any, pin: int, sizes: Sequence[int], array_size: int) -> None:
        super().__init__(ctx, pin)
        self.channels: List[pyshm.Channel] = []
        self.req = self._make(64 << 10)
        self.rep = self._make(64 << 10)
        self.streams = {size: self._make(self.capacity_for(size)) for size in sizes}
        # Two arrays in flight, with room for the frame of send_obj (and the
        # padding a loan may need: none, as two records fill the ring exactly).
        self.objects_ch = {"array": self._make(2 * (array_size + 4096)),
                           "small": self._make(1 << 20), "cpu": self._make(64 << 10)}

    @staticmethod
    def capacity_for(size: int) -> int:
        # Room for several messages in flight: 8 per ring up to 1 MiB, then 2.
        if size <= 1 << 20:
            return max(1 << 20, 8 * (size + 8))
        return 2 * (size + 8)

    def _make(self, capacity: int) -> pyshm.Channel:
        ch = pyshm.Channel(None, create=True, capacity=capacity)
        self.channels.append(ch)
        return ch

    def child_args(self) -> Tuple[Any, ...]:
        return (self.req.name, self.rep.name)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        return _timed_round_trips(self.req.send, self.rep.recv, n, msg)

    def stream_key(self, size: int) -> str:
        return str(self.streams[size].name)

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        _send_n(self.streams[size].send, n, data)

    def object_key(self, what: str) -> str:
        return str(self.objects_ch[what].name)

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        ch = self.objects_ch[what]
        if what == "small":
            _send_small(ch.send_obj, n)
        elif mode == "obj":
            _send_n(ch.send_obj, n, obj)
        else:
            # The one copy, into the ring: the bytes of the array.
            data, reserve = memoryview(obj).cast("B"), ch.reserve
            for _ in range(n):
                with reserve(len(data)) as buf:
                    buf[:] = data

    def paced_send(self, n: int, rate: float, msg: bytes) -> None:
        _send_paced(self.objects_ch["cpu"].send, n, rate, msg)

    def cleanup(self) -> None:
        for ch in self.channels:
            try:
                ch.unlink()
            except FileNotFoundError:
                pass
            ch.close()


End = TypeVar("End", Connection, socket.socket)


class _PairPeer(Peer, Generic[End]):
    """A transport made as a connected pair: this end stays here, the other
    goes to the child and is closed here once the child has it."""

    def __init__(self, ctx: Any, pin: int, pair: Tuple[End, End]) -> None:
        super().__init__(ctx, pin)
        self.end: End = pair[0]
        self.other: End = pair[1]

    def start(self) -> None:
        super().start()
        self.other.close()

    def child_args(self) -> Tuple[Any, ...]:
        return (self.other,)

    def cleanup(self) -> None:
        self.end.close()


class PipePeer(_PairPeer[Connection]):
    label = "multiprocessing.Pipe"
    stream_rows = (("Pipe.recv_bytes", ""),)
    array_rows = small_rows = (("multiprocessing.Pipe", ""),)
    cpu_rows = (("Pipe.recv_bytes", ""),)
    kind = "pipe"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin, ctx.Pipe())

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        return _timed_round_trips(self.end.send_bytes, self.end.recv_bytes, n, msg)

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        _send_n(self.end.send_bytes, n, data)

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        if what == "small":
            _send_small(self.end.send, n)
        else:
            _send_n(self.end.send, n, obj)

    def paced_send(self, n: int, rate: float, msg: bytes) -> None:
        _send_paced(self.end.send_bytes, n, rate, msg)


class SocketPeer(_PairPeer[socket.socket]):
    label = "socket.socketpair"
    stream_rows = (("socketpair.recv_into", ""),)
    kind = "socket"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin, socket.socketpair())

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        sock = self.end
        view = memoryview(bytearray(RT_SIZE))
        out = []
        for _ in range(n):
            t0 = ns()
            sock.sendall(msg)
            recv_exact(sock, view)
            out.append(ns() - t0)
        return out

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        _send_n(self.end.sendall, n, data)


class QueuePeer(Peer):
    label = "multiprocessing.Queue"
    stream_rows = (("Queue.get", ""),)
    array_rows = small_rows = (("multiprocessing.Queue", ""),)
    kind = "queue"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.req, self.rep = self.make_queues(ctx)

    def make_queues(self, ctx: Any) -> Tuple[Any, Any]:
        return ctx.Queue(), ctx.Queue()

    def child_args(self) -> Tuple[Any, ...]:
        return (self.req, self.rep)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        return _timed_round_trips(self.req.put, self.rep.get, n, msg)

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        _send_n(self.req.put, n, data)

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        if what == "small":
            _send_small(self.req.put, n)
        else:
            _send_n(self.req.put, n, obj)

    def cleanup(self) -> None:
        for q in (self.req, self.rep):
            q.close()
            q.join_thread()


class FasterFifoPeer(QueuePeer):
    label = "faster_fifo.Queue"
    stream_rows = (("faster_fifo.Queue.get", ""),)
    array_rows = small_rows = (("faster_fifo.Queue", ""),)
    kind = "faster_fifo"

    def __init__(self, ctx: Any, pin: int, max_size: int) -> None:
        self.max_size = max_size
        super().__init__(ctx, pin)

    def make_queues(self, ctx: Any) -> Tuple[Any, Any]:
        ff = importlib.import_module("faster_fifo")
        importlib.import_module("faster_fifo_reduction")   # pickling for 'spawn'
        # Room for two of the largest messages (pickled) in the stream queue.
        return (ff.Queue(max_size_bytes=2 * self.max_size + (1 << 20)),
                ff.Queue(max_size_bytes=1 << 20))

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        put = self.req.put
        for _ in range(n):
            put(data, timeout=CHILD_TIMEOUT)

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        put = self.req.put
        if what == "small":
            for i in range(n):
                put({"id": i, "name": SMALL_NAME}, timeout=CHILD_TIMEOUT)
        else:
            for _ in range(n):
                put(obj, timeout=CHILD_TIMEOUT)

    def cleanup(self) -> None:
        for q in (self.req, self.rep):
            q.close()


class ZmqPeer(Peer):
    """pyzmq PUSH/PULL over ipc:// (a Unix socket): send_pyobj, and
    send(copy=False) of the array's buffer (the receiver makes an array of
    the frame without a copy; shape and dtype would travel separately)."""

    label = "pyzmq"
    array_rows = (("pyzmq send_pyobj", "pyobj"), ("pyzmq send(copy=False)", "frame"))
    small_rows = (("pyzmq send_pyobj", "pyobj"),)
    kind = "zmq"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.zmq: Any = importlib.import_module("zmq")
        self.dir = tempfile.mkdtemp(prefix="pyshm-bench-zmq-")
        self.context = self.zmq.Context()
        self.socks = {}
        # Arrays: two in flight, as in the channel; small messages: the default.
        for what, hwm in (("array", 2), ("small", 1000)):
            sock = self.context.socket(self.zmq.PUSH)
            sock.setsockopt(self.zmq.SNDHWM, hwm)
            sock.bind(f"ipc://{self.dir}/{what}")
            self.socks[what] = sock

    def child_args(self) -> Tuple[Any, ...]:
        return (f"ipc://{self.dir}/array", f"ipc://{self.dir}/small")

    def object_key(self, what: str) -> str:
        return what

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        sock = self.socks[what]
        if what == "small":
            _send_small(sock.send_pyobj, n)
        elif mode == "pyobj":
            _send_n(sock.send_pyobj, n, obj)
        else:
            send = sock.send
            for _ in range(n):
                send(obj, copy=False)

    def cleanup(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.context.term()
        shutil.rmtree(self.dir, ignore_errors=True)


class HandoffPeer(_PairPeer[Connection]):
    """The standard library's recipe for an array: a new shared_memory
    segment per array, filled here, its name sent over a Pipe; the child
    views it without a copy, then unlinks it (two in flight at most)."""

    label = "stdlib shared_memory hand-off"
    array_rows = (("stdlib shared_memory hand-off", ""),)
    kind = "handoff"

    def __init__(self, ctx: Any, pin: int, size: int) -> None:
        super().__init__(ctx, pin, ctx.Pipe())
        self.size = size

    def child_args(self) -> Tuple[Any, ...]:
        return (self.other, self.size)

    def object_send(self, what: str, n: int, mode: str, obj: Any) -> None:
        import numpy
        from multiprocessing import resource_tracker

        conn = self.end
        for i in range(n):
            if i >= 2:
                conn.recv()                 # an acknowledgement: two in flight
            shm = shared_memory.SharedMemory(create=True, size=self.size)
            if os.name == "posix":
                # The child unlinks it: not this process's tracker's business.
                resource_tracker.unregister(getattr(shm, "_name"), "shared_memory")
            numpy.ndarray(obj.shape, obj.dtype, buffer=shm.buf)[:] = obj
            conn.send(shm.name)
            shm.close()
        for _ in range(min(n, 2)):
            conn.recv()


class SlotPeer(Peer):
    """pyshm.Slot against another process: the wake-up round trip (publish
    on one slot, the child's wait() returns, it reads and publishes back on
    another, wait() here), compared with the channel's; reads of a big value
    while the child publishes flat out or is idle; and the torn reads of a
    24-byte struct the child rewrites flat out, in a slot and in a raw
    SharedMemory.  The slots and the segment are made (and unlinked) here."""

    label = SLOT_RT
    rt_ref = "pyshm.Channel"
    kind = "slot"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.objs: List[Any] = []
        self.req = self._make(pyshm.Slot, RT_SIZE)
        self.rep = self._make(pyshm.Slot, RT_SIZE)
        self.big = self._make(pyshm.Slot, SLOT_BIG)
        self.tear_slot = self._make(pyshm.Slot, TEAR_SIZE)
        self.tear_raw = self._make(pyshm.SharedMemory, TEAR_SIZE)

    def _make(self, kind: Any, size: int) -> Any:
        obj = kind(None, create=True, size=size)
        self.objs.append(obj)
        return obj

    def child_args(self) -> Tuple[Any, ...]:
        return tuple(obj.name for obj in self.objs)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        publish, wait, read = self.req.publish, self.rep.wait, self.rep.read
        seen = self.rep.generation
        out = []
        for _ in range(n):
            t0 = ns()
            publish(msg)
            seen = wait(seen)
            read()
            out.append(ns() - t0)
        return out

    @contextlib.contextmanager
    def apart(self) -> Iterator[None]:
        """This process and the child on two different CPUs for the block,
        where the OS lets us choose (Linux): a reader and a writer that both
        run flat out are measured running at the same time, as a program
        and its reader do.  Left to itself the scheduler often keeps a
        child woken by this process on this process's CPU, where the two
        take turns: the writer's work then halves the reads, and a read is
        torn only when preempted mid-copy (seen: 0 torn in 200,000 reads
        there, 950 on two CPUs).  With --pin they are apart already."""
        # (sys.platform: what mypy knows os has on each platform.)
        if sys.platform == "win32" or not hasattr(os, "sched_setaffinity") or \
                self.proc is None:
            yield
            return
        pid = self.proc.pid
        mine, theirs = os.sched_getaffinity(0), os.sched_getaffinity(pid)
        shared = sorted(mine & theirs)
        if len(shared) < 2:         # pinned apart already (--pin), or one CPU
            yield
            return
        os.sched_setaffinity(0, {shared[0]})
        os.sched_setaffinity(pid, {shared[1]})
        try:
            yield
        finally:
            os.sched_setaffinity(0, mine)
            os.sched_setaffinity(pid, theirs)

    def reads(self, n: int, mode: str) -> int:
        """Nanoseconds for N readinto() of the big value while the child
        publishes it flat out (MODE "busy") or does nothing ("idle"), each
        on a CPU of its own."""
        assert self.ctl is not None
        buf = bytearray(SLOT_BIG)
        readinto = self.big.readinto
        with self.apart():
            self._command("flood", mode)
            t0 = ns()
            for _ in range(n):
                readinto(buf)
            elapsed = ns() - t0
            self.ctl.send("stop")
            self._expect("done")
        return elapsed

    def torn(self, n: int, mode: str) -> int:
        """How many of N reads returned a torn struct (its three words not
        all equal) while the child rewrites it flat out: in the slot (MODE
        "slot") or in the raw segment ("raw")."""
        from pyshm.bench.children import TEAR_STRUCT

        assert self.ctl is not None
        unpack = TEAR_STRUCT.unpack
        torn = 0
        with self.apart():
            self._command("tear", mode)
            if mode == "slot":
                read = self.tear_slot.read
                for _ in range(n):
                    a, b, c = unpack(read())
                    if a != b or b != c:
                        torn += 1
            else:
                read_raw = self.tear_raw.read
                for _ in range(n):
                    a, b, c = unpack(read_raw(TEAR_SIZE))
                    if a != b or b != c:
                        torn += 1
            self.ctl.send("stop")
            self._expect("done")
        return torn

    def cleanup(self) -> None:
        for obj in self.objs:
            try:
                obj.unlink()
            except FileNotFoundError:
                pass
            obj.close()


class FloorPeer(Peer):
    label = "stdlib shared_memory, busy-poll"
    stream_rows = ()            # a round trip only
    kind = "floor"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.shm = shared_memory.SharedMemory(create=True, size=4096)
        self.buf: Optional[memoryview] = self.shm.buf
        self.seq = 0

    def child_args(self) -> Tuple[Any, ...]:
        return (self.shm.name,)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        buf, seq = self.buf, self.seq
        assert buf is not None
        out = []
        for _ in range(n):
            t0 = ns()
            seq = (seq + 1) & 255
            buf[DATA_REQ:DATA_REQ + RT_SIZE] = msg
            buf[FLAG_REQ] = seq
            while buf[FLAG_REP] != seq:
                pass
            bytes(buf[DATA_REP:DATA_REP + RT_SIZE])
            out.append(ns() - t0)
        self.seq = seq
        return out

    def cleanup(self) -> None:
        self.buf = None
        self.shm.close()
        self.shm.unlink()


class IceoryxPeer(Peer):
    label = "iceoryx2 (polled)"
    stream_rows = (("iceoryx2 (polled)", ""),)
    kind = "iceoryx2"

    def __init__(self, ctx: Any, pin: int, max_len: int) -> None:
        super().__init__(ctx, pin)
        self.iox: Any = importlib.import_module("iceoryx2")
        self.iox.set_log_level_from_env_or(self.iox.LogLevel.Error)
        self.service = f"pyshm-bench-{os.getpid()}-{id(self):x}"
        self.max_len = max_len
        self.ports = iceoryx_ports(self.iox, self.service, max_len, side="parent")

    def child_args(self) -> Tuple[Any, ...]:
        return (self.service, self.max_len)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        pub, sub = self.ports["req_pub"], self.ports["rep_sub"]
        out = []
        for _ in range(n):
            t0 = ns()
            iceoryx_put(pub, msg)
            iceoryx_take(sub)
            out.append(ns() - t0)
        return out

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        pub = self.ports["stream_pub"]
        for _ in range(n):
            iceoryx_put(pub, data)

    def cleanup(self) -> None:
        self.ports.clear()
