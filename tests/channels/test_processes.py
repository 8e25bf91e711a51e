"""pyshm.Channel between processes: echo with checksums, many senders and
receivers, a blocked call interrupted by SIGINT, a blocked recv that lets
the other threads run.  Children are Python processes that import the same
build (test_fallback.py runs this file again against the fallback build).
"""

import hashlib
import json
import os
import random
import signal
import sys

import pytest

import pyshm

from .waits import DEADLINE, wait_until_sleeping

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


ECHO = """
import hashlib, sys, pyshm
req, rep = pyshm.Channel(sys.argv[1]), pyshm.Channel(sys.argv[2])
print("ready", flush=True)
buf = bytearray(req.max_message_size)
while True:
    n = req.recv_into(buf)
    data = bytes(buf[:n])
    if data == b"stop":
        break
    rep.send(hashlib.sha256(data).digest() + data[:8])
print("done", flush=True)
"""


def test_cross_process_echo_with_checksums(pyshm_names, pyshm_child):
    req_name, rep_name = pyshm_names(), pyshm_names()
    with pyshm.Channel(req_name, create=True, capacity=1 << 16) as req, \
            pyshm.Channel(rep_name, create=True, capacity=4096) as rep, \
            pyshm_child(ECHO, req_name, rep_name) as child:
        child.expect("ready")
        rng = random.Random(7)
        top = req.max_message_size
        sizes = [0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096, 4097, top - 1, top]
        sizes += [rng.randrange(0, top + 1) for _ in range(300)]
        for size in sizes:
            data = rng.randbytes(size)
            req.send(data, timeout=DEADLINE)
            answer = rep.recv(timeout=DEADLINE)
            assert answer == hashlib.sha256(data).digest() + data[:8], size
        req.send(b"stop")
        child.expect("done")
        child.finish()


SENDER = """
import struct, sys, pyshm
c = pyshm.Channel(sys.argv[1])
tag, n = int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    c.send(struct.pack("<II", tag, i) + bytes(i % 300), timeout=60)
print("sent", flush=True)
"""


RECEIVER = """
import json, struct, sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
got = []
while True:
    m = c.recv(timeout=60)
    if m == b"stop":
        break
    tag, i = struct.unpack_from("<II", m)
    assert m[8:] == bytes(i % 300)
    got.append([tag, i])
print(json.dumps(got), flush=True)
"""


def test_many_senders_many_receivers(pyshm_name, pyshm_child):
    senders, receivers, n = 3, 3, 3000
    with pyshm.Channel(pyshm_name, create=True, capacity=2048) as c:
        children = [pyshm_child(RECEIVER, pyshm_name) for r in range(receivers)]
        children += [pyshm_child(SENDER, pyshm_name, s, n) for s in range(senders)]
        for ch in children:
            ch.expect("ready")
        for ch in children[receivers:]:
            ch.send_line("go")
        for ch in children[receivers:]:
            ch.expect("sent")
            ch.finish()
        for _ in range(receivers):
            c.send(b"stop", timeout=DEADLINE)
        everything = []
        for ch in children[:receivers]:
            got = [tuple(x) for x in json.loads(ch.line())]
            ch.finish()
            for tag in range(senders):          # each sender's order kept
                seq = [i for t, i in got if t == tag]
                assert seq == sorted(seq)
            everything += got
        assert len(everything) == senders * n                     # no loss
        assert set(everything) == {(t, i) for t in range(senders) for i in range(n)}


INTERRUPTED = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
mode = sys.argv[2]
if mode == "send":
    while True:
        try:
            c.send(b"f" * 40, timeout=0)
        except TimeoutError:
            break
print("ready", flush=True)
try:
    if mode == "send":
        c.send(b"f" * 40)
    else:
        c.recv()
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
print("again", flush=True)
if mode == "send":
    c.send(b"after", timeout=60)
    print("sent after", flush=True)
else:
    print(c.recv(timeout=60).decode(), flush=True)
"""


@posix_only
@pytest.mark.parametrize("mode", ["recv", "send"])
def test_sigint_interrupts_blocked_call(pyshm_name, pyshm_child, mode):
    with pyshm.Channel(pyshm_name, create=True, capacity=256) as c, \
            pyshm_child(INTERRUPTED, pyshm_name, mode) as child:
        child.expect("ready")
        wait_until_sleeping(child.pid)
        os.kill(child.pid, signal.SIGINT)
        child.expect("KeyboardInterrupt")
        child.expect("again")
        if mode == "recv":
            c.send(b"hello after", timeout=DEADLINE)
            child.expect("hello after")
        else:
            got = []
            while len(got) < 20 and b"after" not in got:
                got.append(c.recv(timeout=DEADLINE))
            assert b"after" in got
            child.expect("sent after")
        child.finish()


@posix_only
def test_sigint_ends_cli_recv_follow(pyshm_name, pyshm_child):
    """`pyshm recv --follow` prints every message until Ctrl-C, then exits 130."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        follower = pyshm_child.module("pyshm", "recv", pyshm_name, "--follow")
        for i in range(3):
            chan.send(f"message {i}".encode())
            follower.expect(f"message {i}")
        wait_until_sleeping(follower.pid)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=DEADLINE)
        assert follower.returncode == 130, err
        assert err.strip() == "pyshm recv: interrupted"


GIL_PROBE = """
import sys, threading, pyshm
c = pyshm.Channel(sys.argv[1])
t = threading.Thread(target=lambda: print("thread got", c.recv().decode(), flush=True))
t.start()
# While the thread waits in recv() the main thread keeps running Python code.
total = sum(range(3_000_000))
print("main ran", total > 0, flush=True)
c.send(b"ping")
t.join()
"""


def test_blocked_recv_releases_gil(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=256), \
            pyshm_child(GIL_PROBE, pyshm_name) as child:
        assert child.line() == "main ran True"
        assert child.line() == "thread got ping"
        child.finish()


# ---- pickling by name into 'spawn' children ------------------------------------------

def test_channel_and_segment_travel_to_a_spawn_process(pyshm_names):
    """multiprocessing.Process(args=(ch, shm)) under 'spawn': both arrive
    pickled by name (spin=False and readonly=True with them) and reopen the
    same objects in the child."""
    import multiprocessing

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    name, seg_name = pyshm_names(), pyshm_names()
    with pyshm.Channel(name, create=True, capacity=1 << 16) as ch, \
            pyshm.SharedMemory(seg_name, create=True, size=64) as shm:
        shm.write(b"hello")
        for spin, readonly in ((True, False), (False, True)):
            quiet = pyshm.Channel(name, spin=spin)
            seen = pyshm.SharedMemory(seg_name, readonly=readonly)
            proc = ctx.Process(target=spawned.report, args=(quiet, seen))
            proc.start()
            try:
                got = ch.recv_obj(timeout=DEADLINE)
            finally:
                proc.join(DEADLINE)
            quiet.close()
            seen.close()
            assert proc.exitcode == 0
            assert got["pid"] == proc.pid != os.getpid()
            assert got["channel"] == (name, spin, 1 << 16)
            assert got["segment"] == (seg_name, readonly, b"hello")


def test_spawned_echo_of_objects(pyshm_names):
    import multiprocessing

    import numpy as np

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    with pyshm.Channel(pyshm_names(), create=True, capacity=1 << 22) as req, \
            pyshm.Channel(pyshm_names(), create=True, capacity=1 << 22) as rep:
        cargo = [np.arange(1000.0).reshape(10, 100, order="F"), {"k": [1, 2]}, b"\0" * 5000]
        proc = ctx.Process(target=spawned.echo, args=(req, rep, len(cargo)))
        proc.start()
        try:
            for obj in cargo:
                req.send_obj(obj, timeout=DEADLINE)
                back = rep.recv_obj(timeout=DEADLINE)
                if isinstance(obj, np.ndarray):
                    assert back.flags.f_contiguous and (back == obj).all()
                else:
                    assert back == obj
        finally:
            proc.join(DEADLINE)
        assert proc.exitcode == 0


def test_pool_initializer_gets_the_channel(pyshm_name):
    """A Pool initializer under 'spawn' receives the channel by name; every
    worker sends through it."""
    import multiprocessing

    from . import spawned

    ctx = multiprocessing.get_context("spawn")
    with pyshm.Channel(pyshm_name, create=True, capacity=1 << 16) as ch:
        with ctx.Pool(2, initializer=spawned.pool_init, initargs=(ch,)) as pool:
            pids = pool.map(spawned.pool_work, range(6))
        got = [ch.recv_obj(timeout=DEADLINE) for _ in range(6)]
        assert sorted(x for _, x in got) == list(range(6))
        assert {pid for pid, _ in got} == set(pids) and os.getpid() not in pids
        assert ch.queued == 0

