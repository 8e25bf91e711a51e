"""The benchmark's child processes: the control protocol and one handler per transport.

A child is ``child_main(kind, ctl, args, pin)``, started with the 'spawn'
method: it builds the handler for KIND from ARGS (names, connections,
queues, sockets: all pickled by the 'spawn' machinery), then serves commands
from the control pipe CTL until None or EOF.  A command is a tuple naming a
handler method and its arguments: ``("echo", n)`` answers N round trips,
``("sink", key, size, n, mode)`` receives N messages, ``("objsink", key, n,
mode)`` N objects (arrays: their first and last element are read), ``("cpu",
key, n, mode)`` N messages while measuring its own CPU time, which it sends
before "done"; the slot's child also writes until told to stop (``("flood",
mode)``, ``("tear", mode)``: writing flat out while the parent reads), the
parent's next message on CTL being that stop.  Each answers "ready" once set
up and "done" (or an error text) at the end; between commands the child
blocks on CTL, so a busy-polling child never steals a CPU from another
trial.

Also here, because both ends use them: the busy-poll floor's layout,
``recv_exact`` for sockets and the iceoryx2 glue.
"""

from __future__ import annotations

import importlib
import multiprocessing.connection
import os
import signal
import socket
import struct
import sys
import time
from multiprocessing import shared_memory
from typing import Any, Callable, Dict, List, Tuple

import pyshm
from pyshm.bench.common import RT_SIZE, SLOT_BIG, TEAR_SIZE

Connection = multiprocessing.connection.Connection


# The loops a handler runs, with everything bound to locals before "ready"
# so that the measured loop is nothing but the transport's own calls.

def _serve_echo(ctl: Connection, recv: Callable[[], Any], send: Callable[[Any], Any],
                n: int) -> None:
    ctl.send("ready")
    for _ in range(n):
        send(recv())


def _serve_sink(ctl: Connection, recv: Callable[[], Any], n: int) -> None:
    ctl.send("ready")
    for _ in range(n):
        recv()


def _touch(arr: Any) -> None:
    """Read an array's first and last element: it is there and usable."""
    if len(arr):
        arr[0] + arr[-1]


def _serve_objects(ctl: Connection, recv: Callable[[], Any], n: int) -> None:
    ctl.send("ready")
    for _ in range(n):
        obj = recv()
        if not isinstance(obj, dict):
            _touch(obj)
        del obj


def cpu_seconds() -> float:
    """This process's CPU time, user and system (getrusage where there is one)."""
    if sys.platform == "win32":
        return time.process_time()
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _serve_cpu(ctl: Connection, recv: Callable[[], Any], n: int) -> None:
    ctl.send("ready")
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(n):
        recv()
    c1, t1 = cpu_seconds(), time.perf_counter()
    ctl.send(("cpu", c1 - c0, t1 - t0))


class _Handler:
    def echo(self, ctl: Connection, n: int) -> None:
        raise NotImplementedError

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        raise NotImplementedError

    def objsink(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        raise NotImplementedError

    def cpu(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ChannelHandler(_Handler):
    def __init__(self, req: str, rep: str) -> None:
        self.req = pyshm.Channel(req)
        self.rep = pyshm.Channel(rep)
        self.streams: Dict[str, pyshm.Channel] = {}

    def echo(self, ctl: Connection, n: int) -> None:
        _serve_echo(ctl, self.req.recv, self.rep.send, n)

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        ch = self.streams.get(key)
        if ch is None:
            ch = self.streams[key] = pyshm.Channel(key)
        if mode == "recv_into":
            buf = bytearray(size)
            recv_into = ch.recv_into
            ctl.send("ready")
            for _ in range(n):
                recv_into(buf)
        else:
            _serve_sink(ctl, ch.recv, n)

    def _channel(self, key: str, spin: bool = True) -> pyshm.Channel:
        tag = key if spin else key + " spin=False"
        ch = self.streams.get(tag)
        if ch is None:
            ch = self.streams[tag] = pyshm.Channel(key, spin=spin)
        return ch

    def objsink(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        ch = self._channel(key)
        if mode == "view":
            import numpy
            frombuffer, float64, recv_view = numpy.frombuffer, numpy.float64, ch.recv_view
            ctl.send("ready")
            for _ in range(n):
                with recv_view() as view:
                    arr = frombuffer(view, float64)
                    _touch(arr)
                    del arr         # before the block ends: the loan refuses otherwise
        else:
            _serve_objects(ctl, ch.recv_obj, n)

    def cpu(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        _serve_cpu(ctl, self._channel(key, spin=mode != "block").recv, n)

    def close(self) -> None:
        for ch in (self.req, self.rep, *self.streams.values()):
            ch.close()


class _PipeHandler(_Handler):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def echo(self, ctl: Connection, n: int) -> None:
        _serve_echo(ctl, self.conn.recv_bytes, self.conn.send_bytes, n)

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        _serve_sink(ctl, self.conn.recv_bytes, n)

    def objsink(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        _serve_objects(ctl, self.conn.recv, n)

    def cpu(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        _serve_cpu(ctl, self.conn.recv_bytes, n)


class _QueueHandler(_Handler):
    """multiprocessing.Queue, or faster_fifo.Queue (same get/put).  A pickled
    faster_fifo.Queue names the function that rebuilds it, so unpickling it
    here imports whatever faster-fifo needs."""

    def __init__(self, req: Any, rep: Any) -> None:
        self.req, self.rep = req, rep

    def echo(self, ctl: Connection, n: int) -> None:
        _serve_echo(ctl, self.req.get, self.rep.put, n)

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        _serve_sink(ctl, self.req.get, n)

    def objsink(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        _serve_objects(ctl, self.req.get, n)


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill VIEW from SOCK (a stream: one message may come in pieces)."""
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("socket closed")
        got += n


class _SocketHandler(_Handler):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def echo(self, ctl: Connection, n: int) -> None:
        buf = bytearray(RT_SIZE)
        view = memoryview(buf)
        sock = self.sock
        ctl.send("ready")
        for _ in range(n):
            recv_exact(sock, view)
            sock.sendall(view)

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        view = memoryview(bytearray(size))
        sock, recv_into = self.sock, self.sock.recv_into
        ctl.send("ready")
        for _ in range(n):
            got = recv_into(view)       # usually whole for small messages
            if got < size:
                if got == 0:
                    raise EOFError("socket closed")
                recv_exact(sock, view[got:])


# The busy-poll floor's layout in a 4 KiB stdlib segment: one flag byte per
# direction on its own cache line, the payloads after them.
FLAG_REQ, FLAG_REP, DATA_REQ, DATA_REP = 0, 64, 128, 256


class _FloorHandler(_Handler):
    def __init__(self, name: str) -> None:
        # The parent owns (and unlinks) the segment.
        self.shm = open_untracked(name)
        buf = self.shm.buf
        assert buf is not None
        self.buf: memoryview = buf
        self.seq = 0

    def echo(self, ctl: Connection, n: int) -> None:
        buf, seq = self.buf, self.seq
        ctl.send("ready")
        for _ in range(n):
            seq = (seq + 1) & 255
            while buf[FLAG_REQ] != seq:
                pass
            buf[DATA_REP:DATA_REP + RT_SIZE] = bytes(buf[DATA_REQ:DATA_REQ + RT_SIZE])
            buf[FLAG_REP] = seq
        self.seq = seq

    def close(self) -> None:
        del self.buf
        self.shm.close()


class _ZmqHandler(_Handler):
    """pyzmq PULL sockets, connected to the parent's PUSH sockets over
    ipc://: one for arrays (two in flight), one for small messages."""

    def __init__(self, array_address: str, small_address: str) -> None:
        self.zmq: Any = importlib.import_module("zmq")
        self.ctx = self.zmq.Context()
        self.socks = {}
        for what, address, hwm in (("array", array_address, 2),
                                   ("small", small_address, 1000)):
            sock = self.ctx.socket(self.zmq.PULL)
            sock.setsockopt(self.zmq.RCVHWM, hwm)
            sock.connect(address)
            self.socks[what] = sock

    def objsink(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        sock = self.socks[key]
        if mode == "frame":
            import numpy
            frombuffer, float64, recv = numpy.frombuffer, numpy.float64, sock.recv
            ctl.send("ready")
            for _ in range(n):
                _touch(frombuffer(recv(copy=False).buffer, float64))
        else:
            _serve_objects(ctl, sock.recv_pyobj, n)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.ctx.term()


def open_untracked(name: str) -> shared_memory.SharedMemory:
    """Open a stdlib segment without registering it with the resource
    tracker: before 3.13 every opener registers, and the tracker would unlink
    (and warn about) a segment this process only borrowed."""
    from multiprocessing import resource_tracker
    register = resource_tracker.register
    resource_tracker.register = lambda name, rtype: None
    try:
        return shared_memory.SharedMemory(name)
    finally:
        resource_tracker.register = register


def unlink_untracked(shm: shared_memory.SharedMemory) -> None:
    """Unlink a segment opened with open_untracked() without telling the
    resource tracker, which never heard of it here: a spawn child shares its
    parent's tracker, and an unregister of a name it does not hold prints a
    KeyError traceback there."""
    from multiprocessing import resource_tracker
    unregister = resource_tracker.unregister
    resource_tracker.unregister = lambda name, rtype: None
    try:
        shm.unlink()
    finally:
        resource_tracker.unregister = unregister


class _HandoffHandler(_Handler):
    """The standard library's hand-off of an array: the parent makes a new
    shared_memory segment per array, copies the array in and sends the name
    over a Pipe; here the segment is opened, viewed as an array (no copy),
    closed and unlinked, and acknowledged (two in flight at most)."""

    def __init__(self, conn: Connection, size: int) -> None:
        self.conn, self.size = conn, size

    def objsink(self, ctl: Connection, key: str, n: int, mode: str) -> None:
        import numpy
        conn, shape = self.conn, (self.size // 8,)
        ctl.send("ready")
        for _ in range(n):
            shm = open_untracked(conn.recv())
            arr: Any = numpy.ndarray(shape, numpy.float64, buffer=shm.buf)
            _touch(arr)
            del arr
            shm.close()
            unlink_untracked(shm)
            conn.send(b"")


class _IceoryxHandler(_Handler):
    """iceoryx2 publish-subscribe, polled (its Python binding has no blocking
    receive without an event service)."""

    def __init__(self, service: str, max_len: int) -> None:
        self.iox: Any = importlib.import_module("iceoryx2")
        self.iox.set_log_level_from_env_or(self.iox.LogLevel.Error)
        self.ports = iceoryx_ports(self.iox, service, max_len, side="child")

    def echo(self, ctl: Connection, n: int) -> None:
        sub, pub = self.ports["req_sub"], self.ports["rep_pub"]
        ctl.send("ready")
        for _ in range(n):
            data = iceoryx_take(sub)
            iceoryx_put(pub, data)

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        sub = self.ports["stream_sub"]
        ctl.send("ready")
        for _ in range(n):
            iceoryx_take(sub)


# The torn-read count's values: three equal 64-bit words (a struct whose
# fields a reader can check against each other), precomputed so that the
# writer's loop is nothing but the writes.
TEAR_STRUCT = struct.Struct("=3Q")
assert TEAR_STRUCT.size == TEAR_SIZE
TEAR_VALUES = [TEAR_STRUCT.pack(i, i, i) for i in range(1, 257)]


def _until_stopped(ctl: Connection, write: Callable[[bytes], Any], values: List[bytes]) -> None:
    """WRITE the VALUES in turn, flat out, until the parent's stop arrives on
    CTL (looked for every len(VALUES) writes: a poll is a system call)."""
    poll = ctl.poll
    while True:
        for value in values:
            write(value)
        if poll():
            break
    ctl.recv()


class _SlotHandler(_Handler):
    """pyshm.Slot: the other end of the wake-up round trip (wait for the
    parent's value, read it, publish it back on the reply slot); the writer
    of a big value, publishing flat out or idle while the parent reads; and
    the writer of the torn-read count, rewriting a 24-byte struct flat out
    in a slot or in a raw segment."""

    def __init__(self, req: str, rep: str, big: str, tear_slot: str, tear_raw: str) -> None:
        self.req, self.rep, self.big = pyshm.Slot(req), pyshm.Slot(rep), pyshm.Slot(big)
        self.tear_slot = pyshm.Slot(tear_slot)
        self.tear_raw = pyshm.SharedMemory(tear_raw)

    def echo(self, ctl: Connection, n: int) -> None:
        wait, read, publish = self.req.wait, self.req.read, self.rep.publish
        seen = self.req.generation
        ctl.send("ready")
        for _ in range(n):
            seen = wait(seen)
            publish(read())

    def flood(self, ctl: Connection, mode: str) -> None:
        value = b"f" * SLOT_BIG
        self.big.publish(value)
        ctl.send("ready")
        if mode == "idle":
            ctl.recv()
        else:
            _until_stopped(ctl, self.big.publish, [value] * 16)

    def tear(self, ctl: Connection, mode: str) -> None:
        write = self.tear_slot.publish if mode == "slot" else self.tear_raw.write
        write(TEAR_VALUES[-1])
        ctl.send("ready")
        _until_stopped(ctl, write, TEAR_VALUES)

    def close(self) -> None:
        for obj in (self.req, self.rep, self.big, self.tear_slot, self.tear_raw):
            obj.close()


_HANDLERS: Dict[str, Callable[..., _Handler]] = {
    "channel": _ChannelHandler,
    "pipe": _PipeHandler,
    "queue": _QueueHandler,
    "socket": _SocketHandler,
    "floor": _FloorHandler,
    "faster_fifo": _QueueHandler,
    "iceoryx2": _IceoryxHandler,
    "zmq": _ZmqHandler,
    "handoff": _HandoffHandler,
    "slot": _SlotHandler,
}


def child_main(kind: str, ctl: Connection, args: Tuple[Any, ...], pin: int) -> None:
    # The parent decides when everyone stops (and unlinks); Ctrl-C in the
    # terminal reaches the whole process group, so the child ignores it and
    # leaves when the control pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if pin >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {pin})
    handler = _HANDLERS[kind](*args)
    try:
        while True:
            try:
                cmd = ctl.recv()
            except EOFError:
                break
            if cmd is None:
                break
            try:
                getattr(handler, cmd[0])(ctl, *cmd[1:])
                # (a "cpu" command has sent its figures before "done")
            except Exception as exc:  # reported to the parent, which stops
                ctl.send(f"error: {type(exc).__name__}: {exc}")
                break
            ctl.send("done")
    finally:
        handler.close()


# ---- iceoryx2 glue (optional peer; both ends) -------------------------------------------

def iceoryx_ports(iox: Any, service: str, max_len: int, side: str) -> Dict[str, Any]:
    import ctypes
    node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
    ports: Dict[str, Any] = {"node": node}

    def svc(suffix: str) -> Any:
        return (node.service_builder(iox.ServiceName.new(f"{service}/{suffix}"))
                .publish_subscribe(iox.Slice[ctypes.c_uint8])
                .subscriber_max_buffer_size(16)
                .history_size(0)
                .enable_safe_overflow(False)
                .open_or_create())

    def publisher(s: Any) -> Any:
        return (s.publisher_builder().initial_max_slice_len(max_len)
                .allocation_strategy(iox.AllocationStrategy.PowerOfTwo)
                .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
                .max_loaned_samples(2).create())

    req, rep, stream = svc("req"), svc("rep"), svc("stream")
    ports["services"] = (req, rep, stream)
    if side == "child":
        ports["req_sub"] = req.subscriber_builder().create()
        ports["stream_sub"] = stream.subscriber_builder().create()
        ports["rep_pub"] = publisher(rep)
    else:
        ports["rep_sub"] = rep.subscriber_builder().create()
        ports["req_pub"] = publisher(req)
        ports["stream_pub"] = publisher(stream)
    return ports


def iceoryx_put(pub: Any, data: bytes) -> None:
    import ctypes
    sample = pub.loan_slice_uninit(len(data))
    ctypes.memmove(sample.payload().data_ptr, data, len(data))
    sample.assume_init().send()


def iceoryx_take(sub: Any) -> bytes:
    import ctypes
    receive = sub.receive
    while True:
        sample = receive()
        if sample is not None:
            payload = sample.payload()
            return ctypes.string_at(payload.data_ptr, payload.number_of_elements)
