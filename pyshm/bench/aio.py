"""The asyncio section of ``pyshm bench`` (issue 21, point 4), run after the
others in the same run:

* a 64-byte ping-pong between two processes, both awaiting: pyshm.asyncio
  against asyncio streams over a socketpair and against zmq.asyncio PAIR
  sockets (goal: <= 0.5x both);
* an awaited 64-byte stream (the sender awaits too), messages/s, against the
  same peers (goal: >= 10x);
* pyshm.wait over 10 channels against Channel.recv on one (a round trip
  whose receiving end waits either way);
* the sync round trip with and without an idle async waiter armed in
  another process (on another channel): sync users must pay nothing.

Each peer runs in its own 'spawn' child for all its trials; trials of the
peers alternate, and a figure is the median of its trials.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import socket
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import pyshm
import pyshm.asyncio

from pyshm.bench.common import progress
from pyshm.bench.report import Row


def _zmq() -> Tuple[Any, Any]:
    """pyzmq and zmq.asyncio, a peer that may be absent (ImportError), as
    the other peers are imported (no stubs needed to type-check)."""
    return importlib.import_module("zmq"), importlib.import_module("zmq.asyncio")


RT = "asyncio round trip 64 B"
STREAM = "asyncio stream 64 B"
WAIT = "wake-up through pyshm.wait"
SYNC = "sync round trip 64 B, async waiter elsewhere"
MSG = b"p" * 64


def _zmq_address(tag: str) -> str:
    if sys.platform == "win32":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"
    return f"ipc:///tmp/pyshm-bench-{tag}"


# ---- the children (module level: 'spawn' imports them) ---------------------------

def _child(kind: str, conn: Any, args: Tuple[Any, ...]) -> None:
    """Serve trials until the parent says "stop": each trial is (what, n)."""
    if kind == "sync-idle":
        async def idle() -> None:
            ch = pyshm.asyncio.Channel(args[0])
            task = asyncio.ensure_future(ch.recv())
            await asyncio.sleep(0)
            conn.send("ready")
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            task.cancel()
        asyncio.run(idle())
        return
    asyncio.run(_serve(kind, conn, args))


async def _serve(kind: str, conn: Any, args: Tuple[Any, ...]) -> None:
    loop = asyncio.get_running_loop()
    if kind == "pyshm":
        a = pyshm.asyncio.Channel(args[0])
        b = pyshm.asyncio.Channel(args[1])

        async def echo(n: int) -> None:
            for _ in range(n):
                await b.send(await a.recv())

        async def flood(n: int) -> None:
            for _ in range(n):
                await b.send(MSG)
    elif kind == "streams":
        reader, writer = await asyncio.open_connection(sock=args[0])

        async def echo(n: int) -> None:
            for _ in range(n):
                writer.write(await reader.readexactly(64))

        async def flood(n: int) -> None:
            for i in range(n):
                writer.write(MSG)
                if i % 64 == 63:
                    await writer.drain()
            await writer.drain()
    elif kind == "zmq":
        zmq, zmq_asyncio = _zmq()
        ctx = zmq_asyncio.Context()
        s = ctx.socket(zmq.PAIR)
        s.connect(args[0])

        async def echo(n: int) -> None:
            for _ in range(n):
                await s.send(await s.recv())

        async def flood(n: int) -> None:
            for _ in range(n):
                await s.send(MSG)
    elif kind == "wait" or kind == "sync":
        chans = [pyshm.Channel(n) for n in args[0]]
        back = pyshm.Channel(args[1])

        async def echo(n: int) -> None:
            ch = chans[-1]
            for _ in range(n):
                back.send(ch.recv())

        flood = echo
    else:
        raise ValueError(kind)
    conn.send("ready")
    while True:
        what, n = await loop.run_in_executor(None, conn.recv)
        if what == "stop":
            break
        conn.send("go")
        await (echo(n) if what == "echo" else flood(n))
        conn.send("done")


class _Peer:
    def __init__(self, ctx: Any, kind: str, args: Tuple[Any, ...]) -> None:
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(kind, theirs, args), daemon=True)
        self.proc.start()
        assert self.conn.recv() == "ready"

    def start(self, what: str, n: int) -> None:
        self.conn.send((what, n))
        assert self.conn.recv() == "go"

    def done(self) -> None:
        assert self.conn.recv() == "done"

    def stop(self) -> None:
        try:
            self.conn.send(("stop", 0))
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# ---- the parent's ends --------------------------------------------------------------

class _End:
    """The parent's side of one peer: async round trips and receives."""

    label = ""

    async def round_trips(self, n: int) -> List[int]:
        raise NotImplementedError

    async def receive(self, n: int) -> None:
        raise NotImplementedError


class _PyshmEnd(_End):
    label = "pyshm.asyncio.Channel"

    def __init__(self, a: str, b: str) -> None:
        self.a = pyshm.asyncio.Channel(a)
        self.b = pyshm.asyncio.Channel(b)

    async def round_trips(self, n: int) -> List[int]:
        out = []
        for _ in range(n):
            t = time.perf_counter_ns()
            await self.a.send(MSG)
            await self.b.recv()
            out.append(time.perf_counter_ns() - t)
        return out

    async def receive(self, n: int) -> None:
        for _ in range(n):
            await self.b.recv()


class _StreamsEnd(_End):
    label = "asyncio streams (socketpair)"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: Any = None

    async def _open(self) -> None:
        if self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(sock=self.sock)

    async def round_trips(self, n: int) -> List[int]:
        await self._open()
        out = []
        for _ in range(n):
            t = time.perf_counter_ns()
            self.writer.write(MSG)
            await self.reader.readexactly(64)
            out.append(time.perf_counter_ns() - t)
        return out

    async def receive(self, n: int) -> None:
        await self._open()
        for _ in range(n):
            await self.reader.readexactly(64)


class _ZmqEnd(_End):
    label = "zmq.asyncio (PAIR)"

    def __init__(self, address: str) -> None:
        zmq, zmq_asyncio = _zmq()
        self.ctx = zmq_asyncio.Context()
        self.s = self.ctx.socket(zmq.PAIR)
        self.s.bind(address)

    async def round_trips(self, n: int) -> List[int]:
        out = []
        for _ in range(n):
            t = time.perf_counter_ns()
            await self.s.send(MSG)
            await self.s.recv()
            out.append(time.perf_counter_ns() - t)
        return out

    async def receive(self, n: int) -> None:
        for _ in range(n):
            await self.s.recv()


def _names(prefix: str, k: int) -> List[str]:
    return [f"{prefix}{i}" for i in range(k)]


def run_section(rows: List[Row], notes: List[str], trials: int, seconds: float,
                third_party: bool) -> None:
    """Measure the section's figures into ROWS (NOTES: what was skipped)."""
    ctx = multiprocessing.get_context("spawn")
    tag = f"ab{int(time.time() * 1000) % 10**8}"
    made: List[pyshm.Channel] = []
    peers: List[Tuple[_End, _Peer]] = []

    def channel(name: str, capacity: int = 1 << 16) -> str:
        made.append(pyshm.Channel(name, create=True, capacity=capacity))
        return name

    try:
        a, b = channel(tag + "a"), channel(tag + "b")
        peers.append((_PyshmEnd(a, b), _Peer(ctx, "pyshm", (a, b))))
        mine, theirs = socket.socketpair()
        peers.append((_StreamsEnd(mine), _Peer(ctx, "streams", (theirs,))))
        theirs.close()
        if third_party:
            try:
                address = _zmq_address(tag)
                end = _ZmqEnd(address)
                peers.append((end, _Peer(ctx, "zmq", (address,))))
            except ImportError:
                notes.append("zmq.asyncio not measured: pyzmq does not import")
        asyncio.run(_measure(rows, peers, trials, seconds))
    finally:
        for _, p in peers:
            p.stop()
    try:
        _wait_and_sync(rows, ctx, tag, channel, trials, seconds)
    finally:
        for c in made:
            c.close()
            c.unlink()


async def _measure(rows: List[Row], peers: List[Tuple[_End, _Peer]], trials: int,
                   seconds: float) -> None:
    medians: Dict[str, List[float]] = {e.label: [] for e, _ in peers}
    p99s: Dict[str, List[float]] = {e.label: [] for e, _ in peers}
    rates: Dict[str, List[float]] = {e.label: [] for e, _ in peers}
    sizes: Dict[str, Tuple[int, int]] = {}
    loop = asyncio.get_running_loop()
    for end, peer in peers:         # calibrate (and warm up)
        peer.start("echo", 200)
        t = await end.round_trips(200)
        await loop.run_in_executor(None, peer.done)
        per = statistics.median(t)
        sizes[end.label] = (max(200, min(100_000, int(seconds * 1e9 / per))),
                            max(2000, min(2_000_000, int(seconds * 1e9 / per * 8))))
    for trial in range(trials):
        progress(f"{RT} / {STREAM}: trial {trial + 1}/{trials}")
        order = peers[trial % len(peers):] + peers[:trial % len(peers)]
        for end, peer in order:
            n_rt, n_stream = sizes[end.label]
            peer.start("echo", n_rt)
            samples = sorted(await end.round_trips(n_rt))
            await loop.run_in_executor(None, peer.done)
            medians[end.label].append(statistics.median(samples) / 1e3)
            p99s[end.label].append(samples[int(len(samples) * 0.99) - 1] / 1e3)
            peer.start("flood", n_stream)
            t0 = time.perf_counter()
            await end.receive(n_stream)
            rates[end.label].append(n_stream / (time.perf_counter() - t0))
            await loop.run_in_executor(None, peer.done)
    for end, _ in peers:
        rows.append(Row("asyncio", RT, end.label, "us", "lower",
                        statistics.median(medians[end.label]),
                        p99=statistics.median(p99s[end.label]), trials=medians[end.label],
                        ref=None if end is peers[0][0] else peers[0][0].label))
    for end, _ in peers:
        rows.append(Row("asyncio", STREAM, end.label, "msg/s", "higher",
                        statistics.median(rates[end.label]), trials=rates[end.label],
                        ref=None if end is peers[0][0] else peers[0][0].label))


def _sync_rt(send: Callable[[bytes], Any], recv: Callable[[], Any], n: int,
            p99s: List[float]) -> float:
    """N round trips: the median in us (the p99 appended to P99S)."""
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        send(MSG)
        recv()
        out.append(time.perf_counter_ns() - t)
    out.sort()
    p99s.append(out[int(len(out) * 0.99) - 1] / 1e3)
    return statistics.median(out) / 1e3


def _wait_and_sync(rows: List[Row], ctx: Any, tag: str, channel: Callable[..., str],
                   trials: int, seconds: float) -> None:
    # pyshm.wait over 10 channels (the peer answers on the last) against
    # Channel.recv on that one.
    ten = [channel(n, 4096) for n in _names(tag + "w", 10)]
    back = channel(tag + "back", 4096)
    echo = _Peer(ctx, "wait", (ten, back))
    idle = None
    try:
        out = [pyshm.Channel(n) for n in ten]
        ret = pyshm.Channel(back)
        chans = [pyshm.Channel(back)] + [pyshm.Channel(n) for n in _names(tag + "w", 9)]

        def via_wait() -> bytes:
            while True:
                ready = pyshm.wait(chans)
                if ready:
                    return bytes(ready[0].recv(timeout=0))

        n = max(500, int(seconds * 20_000))
        results: Dict[str, List[float]] = {"pyshm.wait over 10 channels": [],
                                           "Channel.recv on one": []}
        tails: Dict[str, List[float]] = {k: [] for k in results}
        for trial in range(trials):
            progress(f"{WAIT}: trial {trial + 1}/{trials}")
            for label, recv in (("pyshm.wait over 10 channels", via_wait),
                                ("Channel.recv on one", ret.recv)):
                echo.start("echo", n)
                results[label].append(_sync_rt(out[-1].send, recv, n, tails[label]))
                echo.done()
        for label in results:
            rows.append(Row("asyncio", WAIT, label, "us", "lower",
                            statistics.median(results[label]),
                            p99=statistics.median(tails[label]), trials=results[label],
                            ref=None if label.startswith("pyshm") else
                            "pyshm.wait over 10 channels"))
        # The sync round trip, with and without an idle async waiter armed in
        # a third process (on a channel of its own).
        lone = channel(tag + "idle", 4096)
        quiet, busy = ("Channel.recv (sync), no async waiter",
                       "Channel.recv (sync), an idle async waiter elsewhere")
        sync: Dict[str, List[float]] = {quiet: [], busy: []}
        stails: Dict[str, List[float]] = {quiet: [], busy: []}
        for trial in range(trials):
            progress(f"{SYNC}: trial {trial + 1}/{trials}")
            for label in (quiet, busy) if trial % 2 == 0 else (busy, quiet):
                if label == busy:
                    idle = _Peer(ctx, "sync-idle", (lone,))
                    # Its interpreter settles (the loop asleep in the armed
                    # wait, the executor thread in conn.recv): what is
                    # measured is an idle waiter, not a child finishing
                    # its start.  A pause of the benchmark, not a handshake.
                    time.sleep(0.05)
                echo.start("echo", n)
                sync[label].append(_sync_rt(out[-1].send, ret.recv, n, stails[label]))
                echo.done()
                if idle is not None:
                    _stop_idle(idle)
                    idle = None
        for label in (quiet, busy):
            rows.append(Row("asyncio", SYNC, label, "us", "lower", statistics.median(sync[label]),
                            p99=statistics.median(stails[label]), trials=sync[label],
                            ref=None if label == quiet else quiet))
        for c in out + chans + [ret]:
            c.close()
    finally:
        echo.stop()
        if idle is not None:
            _stop_idle(idle)


def _stop_idle(idle: _Peer) -> None:
    try:
        idle.conn.send("stop")
    except OSError:
        pass
    idle.proc.join(10)
    if idle.proc.is_alive():
        idle.proc.kill()
        idle.proc.join()
