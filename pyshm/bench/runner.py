"""The benchmark's runner: the Bench class, which starts the peers, sizes and
alternates the trials, and turns timings into rows; and the timing loops of
the single-process figures (SharedMemory against slicing and memcpy).

Trials of pyshm and its peers alternate, in an order rotated each trial, so
that noise on the machine hits all alike; a figure is the median of its
trials.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import statistics
from multiprocessing import shared_memory
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyshm
from pyshm._units import fmt_size
from pyshm.bench.common import (CPU_RATES, RT_SIZE, SLOT_BIG, SMALL, TEAR_READS, TEAR_SIZE,
                                Config, ns, progress, segment_name)
from pyshm.bench.peers import (ChannelPeer, FasterFifoPeer, FloorPeer, HandoffPeer,
                               IceoryxPeer, Peer, PipePeer, QueuePeer, SlotPeer, SocketPeer,
                               ZmqPeer)
from pyshm.bench.report import (CPU_DEFAULT, SLOT_BUSY, SLOT_IDLE, SLOT_RAW, SLOT_READ,
                                SMALL_OBJECTS, TORN_TEST, Row, cpu_test)

Timing = Callable[[int], int]       # n -> nanoseconds for n operations


def percentile(samples: Sequence[int], q: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[k])


def _owned(stack: contextlib.ExitStack, obj: Any) -> Any:
    """OBJ (a segment this run made, pyshm's or the standard library's),
    closed and unlinked when STACK ends -- also when making the next one
    fails."""
    def drop() -> None:
        obj.close()
        obj.unlink()
    stack.callback(drop)
    return obj


def _rotated(items: List[Any], k: int) -> List[Any]:
    k %= len(items)
    return items[k:] + items[:k]


class Bench:
    """One run: section 1 (round trips, the slot's wake-up among them) and 2
    (streaming) with every peer's child started, the slot's reads against
    its writer and its torn-read count, then the object sections (a big
    array, small objects, a queued message received, a receiver's CPU at a
    fixed rate), then section 3 (SharedMemory copies) and the slot's
    publish+read in this process.  ``rows`` and ``notes`` hold
    what the report prints."""

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
            progress(f"{test}: trial {trial + 1}/{self.cfg.trials}")
            for peer in _rotated(peers, trial):
                samples = peer.round_trips(100, sizes[peer.label])
                medians[peer.label].append(statistics.median(samples) / 1e3)
                p99s[peer.label].append(percentile(samples, 0.99) / 1e3)
        for peer in peers:
            self.rows.append(Row("round trip", test, peer.label, "us", "lower",
                                 statistics.median(medians[peer.label]),
                                 p99=statistics.median(p99s[peer.label]),
                                 trials=medians[peer.label], ref=peer.rt_ref))

    # -- section 2 --
    def streams(self, peers: List[Peer]) -> None:
        for size in self.cfg.sizes:
            test = f"stream {fmt_size(size)}"
            data = b"s" * size
            src, dst = bytearray(data), bytearray(size)
            runs: List[Tuple[str, Timing]] = []
            for peer in peers:
                for label, mode in peer.stream_rows:
                    runs.append((label, _bind_stream(peer, size, mode, data)))
            runs.append(("memcpy (bytearray slice copy)", _copy_loop(dst, src)))
            # Calibrate: enough messages to go round a ring twice (faults it in).
            self._rates("streaming", test, runs, size, max(2, min(20_000, (4 << 20) // size)))
            del data, src, dst

    def _rates(self, section: str, test: str, runs: List[Tuple[str, Timing]],
               size: Optional[int], n0: int, ref: Optional[str] = None,
               compared: Sequence[str] = ()) -> None:
        """Messages per second of each run, interleaved trials sized after a
        calibration of N0 messages; rows with GB/s when SIZE is known.  REF:
        the pyshm row the peers -- and the pyshm rows named in COMPARED --
        are compared with (see Row.ref)."""
        counts: Dict[str, int] = {}
        for label, fn in runs:
            per = fn(n0) / n0
            counts[label] = self.trial_count(per, 2, 2_000_000)
        rates: Dict[str, List[float]] = {label: [] for label, _ in runs}
        for trial in range(self.cfg.trials):
            progress(f"{test}: trial {trial + 1}/{self.cfg.trials}")
            for label, fn in _rotated(runs, trial):
                n = counts[label]
                rates[label].append(n / (fn(n) / 1e9))
        for label, _ in runs:
            rate = statistics.median(rates[label])
            mine = label.startswith(("Channel.", "pyshm")) and label not in compared
            self.rows.append(Row(section, test, label, "msg/s", "higher", rate,
                                 gbps=None if size is None else rate * size / 1e9,
                                 trials=rates[label], ref=None if mine else ref))

    # -- slots --
    def slot_reads(self, peer: SlotPeer) -> None:
        """Reads per second of a big value while the child publishes it as
        fast as it can, against the same reads while it is idle."""
        runs: List[Tuple[str, Timing]] = [
            (SLOT_BUSY, lambda n: peer.reads(n, "busy")),
            (SLOT_IDLE, lambda n: peer.reads(n, "idle")),
        ]
        self._rates("Slot", f"read {fmt_size(SLOT_BIG)} while another process publishes",
                    runs, SLOT_BIG, 200, ref=SLOT_BUSY, compared=(SLOT_IDLE,))

    def torn_reads(self, peer: SlotPeer) -> None:
        """Torn reads among TEAR_READS of a struct the child rewrites flat
        out: in a Slot, and in a raw SharedMemory (a count, not a time)."""
        counts: Dict[str, List[float]] = {"slot": [], "raw": []}
        for trial in range(self.cfg.trials):
            progress(f"{TORN_TEST}: trial {trial + 1}/{self.cfg.trials}")
            for mode in _rotated(["slot", "raw"], trial):
                counts[mode].append(float(peer.torn(TEAR_READS, mode)))
        self.rows.append(Row("Slot", TORN_TEST, SLOT_READ, "torn", "lower",
                             statistics.median(counts["slot"]), trials=counts["slot"]))
        self.rows.append(Row("Slot", TORN_TEST, SLOT_RAW, "torn", "lower",
                             statistics.median(counts["raw"]), trials=counts["raw"],
                             ref=SLOT_READ))

    def slot_copies(self) -> None:
        """Publish+read of a small value in one process, against
        SharedMemory's write+read of as many bytes."""
        with contextlib.ExitStack() as stack:
            slot = _owned(stack, pyshm.Slot(segment_name(), create=True, size=SMALL))
            shm = _owned(stack, pyshm.SharedMemory(segment_name(), create=True, size=SMALL))
            small = b"w" * SMALL
            ba, small_ba = bytearray(SMALL), bytearray(small)
            runs: List[Tuple[str, Timing]] = [
                ("pyshm Slot.publish+read", _small_pair_slot(slot.publish, slot.read, small)),
                ("pyshm SharedMemory.write+read", _small_pair_pyshm(shm.write, shm.read, small)),
                ("bytearray slice (limit)", _small_pair_bytearray(ba, small_ba)),
            ]
            self._interleaved("Slot", f"publish+read {fmt_size(SMALL)}", runs, "ns", "lower",
                              1.0, None, refs={"pyshm SharedMemory.write+read":
                                               "pyshm Slot.publish+read"})

    # -- objects --
    def arrays(self, peers: List[Peer]) -> None:
        """A big float64 array sent one way; memcpy of it is the limit."""
        try:
            import numpy
        except ImportError:
            self.notes.append("the array rows need NumPy (pip install numpy); skipped")
            return
        size = self.cfg.array_size
        arr = numpy.random.default_rng(1).random(size // 8)
        dst = numpy.empty_like(arr)
        runs: List[Tuple[str, Timing]] = []
        for peer in peers:
            for label, mode in peer.array_rows:
                runs.append((label, _bind_objects(peer, "array", mode, arr)))
        runs.append(("memcpy (numpy.copyto, warm)", _body_loop(lambda: numpy.copyto(dst, arr))))
        # Calibrate with a few arrays (at least 3, up to 64 or 256 MiB): a
        # trial's fixed cost (the child's "ready" and "done") must not pass
        # for the cost of a message.
        self._rates("objects", f"{fmt_size(size)} float64 array", runs, arr.nbytes,
                    max(3, min(64, (256 << 20) // size)), ref="Channel.send_obj/recv_obj")
        del arr, dst

    def small_objects(self, peers: List[Peer]) -> None:
        runs: List[Tuple[str, Timing]] = []
        for peer in peers:
            for label, mode in peer.small_rows:
                runs.append((label, _bind_objects(peer, "small", mode, None)))
        self._rates("objects", SMALL_OBJECTS, runs, None, 2000,
                    ref="Channel.send_obj/recv_obj")

    def receive_queued(self) -> None:
        """One process: a message of the array's size (and of 64 B) is
        queued (by a loan, which writes nothing), then received -- only the
        receive is timed: recv_view's cost does not grow with the size."""
        for size in (self.cfg.array_size, RT_SIZE):
            ch = pyshm.Channel(segment_name(), create=True, capacity=size + 4096)
            try:
                buf = bytearray(size)
                runs: List[Tuple[str, Timing]] = [
                    ("Channel.recv_view", _queued_loop(ch, size, "view", buf)),
                    ("Channel.recv (new bytes)", _queued_loop(ch, size, "recv", buf)),
                    ("Channel.recv_into (preallocated)", _queued_loop(ch, size, "into", buf)),
                ]
                self._rates("objects", f"receive a queued {fmt_size(size)} message", runs,
                            size, max(3, min(2000, (64 << 20) // size)),
                            ref="Channel.recv_view",
                            compared=("Channel.recv (new bytes)",
                                      "Channel.recv_into (preallocated)"))
            finally:
                ch.close()
                ch.unlink()

    def cpu(self, peers: List[Peer]) -> None:
        """CPU seconds a receiver spends per 10,000 messages that arrive at
        each of CPU_RATES per second, for each wait policy (and a Pipe,
        compared with the default policy)."""
        runs = [(peer, label, mode) for peer in peers for label, mode in peer.cpu_rows]
        for rate in CPU_RATES:
            test = cpu_test(rate)
            n = max(20, int(rate * self.cfg.cpu_seconds))
            per: Dict[str, List[Tuple[float, float]]] = {label: [] for _, label, _ in runs}
            for trial in range(self.cfg.trials):
                progress(f"{test}: trial {trial + 1}/{self.cfg.trials}")
                for peer, label, mode in _rotated(runs, trial):
                    per[label].append(peer.cpu(n, mode, float(rate)))
            for _, label, _ in runs:
                cpu10k = [c * 10_000 / n for c, _ in per[label]]
                share = statistics.median(100 * c / w for c, w in per[label])
                mine = label.startswith("Channel.")
                self.rows.append(Row("CPU", test, label, "CPU s/10k", "lower",
                                     statistics.median(cpu10k), share=share, trials=cpu10k,
                                     ref=None if mine else CPU_DEFAULT))

    # -- section 3 --
    def shm_copies(self) -> None:
        big = self.cfg.shm_size
        with contextlib.ExitStack() as stack:
            mine = _owned(stack, pyshm.SharedMemory(segment_name(), create=True, size=big))
            theirs = _owned(stack, shared_memory.SharedMemory(segment_name(), create=True,
                                                               size=big))
            self._shm_section(mine, theirs, big)

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

        mw, mr = mine.write, mine.read
        small_tests: List[Tuple[str, List[Tuple[str, Timing]]]] = [
            (f"write {fmt_size(SMALL)}", [
                ("pyshm SharedMemory.write", _call_loop(mw, small)),
                ("stdlib memoryview slice", _small_write_slice(sbuf, small)),
                ("bytearray slice (limit)", _small_write_slice(ba, small_ba)),
            ]),
            (f"read {fmt_size(SMALL)}", [
                ("pyshm SharedMemory.read", _call_loop(mr, SMALL)),
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
        big_tests: List[Tuple[str, List[Tuple[str, Timing]]]] = [
            (f"write {fmt_size(big)}", [
                ("pyshm SharedMemory.write", _body_loop(lambda: mw(data))),
                ("stdlib memoryview slice", _copy_loop(sbuf_big, data)),
                ("bytearray slice (limit)", _copy_loop(ba, data_ba)),
            ]),
            (f"read {fmt_size(big)} (new bytes)", [
                ("pyshm SharedMemory.read", _body_loop(lambda: mr())),
                ("stdlib memoryview slice", _body_loop(lambda: bytes(sbuf[0:big]))),
                ("bytearray slice (limit)", _body_loop(lambda: bytes(ba))),
            ]),
            (f"readinto {fmt_size(big)}", [
                ("pyshm SharedMemory.readinto", _body_loop(lambda: mine.readinto(dst))),
                ("stdlib memoryview slice", _copy_loop(dst_view, sbuf_big)),
                ("bytearray slice (limit)", _copy_loop(dst, ba)),
            ]),
            (f"create + first write {fmt_size(big)}", [
                ("pyshm SharedMemory.write", _fresh_pyshm(data)),
                ("stdlib memoryview slice", _fresh_stdlib(data)),
                ("bytearray slice (limit)", _body_loop(lambda: bytearray(data_ba))),
            ]),
        ]
        for test, runs in big_tests:
            self._interleaved("SharedMemory", test, runs, "GB/s", "higher", big / 1e9, big)
        del sbuf, sbuf_big, dst_view

    def _interleaved(self, section: str, test: str,
                     runs: List[Tuple[str, Timing]], unit: str, better: str,
                     scale: float, nbytes: Optional[int],
                     refs: Optional[Dict[str, str]] = None) -> None:
        """Time each run per operation; a rate unit turns ns/op into SCALE per
        second.  REFS: run label -> the pyshm row it is compared with (Row.ref)."""
        refs = refs or {}
        counts = {}
        for label, fn in runs:
            fn(2)
            n0 = 1000 if nbytes is None else 2
            counts[label] = self.trial_count(fn(n0) / n0, 2 if nbytes else 1000, 5_000_000)
        per: Dict[str, List[float]] = {label: [] for label, _ in runs}
        for trial in range(self.cfg.trials):
            progress(f"{section} {test}: trial {trial + 1}/{self.cfg.trials}")
            for label, fn in _rotated(runs, trial):
                n = counts[label]
                per[label].append(fn(n) / n)
        for label, _ in runs:
            t = statistics.median(per[label])
            if better == "lower":
                self.rows.append(Row(section, test, label, unit, better, t, trials=per[label],
                                     ref=refs.get(label)))
            else:   # a rate: SCALE (e.g. GB) per second
                self.rows.append(Row(section, test, label, unit, better, scale / (t / 1e9),
                                     gbps=scale / (t / 1e9),
                                     trials=[scale / (x / 1e9) for x in per[label]]))

    # -- the whole run --
    def run(self) -> None:
        cfg = self.cfg
        # Each peer goes on self.peers as soon as it is made (it may own
        # segments already), so that the end stops and cleans it up even when
        # making the next one fails.
        rt_peers = self.peers
        try:
            progress("starting the children ('spawn')")
            pin = self.pins[1]
            rt_peers.append(ChannelPeer(self.ctx, pin, cfg.sizes, cfg.array_size))
            rt_peers.append(PipePeer(self.ctx, pin))
            rt_peers.append(QueuePeer(self.ctx, pin))
            rt_peers.append(SocketPeer(self.ctx, pin))
            rt_peers.append(FloorPeer(self.ctx, pin))
            slot_peer = SlotPeer(self.ctx, pin)
            rt_peers.append(slot_peer)
            if cfg.third_party:
                self._third_party(pin, rt_peers)
            else:
                self.notes.append("third-party peers skipped (--no-third-party)")
            rt_peers = list(self.peers)
            for peer in rt_peers:
                peer.start()
            if self.pins[0] >= 0 and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {self.pins[0]})
            self.round_trips(rt_peers)
            self.streams(rt_peers)
            self.slot_reads(slot_peer)
            self.torn_reads(slot_peer)
            obj_peers = [p for p in rt_peers if p.array_rows or p.small_rows]
            for peer in self._object_peers(pin, self.peers):
                peer.start()
                obj_peers.append(peer)
            self.arrays(obj_peers)
            self.small_objects(obj_peers)
            self.receive_queued()
            self.cpu([p for p in obj_peers if p.cpu_rows])
        finally:
            for peer in self.peers:
                peer.stop()
            self.peers.clear()
        self.shm_copies()
        self.slot_copies()
        # Section 6: asyncio (bench/aio.py), its own children.
        from pyshm.bench.aio import run_section
        run_section(self.rows, self.notes, self.cfg.trials, self.cfg.seconds,
                    self.cfg.third_party)

    def _object_peers(self, pin: int, made: List[Peer]) -> List[Peer]:
        """The peers of the object sections only: the standard library's
        shared_memory hand-off, and pyzmq where it imports; each is also
        put on MADE as soon as it is made."""
        peers: List[Peer] = [HandoffPeer(self.ctx, pin, self.cfg.array_size)]
        made.append(peers[-1])
        if not self.cfg.third_party:
            return peers
        try:
            peers.append(ZmqPeer(self.ctx, pin))
            made.append(peers[-1])
        except ImportError as exc:
            self.notes.append(f"pyzmq skipped: not installed ({exc}); pip install pyzmq "
                              "to include it")
        except Exception as exc:
            self.notes.append(f"pyzmq skipped: {type(exc).__name__}: {exc}")
        return peers

    def _third_party(self, pin: int, peers: List[Peer]) -> None:
        """faster-fifo and iceoryx2, where they import, put on PEERS."""
        biggest = max(max(self.cfg.sizes), self.cfg.array_size)
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


# ---- timing loops -------------------------------------------------------------
#
# Each returns run(n) -> nanoseconds for n operations.  The 64-byte loops are
# written out, each in the natural spelling of its API, so that no peer pays
# for a lambda or a method lookup the others skip; the big copies, where a
# call's cost vanishes, share _body_loop.

def _bind_stream(peer: Peer, size: int, mode: str, data: bytes) -> Timing:
    return lambda n: peer.stream(size, n, mode, data)


def _bind_objects(peer: Peer, what: str, mode: str, obj: Any) -> Timing:
    return lambda n: peer.objects(what, n, mode, obj)


def _queued_loop(ch: pyshm.Channel, size: int, mode: str, buf: bytearray) -> Timing:
    """N receives of a SIZE-byte message, each queued first (untimed) by a
    loan that publishes whatever the ring holds."""
    reserve, recv, recv_into, recv_view = ch.reserve, ch.recv, ch.recv_into, ch.recv_view

    def run(n: int) -> int:
        total = 0
        for _ in range(n):
            with reserve(size):
                pass
            if mode == "view":
                t0 = ns()
                with recv_view() as view:
                    view[0]
                total += ns() - t0
            elif mode == "recv":
                t0 = ns()
                recv()
                total += ns() - t0
            else:
                t0 = ns()
                recv_into(buf)
                total += ns() - t0
        return total
    return run


def _body_loop(body: Callable[[], object]) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            body()
        return ns() - t0
    return run


def _call_loop(call: Callable[[Any], object], arg: Any) -> Timing:
    """CALL(ARG) n times: a pyshm method bound to a local, like the slices below."""
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            call(arg)
        return ns() - t0
    return run


def _copy_loop(dst: Any, src: Any) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            dst[:] = src
        return ns() - t0
    return run


def _small_write_slice(buf: Any, small: bytes | bytearray) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL] = small
        return ns() - t0
    return run


def _small_read_mv(buf: memoryview) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            bytes(buf[0:SMALL])
        return ns() - t0
    return run


def _small_read_bytearray(buf: bytearray) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL]        # one copy into a new object, like read()
        return ns() - t0
    return run


def _small_pair_bytearray(buf: bytearray, small: bytearray) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL] = small
            buf[0:SMALL]
        return ns() - t0
    return run


def _small_pair_pyshm(write: Callable[[bytes], int], read: Callable[[int], bytes],
                      small: bytes) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            write(small)
            read(SMALL)
        return ns() - t0
    return run


def _small_pair_slot(publish: Callable[[bytes], int], read: Callable[[], bytes],
                     small: bytes) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            publish(small)
            read()
        return ns() - t0
    return run


def _small_pair_mv(buf: Any, small: bytes) -> Timing:
    def run(n: int) -> int:
        t0 = ns()
        for _ in range(n):
            buf[0:SMALL] = small
            bytes(buf[0:SMALL])
        return ns() - t0
    return run


def _fresh_pyshm(data: bytes) -> Timing:
    def run(n: int) -> int:
        total = 0
        for _ in range(n):
            t0 = ns()
            shm = pyshm.SharedMemory(segment_name(), create=True, size=len(data))
            try:
                shm.write(data)
                total += ns() - t0
            finally:
                shm.close()
                shm.unlink()
        return total
    return run


def _fresh_stdlib(data: bytes) -> Timing:
    def run(n: int) -> int:
        total = 0
        for _ in range(n):
            t0 = ns()
            shm = shared_memory.SharedMemory(segment_name(), create=True, size=len(data))
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
