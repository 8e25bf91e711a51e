"""The parent's end of each transport the benchmark measures, with its child.

A Peer owns its transport (channels, pipe, queues, socket, segment) and one
child (``children.child_main``) that it drives over a control pipe:
``round_trips`` times request/reply pairs, ``stream`` times N messages one
way.  A subclass says what the child is given (``child_args``) and how a
round trip and a send are spelled for its transport.
"""

from __future__ import annotations

import importlib
import os
import socket
from multiprocessing import shared_memory
from typing import Any, Callable, Generic, List, Optional, Sequence, Tuple, TypeVar

import pyshm
from pyshm.bench.children import (DATA_REP, DATA_REQ, FLAG_REP, FLAG_REQ, Connection,
                                  child_main, iceoryx_ports, iceoryx_put, iceoryx_take,
                                  recv_exact)
from pyshm.bench.common import CHILD_TIMEOUT, RT_SIZE, ns


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


def _send_n(send: Callable[[bytes], Any], n: int, data: bytes) -> None:
    for _ in range(n):
        send(data)


class Peer:
    """The parent's end of one transport, with its child."""

    label = "?"             # its row in the round trip
    kind = "?"              # its handler in the child
    # Its rows in streaming: (row label, the child's receive mode) each.
    stream_rows: Tuple[Tuple[str, str], ...] = ()

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
    kind = "channel"

    def __init__(self, ctx: Any, pin: int, sizes: Sequence[int]) -> None:
        super().__init__(ctx, pin)
        self.channels: List[pyshm.Channel] = []
        self.req = self._make(64 << 10)
        self.rep = self._make(64 << 10)
        self.streams = {size: self._make(self.capacity_for(size)) for size in sizes}

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
    kind = "pipe"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin, ctx.Pipe())

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        return _timed_round_trips(self.end.send_bytes, self.end.recv_bytes, n, msg)

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        _send_n(self.end.send_bytes, n, data)


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

    def cleanup(self) -> None:
        for q in (self.req, self.rep):
            q.close()
            q.join_thread()


class FasterFifoPeer(QueuePeer):
    label = "faster_fifo.Queue"
    stream_rows = (("faster_fifo.Queue.get", ""),)
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

    def cleanup(self) -> None:
        for q in (self.req, self.rep):
            q.close()


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
