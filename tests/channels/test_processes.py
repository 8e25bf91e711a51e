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
import time

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



# ---- creation seen from other processes -------------------------------------------

def test_racing_creators_and_openers(creation_race):
    # Six processes create the same channels with exist_ok=True while two
    # poll for them with plain opens: every open gets the whole channel
    # (ProtocolError and ValueError came from headers seen half-written).
    assert creation_race("Channel", 1 << 20) == []


BIG_CREATOR = """
import sys, pyshm
print("starting", flush=True)
c = pyshm.Channel(sys.argv[1], create=True, capacity=1 << 30)
print("created", flush=True)
sys.stdin.readline()
c.close()
"""


def test_open_a_large_channel_while_it_is_created(pyshm_name, pyshm_child):
    # Reserving 1 GiB takes a while: an opener polling meanwhile finds no
    # channel, then the whole channel -- never a half-made one (it used to
    # get ProtocolError after waiting 200 ms for the header).
    with pyshm_child(BIG_CREATOR, pyshm_name) as creator:
        creator.expect("starting")
        end = time.monotonic() + DEADLINE
        while True:
            try:
                c = pyshm.Channel(pyshm_name)
                break
            except FileNotFoundError:
                assert time.monotonic() < end, "the channel never appeared"
        with c:
            assert c.capacity == 1 << 30
            c.send(b"hello")
            assert c.recv(timeout=0) == b"hello"
        creator.expect("created")
        creator.send_line("done")
        creator.finish()
