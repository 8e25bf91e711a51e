"""``python -m pyshm bench``: pyshm against its peers, measured in one run.

Three sections, every figure next to a ratio against a peer measured in the
same run (STYLE.md habit 13):

1. Round trip of a 64-byte message between two processes (median and p99):
   pyshm.Channel, multiprocessing.Pipe, multiprocessing.Queue,
   socket.socketpair, and the standard library's shared_memory with a
   busy-polled flag byte -- the floor for Python code.
2. Streaming messages of each size to another process: Channel ``recv`` and
   ``recv_into``, Pipe ``send_bytes``/``recv_bytes``, socketpair with
   ``recv_into``, Queue; a single-process bytearray slice copy of the same
   size is the limit.  Messages/s and GB/s.
3. SharedMemory ``write``/``read`` of 64 bytes and of a big buffer against
   memoryview slicing of the standard library's shared_memory, with a
   bytearray slice copy as the limit.

Third-party peers (faster-fifo, iceoryx2) are measured when they import, and
skipped with a note when not.  Trials of pyshm and its peers alternate (in
an order rotated each trial) so that noise on the machine hits all alike; a
figure is the median of its trials.  Children are started with the 'spawn'
method, each driven over a control pipe: it blocks there between trials
(so a busy-polling child never steals a CPU from another trial), and says
"ready" before each trial starts.

The goals of issue 5 are printed next to the figures they concern (met /
short); a missed goal is a finding, never a failure: the exit status is 0
unless something broke.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import shared_memory
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyshm
from pyshm._units import fmt_size, parse_size

Connection = multiprocessing.connection.Connection
ns = time.perf_counter_ns

RT_SIZE = 64
DEFAULT_SIZES = (64, 4 << 10, 1 << 20, 64 << 20)
DEFAULT_SHM_SIZE = 256 << 20
SMALL = 64
CHILD_TIMEOUT = 120.0      # seconds a trial may take before we call it hung

# ---- small helpers -----------------------------------------------------------------

def positive_size(text: str) -> int:
    """parse_size, refusing 0: every size the benchmark takes is one it sends or copies."""
    value = parse_size(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive: {text!r}")
    return value


def parse_sizes(text: str) -> List[int]:
    return [positive_size(part) for part in text.split(",") if part.strip()]


def fmt_num(x: float) -> str:
    """Three significant digits, thousands separated, no exponent."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


def percentile(samples: Sequence[int], q: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[k])


def _progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# ---- results ---------------------------------------------------------------------

@dataclass
class Row:
    """One measured figure.  ``value`` is in ``unit``; ``better`` says which
    way is good.  ``ratio`` is this pyshm row over ``ratio_to`` (a peer or the
    limit), or, on a peer row, the pyshm row named in ``ratio_of`` over it."""

    section: str
    test: str
    impl: str
    unit: str
    better: str                     # "lower" (a time) or "higher" (a rate)
    value: float
    p99: Optional[float] = None     # round trips
    gbps: Optional[float] = None    # streaming and big copies
    ratio: Optional[float] = None
    ratio_of: Optional[str] = None  # which pyshm row the ratio compares
    goal: Optional[str] = None
    goal_met: Optional[bool] = None
    trials: List[float] = field(default_factory=list)
    note: Optional[str] = None


@dataclass
class Config:
    quick: bool
    trials: int
    seconds: float
    sizes: List[int]
    shm_size: int
    third_party: bool
    pin: bool


# ---- children --------------------------------------------------------------------
#
# A child is _child_main(kind, ctl, args): it builds the handler for KIND from
# ARGS (names, connections, queues, sockets: all pickled by the 'spawn'
# machinery), then serves commands from CTL until None or EOF.  Each command
# answers "ready" once set up and "done" (or an error text) at the end.


class _Handler:
    def echo(self, ctl: Connection, n: int) -> None:
        raise NotImplementedError

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ChannelHandler(_Handler):
    def __init__(self, req: str, rep: str) -> None:
        self.req = pyshm.Channel(req)
        self.rep = pyshm.Channel(rep)
        self.streams: Dict[str, pyshm.Channel] = {}

    def echo(self, ctl: Connection, n: int) -> None:
        recv, send = self.req.recv, self.rep.send
        ctl.send("ready")
        for _ in range(n):
            send(recv())

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
            recv = ch.recv
            ctl.send("ready")
            for _ in range(n):
                recv()

    def close(self) -> None:
        for ch in (self.req, self.rep, *self.streams.values()):
            ch.close()


class _PipeHandler(_Handler):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def echo(self, ctl: Connection, n: int) -> None:
        recv, send = self.conn.recv_bytes, self.conn.send_bytes
        ctl.send("ready")
        for _ in range(n):
            send(recv())

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        recv = self.conn.recv_bytes
        ctl.send("ready")
        for _ in range(n):
            recv()


class _QueueHandler(_Handler):
    """multiprocessing.Queue, or faster_fifo.Queue (same get/put)."""

    def __init__(self, req: Any, rep: Any) -> None:
        self.req, self.rep = req, rep

    def echo(self, ctl: Connection, n: int) -> None:
        get, put = self.req.get, self.rep.put
        ctl.send("ready")
        for _ in range(n):
            put(get())

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        get = self.req.get
        ctl.send("ready")
        for _ in range(n):
            get()


class _FasterFifoHandler(_QueueHandler):
    def __init__(self, req: Any, rep: Any) -> None:
        # Unpickling a faster_fifo.Queue needs its reduction module imported,
        # which the 'spawn' child did before unpickling its arguments (see
        # _child_main: the module is named in the arguments).
        super().__init__(req, rep)


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
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
            _recv_exact(sock, view)
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
                _recv_exact(sock, view[got:])


# The busy-poll floor's layout in a 4 KiB stdlib segment: one flag byte per
# direction on its own cache line, the payloads after them.
_FLAG_REQ, _FLAG_REP, _DATA_REQ, _DATA_REP = 0, 64, 128, 256


class _FloorHandler(_Handler):
    def __init__(self, name: str) -> None:
        # The parent owns (and unlinks) the segment.  Python < 3.13 registers
        # every opened segment with the resource tracker, which would unlink
        # it when this child exits, so the child opens it untracked.
        from multiprocessing import resource_tracker
        register = resource_tracker.register
        resource_tracker.register = lambda name, rtype: None
        try:
            self.shm = shared_memory.SharedMemory(name)
        finally:
            resource_tracker.register = register
        buf = self.shm.buf
        assert buf is not None
        self.buf: memoryview = buf
        self.seq = 0

    def echo(self, ctl: Connection, n: int) -> None:
        buf, seq = self.buf, self.seq
        ctl.send("ready")
        for _ in range(n):
            seq = (seq + 1) & 255
            while buf[_FLAG_REQ] != seq:
                pass
            buf[_DATA_REP:_DATA_REP + RT_SIZE] = bytes(buf[_DATA_REQ:_DATA_REQ + RT_SIZE])
            buf[_FLAG_REP] = seq
        self.seq = seq

    def close(self) -> None:
        del self.buf
        self.shm.close()


class _IceoryxHandler(_Handler):
    """iceoryx2 publish-subscribe, polled (its Python binding has no blocking
    receive without an event service)."""

    def __init__(self, service: str, max_len: int) -> None:
        self.iox: Any = importlib.import_module("iceoryx2")
        self.iox.set_log_level_from_env_or(self.iox.LogLevel.Error)
        self.ports = _iceoryx_ports(self.iox, service, max_len, side="child")

    def echo(self, ctl: Connection, n: int) -> None:
        sub, pub = self.ports["req_sub"], self.ports["rep_pub"]
        ctl.send("ready")
        for _ in range(n):
            data = _iceoryx_take(sub)
            _iceoryx_put(pub, data)

    def sink(self, ctl: Connection, key: str, size: int, n: int, mode: str) -> None:
        sub = self.ports["stream_sub"]
        ctl.send("ready")
        for _ in range(n):
            _iceoryx_take(sub)


_HANDLERS: Dict[str, Callable[..., _Handler]] = {
    "channel": _ChannelHandler,
    "pipe": _PipeHandler,
    "queue": _QueueHandler,
    "socket": _SocketHandler,
    "floor": _FloorHandler,
    "faster_fifo": _FasterFifoHandler,
    "iceoryx2": _IceoryxHandler,
}


def _child_main(kind: str, ctl: Connection, args: Tuple[Any, ...], pin: int) -> None:
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
            except Exception as exc:  # reported to the parent, which stops
                ctl.send(f"error: {type(exc).__name__}: {exc}")
                break
            ctl.send("done")
    finally:
        handler.close()


# ---- iceoryx2 glue (optional peer) ----------------------------------------------------

def _iceoryx_ports(iox: Any, service: str, max_len: int, side: str) -> Dict[str, Any]:
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


def _iceoryx_put(pub: Any, data: bytes) -> None:
    import ctypes
    sample = pub.loan_slice_uninit(len(data))
    ctypes.memmove(sample.payload().data_ptr, data, len(data))
    sample.assume_init().send()


def _iceoryx_take(sub: Any) -> bytes:
    import ctypes
    receive = sub.receive
    while True:
        sample = receive()
        if sample is not None:
            payload = sample.payload()
            return ctypes.string_at(payload.data_ptr, payload.number_of_elements)


# ---- parent side: peers ---------------------------------------------------------------

class Peer:
    """The parent's end of one transport, with its child."""

    label = "?"
    kind = "?"
    sizes_ok: Callable[[int], bool] = staticmethod(lambda size: True)

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
        self.proc = self.ctx.Process(target=_child_main, name=f"pyshm-bench-{self.kind}",
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
        send, recv = self.req.send, self.rep.recv
        out = []
        for _ in range(n):
            t0 = ns()
            send(msg)
            recv()
            out.append(ns() - t0)
        return out

    def stream_key(self, size: int) -> str:
        return str(self.streams[size].name)

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        send = self.streams[size].send
        for _ in range(n):
            send(data)

    def cleanup(self) -> None:
        for ch in self.channels:
            try:
                ch.unlink()
            except FileNotFoundError:
                pass
            ch.close()


class PipePeer(Peer):
    label = "multiprocessing.Pipe"
    kind = "pipe"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.conn, self.other = ctx.Pipe()

    def start(self) -> None:
        super().start()
        self.other.close()

    def child_args(self) -> Tuple[Any, ...]:
        return (self.other,)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        send, recv = self.conn.send_bytes, self.conn.recv_bytes
        out = []
        for _ in range(n):
            t0 = ns()
            send(msg)
            recv()
            out.append(ns() - t0)
        return out

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        send = self.conn.send_bytes
        for _ in range(n):
            send(data)

    def cleanup(self) -> None:
        self.conn.close()


class QueuePeer(Peer):
    label = "multiprocessing.Queue"
    kind = "queue"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.req, self.rep = self.make_queues(ctx)

    def make_queues(self, ctx: Any) -> Tuple[Any, Any]:
        return ctx.Queue(), ctx.Queue()

    def child_args(self) -> Tuple[Any, ...]:
        return (self.req, self.rep)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        put, get = self.req.put, self.rep.get
        out = []
        for _ in range(n):
            t0 = ns()
            put(msg)
            get()
            out.append(ns() - t0)
        return out

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        put = self.req.put
        for _ in range(n):
            put(data)

    def cleanup(self) -> None:
        for q in (self.req, self.rep):
            q.close()
            q.join_thread()


class FasterFifoPeer(QueuePeer):
    label = "faster_fifo.Queue"
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


class SocketPeer(Peer):
    label = "socket.socketpair"
    kind = "socket"

    def __init__(self, ctx: Any, pin: int) -> None:
        super().__init__(ctx, pin)
        self.sock, self.other = socket.socketpair()

    def start(self) -> None:
        super().start()
        self.other.close()

    def child_args(self) -> Tuple[Any, ...]:
        return (self.other,)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        sock = self.sock
        view = memoryview(bytearray(RT_SIZE))
        out = []
        for _ in range(n):
            t0 = ns()
            sock.sendall(msg)
            _recv_exact(sock, view)
            out.append(ns() - t0)
        return out

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        sendall = self.sock.sendall
        for _ in range(n):
            sendall(data)

    def cleanup(self) -> None:
        self.sock.close()


class FloorPeer(Peer):
    label = "stdlib shared_memory, busy-poll"
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
            buf[_DATA_REQ:_DATA_REQ + RT_SIZE] = msg
            buf[_FLAG_REQ] = seq
            while buf[_FLAG_REP] != seq:
                pass
            bytes(buf[_DATA_REP:_DATA_REP + RT_SIZE])
            out.append(ns() - t0)
        self.seq = seq
        return out

    def cleanup(self) -> None:
        self.buf = None
        self.shm.close()
        self.shm.unlink()


class IceoryxPeer(Peer):
    label = "iceoryx2 (polled)"
    kind = "iceoryx2"

    def __init__(self, ctx: Any, pin: int, max_len: int) -> None:
        super().__init__(ctx, pin)
        self.iox: Any = importlib.import_module("iceoryx2")
        self.iox.set_log_level_from_env_or(self.iox.LogLevel.Error)
        self.service = f"pyshm-bench-{os.getpid()}-{id(self):x}"
        self.max_len = max_len
        self.ports = _iceoryx_ports(self.iox, self.service, max_len, side="parent")

    def child_args(self) -> Tuple[Any, ...]:
        return (self.service, self.max_len)

    def rt_loop(self, n: int, msg: bytes) -> List[int]:
        pub, sub = self.ports["req_pub"], self.ports["rep_sub"]
        out = []
        for _ in range(n):
            t0 = ns()
            _iceoryx_put(pub, msg)
            _iceoryx_take(sub)
            out.append(ns() - t0)
        return out

    def stream_send(self, size: int, n: int, data: bytes) -> None:
        pub = self.ports["stream_pub"]
        for _ in range(n):
            _iceoryx_put(pub, data)

    def cleanup(self) -> None:
        self.ports.clear()


# ---- the runner ------------------------------------------------------------------------

class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rows: List[Row] = []
        self.notes: List[str] = []
        self.ctx = multiprocessing.get_context("spawn")
        self.peers: List[Peer] = []
        self.pins = (0, 1) if cfg.pin else (-1, -1)

    # trial sizing: calibrate once (doubles as warm-up), then size each trial
    # to last about cfg.seconds
    def trial_count(self, per_op_ns: float, lo: int, hi: int) -> int:
        want = int(self.cfg.seconds * 1e9 / max(per_op_ns, 1.0))
        return max(lo, min(hi, want))

    # -- section 1 --
    def round_trips(self, peers: List[Peer]) -> None:
        test = f"round trip {fmt_size(RT_SIZE)}"
        sizes: Dict[str, int] = {}
        for peer in peers:
            t = peer.round_trips(50, 200)
            sizes[peer.label] = self.trial_count(statistics.median(t), 200, 200_000)
        medians: Dict[str, List[float]] = {p.label: [] for p in peers}
        p99s: Dict[str, List[float]] = {p.label: [] for p in peers}
        for trial in range(self.cfg.trials):
            _progress(f"{test}: trial {trial + 1}/{self.cfg.trials}")
            for peer in _rotated(peers, trial):
                samples = peer.round_trips(100, sizes[peer.label])
                medians[peer.label].append(statistics.median(samples) / 1e3)
                p99s[peer.label].append(percentile(samples, 0.99) / 1e3)
        for peer in peers:
            self.rows.append(Row("round trip", test, peer.label, "us", "lower",
                                 statistics.median(medians[peer.label]),
                                 p99=statistics.median(p99s[peer.label]),
                                 trials=medians[peer.label]))

    # -- section 2 --
    def streams(self, peers: List[Peer]) -> None:
        for size in self.cfg.sizes:
            test = f"stream {fmt_size(size)}"
            data = b"s" * size
            src, dst = bytearray(data), bytearray(size)
            runs: List[Tuple[str, Callable[[int], int]]] = []
            for peer in peers:
                if peer.kind == "floor":
                    continue
                if peer.kind == "channel":
                    for mode in ("recv", "recv_into"):
                        runs.append((f"Channel.{mode}", _bind_stream(peer, size, mode, data)))
                else:
                    runs.append((_stream_label(peer), _bind_stream(peer, size, "", data)))
            runs.append(("memcpy (bytearray slice copy)", _bind_memcpy(src, dst)))
            counts: Dict[str, int] = {}
            # Calibrate: enough messages to go round a ring twice (faults it in).
            n0 = max(2, min(20_000, (4 << 20) // size))
            for label, fn in runs:
                per = fn(n0) / n0
                counts[label] = self.trial_count(per, 2, 2_000_000)
            rates: Dict[str, List[float]] = {label: [] for label, _ in runs}
            for trial in range(self.cfg.trials):
                _progress(f"{test}: trial {trial + 1}/{self.cfg.trials}")
                for label, fn in _rotated(runs, trial):
                    n = counts[label]
                    rates[label].append(n / (fn(n) / 1e9))
            for label, _ in runs:
                rate = statistics.median(rates[label])
                self.rows.append(Row("streaming", test, label, "msg/s", "higher", rate,
                                     gbps=rate * size / 1e9, trials=rates[label]))
            del data, src, dst

    # -- section 3 --
    def shm_copies(self) -> None:
        big = self.cfg.shm_size
        mine = pyshm.SharedMemory(None, create=True, size=big)
        theirs = shared_memory.SharedMemory(create=True, size=big)
        try:
            self._shm_section(mine, theirs, big)
        finally:
            mine.close()
            mine.unlink()
            theirs.close()
            theirs.unlink()

    def _shm_section(self, mine: pyshm.SharedMemory, theirs: shared_memory.SharedMemory,
                     big: int) -> None:
        sbuf = theirs.buf
        assert sbuf is not None
        small = b"w" * SMALL
        data = bytes(big)
        # The limit copies bytearray to bytearray: CPython's bytearray slice
        # assignment from anything else (bytes, memoryview) first copies the
        # source into a new bytearray -- a fresh allocation, page faults and
        # all -- which would measure the allocator, not memcpy.
        small_ba = bytearray(small)
        data_ba = bytearray(data)
        ba = bytearray(big)
        dst = bytearray(big)
        dst_view = memoryview(dst)
        sbuf_big = sbuf[:big]       # the stdlib maps whole pages
        # Fault everything in first: steady-state copies are what is compared.
        mine.write(data)
        sbuf[:big] = data
        ba[:] = data_ba
        dst[:] = data_ba

        def loop(body: Callable[[], object]) -> Callable[[int], int]:
            def run(n: int) -> int:
                t0 = ns()
                for _ in range(n):
                    body()
                return ns() - t0
            return run

        mw, mr = mine.write, mine.read
        small_tests: List[Tuple[str, List[Tuple[str, Callable[[int], int]]]]] = [
            (f"write {fmt_size(SMALL)}", [
                ("pyshm SharedMemory.write", _small_write_pyshm(mw, small)),
                ("stdlib memoryview slice", _small_write_slice(sbuf, small)),
                ("bytearray slice (limit)", _small_write_slice(ba, small_ba)),
            ]),
            (f"read {fmt_size(SMALL)}", [
                ("pyshm SharedMemory.read", _small_read_pyshm(mr)),
                ("stdlib memoryview slice", _small_read_mv(sbuf)),
                ("bytearray slice (limit)", _small_read_bytearray(ba)),
            ]),
            (f"write+read {fmt_size(SMALL)}", [
                ("pyshm SharedMemory.write+read", _small_pair_pyshm(mw, mr, small)),
                ("stdlib memoryview slice", _small_pair_mv(sbuf, small)),
                ("bytearray slice (limit)", _small_pair_bytearray(ba, small_ba)),
            ]),
        ]
        for test, runs in small_tests:
            self._interleaved("SharedMemory", test, runs, "ns", "lower", 1.0, None)
        # The big copies: steady state on mappings already faulted in.
        big_tests: List[Tuple[str, List[Tuple[str, Callable[[int], int]]]]] = [
            (f"write {fmt_size(big)}", [
                ("pyshm SharedMemory.write", loop(lambda: mw(data))),
                ("stdlib memoryview slice", _big_copy(sbuf_big, data)),
                ("bytearray slice (limit)", _big_copy(ba, data_ba)),
            ]),
            (f"read {fmt_size(big)} (new bytes)", [
                ("pyshm SharedMemory.read", loop(lambda: mr())),
                ("stdlib memoryview slice", loop(lambda: bytes(sbuf[0:big]))),
                ("bytearray slice (limit)", loop(lambda: bytes(ba))),
            ]),
            (f"readinto {fmt_size(big)}", [
                ("pyshm SharedMemory.readinto", loop(lambda: mine.readinto(dst))),
                ("stdlib memoryview slice", _big_copy(dst_view, sbuf_big)),
                ("bytearray slice (limit)", _big_copy(dst, ba)),
            ]),
            (f"create + first write {fmt_size(big)}", [
                ("pyshm SharedMemory.write", _fresh_pyshm(data)),
                ("stdlib memoryview slice", _fresh_stdlib(data)),
                ("bytearray slice (limit)", loop(lambda: bytearray(data_ba))),
            ]),
        ]
        for test, runs in big_tests:
            self._interleaved("SharedMemory", test, runs, "GB/s", "higher", big / 1e9, big)
        del sbuf, sbuf_big, dst_view

    def _interleaved(self, section: str, test: str,
                     runs: List[Tuple[str, Callable[[int], int]]], unit: str, better: str,
                     scale: float, nbytes: Optional[int]) -> None:
        """Time each run per operation; a rate unit turns ns/op into SCALE per second."""
        counts = {}
        for label, fn in runs:
            fn(2)
            n0 = 1000 if nbytes is None else 2
            counts[label] = self.trial_count(fn(n0) / n0, 2 if nbytes else 1000, 5_000_000)
        per: Dict[str, List[float]] = {label: [] for label, _ in runs}
        for trial in range(self.cfg.trials):
            _progress(f"{section} {test}: trial {trial + 1}/{self.cfg.trials}")
            for label, fn in _rotated(runs, trial):
                n = counts[label]
                per[label].append(fn(n) / n)
        for label, _ in runs:
            t = statistics.median(per[label])
            if better == "lower":
                self.rows.append(Row(section, test, label, unit, better, t, trials=per[label]))
            else:   # a rate: SCALE (e.g. GB) per second
                self.rows.append(Row(section, test, label, unit, better, scale / (t / 1e9),
                                     gbps=scale / (t / 1e9),
                                     trials=[scale / (x / 1e9) for x in per[label]]))

    # -- the whole run --
    def run(self) -> None:
        cfg = self.cfg
        rt_peers: List[Peer] = []
        try:
            _progress("starting the children ('spawn')")
            pin = self.pins[1]
            rt_peers.append(ChannelPeer(self.ctx, pin, cfg.sizes))
            rt_peers.append(PipePeer(self.ctx, pin))
            rt_peers.append(QueuePeer(self.ctx, pin))
            rt_peers.append(SocketPeer(self.ctx, pin))
            rt_peers.append(FloorPeer(self.ctx, pin))
            if cfg.third_party:
                rt_peers.extend(self._third_party(pin))
            else:
                self.notes.append("third-party peers skipped (--no-third-party)")
            for peer in rt_peers:
                self.peers.append(peer)
                peer.start()
            if self.pins[0] >= 0 and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {self.pins[0]})
            self.round_trips(rt_peers)
            self.streams(rt_peers)
        finally:
            for peer in self.peers:
                peer.stop()
            self.peers.clear()
        self.shm_copies()

    def _third_party(self, pin: int) -> List[Peer]:
        peers: List[Peer] = []
        biggest = max(self.cfg.sizes)
        for name, make in (
            ("faster-fifo", lambda: FasterFifoPeer(self.ctx, pin, biggest)),
            ("iceoryx2", lambda: IceoryxPeer(self.ctx, pin, max(RT_SIZE, biggest))),
        ):
            try:
                peers.append(make())
            except ImportError as exc:
                self.notes.append(f"{name} skipped: not installed ({exc}); "
                                  f"pip install {name} to include it")
            except Exception as exc:
                self.notes.append(f"{name} skipped: {type(exc).__name__}: {exc}")
        return peers


def _rotated(items: List[Any], k: int) -> List[Any]:
    k %= len(items)
    return items[k:] + items[:k]


def _stream_label(peer: Peer) -> str:
    return {
        "pipe": "Pipe.recv_bytes",
        "queue": "Queue.get",
        "socket": "socketpair.recv_into",
        "faster_fifo": "faster_fifo.Queue.get",
        "iceoryx2": "iceoryx2 (polled)",
    }.get(peer.kind, peer.label)


def _bind_stream(peer: Peer, size: int, mode: str, data: bytes) -> Callable[[int], int]:
    return lambda n: peer.stream(size, n, mode, data)


def _bind_memcpy(src: bytearray, dst: bytearray) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            dst[:] = src
        return ns() - t0
    return run


# The 64-byte loops are written out, each in the natural spelling of its
# API, so that no peer pays for a lambda or a method lookup the others skip.

def _small_write_pyshm(write: Callable[[bytes], int], small: bytes) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            write(small)
        return ns() - t0
    return run


def _small_write_slice(buf: Any, small: bytes | bytearray) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL] = small
        return ns() - t0
    return run


def _small_read_pyshm(read: Callable[[int], bytes]) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            read(SMALL)
        return ns() - t0
    return run


def _small_read_mv(buf: memoryview) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            bytes(buf[0:SMALL])
        return ns() - t0
    return run


def _small_read_bytearray(buf: bytearray) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL]        # one copy into a new object, like read()
        return ns() - t0
    return run


def _big_copy(dst: Any, src: Any) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            dst[:] = src
        return ns() - t0
    return run


def _small_pair_bytearray(buf: bytearray, small: bytearray) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL] = small
            buf[0:SMALL]
        return ns() - t0
    return run


def _small_pair_pyshm(write: Callable[[bytes], int], read: Callable[[int], bytes],
                      small: bytes) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            write(small)
            read(SMALL)
        return ns() - t0
    return run


def _small_pair_mv(buf: Any, small: bytes) -> Callable[[int], int]:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL] = small
            bytes(buf[0:SMALL])
        return ns() - t0
    return run


def _fresh_pyshm(data: bytes) -> Callable[[int], int]:
    def run(n: int) -> int:
        total = 0
        for _ in range(n):
            t0 = ns()
            shm = pyshm.SharedMemory(None, create=True, size=len(data))
            try:
                shm.write(data)
                total += ns() - t0
            finally:
                shm.close()
                shm.unlink()
        return total
    return run


def _fresh_stdlib(data: bytes) -> Callable[[int], int]:
    def run(n: int) -> int:
        total = 0
        for _ in range(n):
            t0 = ns()
            shm = shared_memory.SharedMemory(create=True, size=len(data))
            try:
                buf = shm.buf
                assert buf is not None
                buf[:len(data)] = data
                total += ns() - t0
                del buf
            finally:
                shm.close()
                shm.unlink()
        return total
    return run


# ---- ratios and goals --------------------------------------------------------------

LIMITS = ("stdlib shared_memory, busy-poll", "memcpy (bytearray slice copy)",
          "bytearray slice (limit)")
ALLOCATING = ("Pipe.recv_bytes", "Queue.get", "faster_fifo.Queue.get", "iceoryx2 (polled)")


def _is_pyshm(impl: str) -> bool:
    return impl.startswith(("pyshm", "Channel."))


def _pyshm_ref(rows: List[Row], impl: str) -> Optional[Row]:
    """The pyshm row a peer row is compared with: Channel.recv against peers
    that hand out a new object per message, Channel.recv_into against the
    ones that fill a buffer (socketpair) and the memcpy limit."""
    mine = [r for r in rows if _is_pyshm(r.impl)]
    if not mine:
        return None
    wanted = "Channel.recv" if impl in ALLOCATING else "Channel.recv_into"
    for r in mine:
        if r.impl == wanted:
            return r
    return mine[0]


def _ratio(a: Row, b: Row) -> float:
    return a.value / b.value


# (section, test, impl) -> (comparison, bound, text)
def _goals(cfg: Config) -> Dict[Tuple[str, str], Tuple[str, float, str]]:
    goals: Dict[Tuple[str, str], Tuple[str, float, str]] = {
        (f"round trip {fmt_size(RT_SIZE)}", "multiprocessing.Pipe"):
            ("<=", 0.1, "round trip <= 0.1x mp.Pipe"),
        (f"round trip {fmt_size(RT_SIZE)}", "stdlib shared_memory, busy-poll"):
            ("<=", 2.0, "round trip within 2x of the busy-poll floor"),
        ("stream 64 B", "Pipe.recv_bytes"):
            (">=", 10.0, "64 B streaming >= 10x mp.Pipe msg/s"),
        ("stream 1 MiB", "socketpair.recv_into"):
            (">=", 1.5, "1 MiB recv_into >= 1.5x socketpair"),
        ("stream 1 MiB", "memcpy (bytearray slice copy)"):
            (">=", 0.4, "1 MiB recv_into >= 0.4x memcpy"),
        (f"write {fmt_size(cfg.shm_size)}", "bytearray slice (limit)"):
            (">=", 0.8, f"{fmt_size(cfg.shm_size)} SharedMemory.write >= 0.8x memcpy"),
        (f"write+read {fmt_size(SMALL)}", "stdlib memoryview slice"):
            ("<=", 1 / 1.5, "64 B write+read >= 1.5x faster than memoryview slicing"),
    }
    return goals


def finish_rows(rows: List[Row], cfg: Config) -> None:
    """Fill in every row's ratio and the goals."""
    goals = _goals(cfg)
    tests: Dict[str, List[Row]] = {}
    for r in rows:
        tests.setdefault(r.test, []).append(r)
    for test, group in tests.items():
        limit = next((r for r in group if r.impl in LIMITS), None)
        for r in group:
            if _is_pyshm(r.impl):
                if limit is not None:
                    r.ratio, r.ratio_of = _ratio(r, limit), f"this / {limit.impl}"
                continue
            ref = _pyshm_ref(group, r.impl)
            if ref is None:
                continue
            r.ratio, r.ratio_of = _ratio(ref, r), f"{ref.impl} / this"
            goal = goals.get((test, r.impl))
            if goal is not None:
                op, bound, text = goal
                r.goal = f"{op} {fmt_num(bound)}: {text}"
                r.goal_met = r.ratio <= bound if op == "<=" else r.ratio >= bound


# ---- output ------------------------------------------------------------------------

def machine() -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "pyshm": pyshm.__version__,
        "channel_wait": pyshm.CHANNEL_WAIT,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _value_text(r: Row) -> Tuple[str, str]:
    if r.unit == "us":
        return f"{fmt_num(r.value)} us", f"p99 {fmt_num(r.p99 or 0.0)} us"
    if r.unit == "ns":
        return f"{fmt_num(r.value)} ns/op", ""
    if r.unit == "msg/s":
        return f"{fmt_num(r.value)} msg/s", f"{fmt_num(r.gbps or 0.0)} GB/s"
    return f"{fmt_num(r.value)} {r.unit}", ""


def render(rows: List[Row], info: Dict[str, Any], cfg: Config, notes: List[str]) -> str:
    out: List[str] = []
    out.append(f"pyshm {info['pyshm']} bench ({'quick' if cfg.quick else 'full'}): "
               f"{info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
               f"wait={info['channel_wait']}, {info['date']}")
    out.append(f"median of {cfg.trials} interleaved trials of ~{cfg.seconds:g} s each; "
               "ratio = pyshm / peer (or pyshm / limit on pyshm rows); "
               "times: lower is better, rates: higher")
    tests: Dict[str, List[Row]] = {}
    for r in rows:
        tests.setdefault(r.test, []).append(r)
    w_impl = max(len(r.impl) for r in rows) + 2
    for test, group in tests.items():
        out.append("")
        out.append(f"{group[0].section}: {test}")
        for r in group:
            value, extra = _value_text(r)
            ratio = "" if r.ratio is None else f"{r.ratio:.3g}x"
            of = "" if r.ratio_of is None else f"({r.ratio_of})"
            goal = ""
            if r.goal is not None:
                goal = f"goal {r.goal.split(':')[0]}: {'met' if r.goal_met else 'SHORT'}"
            out.append(f"  {r.impl:<{w_impl}}{value:>18} {extra:>16}  {ratio:>8} "
                       f"{of:<40} {goal}".rstrip())
    goal_rows = [r for r in rows if r.goal is not None]
    if goal_rows:
        out.append("")
        out.append("goals (issue 5):")
        for r in goal_rows:
            out.append(f"  {'met  ' if r.goal_met else 'SHORT'}  {r.goal.split(': ', 1)[1]}"  # type: ignore[union-attr]
                       f"  (ratio {r.ratio:.3g}, wanted {r.goal.split(':')[0]})")  # type: ignore[union-attr]
    for note in notes:
        out.append(f"note: {note}")
    return "\n".join(out)


# ---- command line ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="short trials (about 20 s in all) instead of the full run")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (progress stays on stderr)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, metavar="LIST",
                        help="streaming message sizes, e.g. 64,4KiB,1MiB,64MiB (the default)")
    parser.add_argument("--shm-size", type=positive_size, default=DEFAULT_SHM_SIZE, metavar="SIZE",
                        help="the big SharedMemory copy (default 256MiB)")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="interleaved trials per figure (default 3 quick, 7 full)")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="target length of one trial (default 0.08 quick, 0.4 full)")
    parser.add_argument("--no-third-party", dest="third_party", action="store_false",
                        help="skip faster-fifo and iceoryx2 even where installed")
    parser.add_argument("--pin", action="store_true",
                        help="pin this process to CPU 0 and the children to CPU 1")


def run(args: argparse.Namespace) -> int:
    cfg = Config(
        quick=args.quick,
        trials=args.trials if args.trials else (3 if args.quick else 7),
        seconds=args.seconds if args.seconds else (0.08 if args.quick else 0.4),
        sizes=args.sizes if args.sizes else list(DEFAULT_SIZES),
        shm_size=args.shm_size,
        third_party=args.third_party,
        pin=args.pin,
    )
    if cfg.trials < 1 or cfg.seconds <= 0:
        print("pyshm bench: --trials and --seconds must be positive", file=sys.stderr)
        return 2
    if args.pin and (os.cpu_count() or 1) < 2:
        print("pyshm bench: --pin needs two CPUs", file=sys.stderr)
        return 2
    bench = Bench(cfg)
    t0 = time.monotonic()
    try:
        bench.run()
    except KeyboardInterrupt:
        print("pyshm bench: interrupted (children reaped, segments unlinked)", file=sys.stderr)
        return 130
    finish_rows(bench.rows, cfg)
    info = machine()
    _progress(f"finished in {time.monotonic() - t0:.1f} s")
    if args.json:
        doc = {"machine": info, "config": asdict(cfg), "notes": bench.notes,
               "rows": [asdict(r) for r in bench.rows],
               "goals": [{"goal": r.goal, "ratio": r.ratio, "met": r.goal_met}
                         for r in bench.rows if r.goal is not None]}
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(render(bench.rows, info, cfg, bench.notes))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyshm.bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
