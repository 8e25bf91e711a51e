"""Channel speed against the standard library's peers, measured in this run.

    PYTHONPATH=. python bench/bench_channel.py [--rounds N] [--mib M]

Prints, for a 64-byte round trip between two processes, pyshm.Channel vs
multiprocessing.Pipe, and for streaming 1 MiB messages (recv_into, no
allocation) pyshm.Channel vs socket.socketpair; each as a ratio.
"""

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time

import pyshm

MSG = b"x" * 64
BIG = 1 << 20


def _chan_echo(req, rep, n):
    a = pyshm.Channel(req)
    b = pyshm.Channel(rep)
    for _ in range(n):
        b.send(a.recv())


def chan_roundtrip(n):
    name = f"bench{os.getpid()}"
    a = pyshm.Channel(name + "a", create=True, capacity=1 << 16)
    b = pyshm.Channel(name + "b", create=True, capacity=1 << 16)
    p = mp.Process(target=_chan_echo, args=(name + "a", name + "b", n + 1000))
    p.start()
    try:
        for _ in range(1000):
            a.send(MSG)
            b.recv()
        t = time.perf_counter()
        for _ in range(n):
            a.send(MSG)
            b.recv()
        return (time.perf_counter() - t) / n
    finally:
        p.join()
        for c in (a, b):
            c.unlink()
            c.close()


def _pipe_echo(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def pipe_roundtrip(n):
    a, b = mp.Pipe()
    p = mp.Process(target=_pipe_echo, args=(b, n + 1000))
    p.start()
    for _ in range(1000):
        a.send_bytes(MSG)
        a.recv_bytes()
    t = time.perf_counter()
    for _ in range(n):
        a.send_bytes(MSG)
        a.recv_bytes()
    dt = (time.perf_counter() - t) / n
    p.join()
    return dt


def chan_stream(n, capacity):
    name = f"bs{os.getpid()}"
    c = pyshm.Channel(name, create=True, capacity=capacity)
    back = pyshm.Channel(name + "r", create=True, capacity=4096)
    p = mp.Process(target=_stream_sink_wrapper, args=(name, n))
    p.start()
    try:
        data = b"y" * BIG
        t = time.perf_counter()
        for _ in range(n):
            c.send(data)
        back.recv()
        return n * BIG / (time.perf_counter() - t)
    finally:
        p.join()
        for ch in (c, back):
            ch.unlink()
            ch.close()


def _stream_sink_wrapper(name, n):
    c = pyshm.Channel(name)
    back = pyshm.Channel(name + "r")
    buf = bytearray(BIG)
    for _ in range(n):
        c.recv_into(buf)
    back.send(b"done")


def _sock_sink(s, n):
    buf = bytearray(BIG)
    view = memoryview(buf)
    total = n * BIG
    while total:
        total -= s.recv_into(view, min(total, BIG))
    s.sendall(b"d")


def sock_stream(n):
    a, b = socket.socketpair()
    p = mp.Process(target=_sock_sink, args=(b, n))
    p.start()
    data = b"y" * BIG
    t = time.perf_counter()
    for _ in range(n):
        a.sendall(data)
    a.recv(1)
    dt = time.perf_counter() - t
    p.join()
    return n * BIG / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--mib", type=int, default=1000)
    ap.add_argument("--capacity", type=int, default=8 << 20,
                    help="ring bytes for the streaming test")
    ap.add_argument("--repeat", type=int, default=5,
                    help="interleaved repetitions; the median ratio is reported")
    args = ap.parse_args()
    mp.set_start_method("fork" if sys.platform != "win32" else "spawn")
    print(f"pyshm {pyshm.__version__}, channel wait: {pyshm.CHANNEL_WAIT}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    rt, st = [], []
    for _ in range(args.repeat):
        c, p = chan_roundtrip(args.rounds), pipe_roundtrip(args.rounds)
        rt.append((c / p, c, p))
        cs, ss = chan_stream(args.mib, args.capacity), sock_stream(args.mib)
        st.append((cs / ss, cs, ss))
        print(f"  round trip {c * 1e6:6.2f} us vs Pipe {p * 1e6:6.2f} us ({c / p:.3f}x); "
              f"1 MiB stream {cs / 1e9:5.2f} GB/s vs socketpair {ss / 1e9:5.2f} GB/s "
              f"({cs / ss:.2f}x)", flush=True)
    r, s_ = statistics.median(rt), statistics.median(st)
    print(f"64-byte round trip, median ratio Channel/Pipe: {r[0]:.3f} "
          f"(Channel {r[1] * 1e6:.2f} us, Pipe {r[2] * 1e6:.2f} us)")
    print(f"1 MiB recv_into streaming, median ratio Channel/socketpair: {s_[0]:.2f} "
          f"(Channel {s_[1] / 1e9:.2f} GB/s, socketpair {s_[2] / 1e9:.2f} GB/s)")


if __name__ == "__main__":
    main()
