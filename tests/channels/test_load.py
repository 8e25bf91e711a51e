"""Load: 4 senders x 4 receivers, 1,000,000 messages of mixed sizes.

Zero lost, zero duplicated, each sender's order kept.  Messages are 0 bytes
(counted apart) or carry the sender's id and sequence number in 8 bytes,
then bytes from a per-sender pool; sizes come from a table both sides build
from the same seed (mostly small, some KiB, a few up to 60 KiB).

Nothing is stored per message.  Each receiver keeps, per sender: the last
sequence number (every new one must be larger: order), a count, the sum of
the sequence numbers and the sum of CRC-32s of the whole messages; each
sender reports the same sums for what it sent.  Equal counts with equal
sums of sequence numbers and CRCs, and strictly rising sequences at every
receiver, leave no room for a loss, a duplicate or a changed byte to hide.

Marked ``slow``; the default ``pytest`` run includes it (deselect with
``-m "not slow"``).
"""

from __future__ import annotations

import json

import pytest

import pyshm

SENDERS, RECEIVERS = 4, 4
TOTAL = 1_000_000
PER_SENDER = TOTAL // SENDERS
STOP = b"\xff"              # the only 1-byte message

COMMON = r"""
import json, random, struct, sys, zlib, pyshm
def size_table():
    rng = random.Random(20240501)
    out = []
    for _ in range(4096):
        r = rng.random()
        if r < 0.05:
            out.append(0)
        elif r < 0.75:
            out.append(rng.randrange(8, 128))
        elif r < 0.97:
            out.append(rng.randrange(128, 4096))
        else:
            out.append(rng.randrange(4096, 60000))
    return out
SIZES = size_table()
"""

SENDER = COMMON + r"""
c = pyshm.Channel(sys.argv[1])
sid, n = int(sys.argv[2]), int(sys.argv[3])
pool = memoryview(random.Random(sid).randbytes(1 << 17))
buf = bytearray(1 << 16)
mv = memoryview(buf)
pack, crc32, send, sizes = struct.pack_into, zlib.crc32, c.send, SIZES
crcsum = seqsum = count = empties = 0
print("ready", flush=True)
sys.stdin.readline()
for seq in range(n):
    size = sizes[seq & 4095]
    if size == 0:
        send(b"")
        empties += 1
        continue
    pack("<II", buf, 0, sid, seq)
    off = (seq * 7919) & 0xFFFF
    mv[8:size] = pool[off:off + size - 8]
    m = mv[:size]
    send(m)
    crcsum += crc32(m)
    seqsum += seq
    count += 1
print(json.dumps([count, seqsum, crcsum, empties]), flush=True)
"""

RECEIVER = COMMON + r"""
c = pyshm.Channel(sys.argv[1])
nsend = int(sys.argv[2])
buf = bytearray(1 << 16)
mv = memoryview(buf)
last = [-1] * nsend
count, seqsum, crcsum = [0] * nsend, [0] * nsend, [0] * nsend
empties = 0
unpack, crc32, recv_into, sizes = struct.unpack_from, zlib.crc32, c.recv_into, SIZES
print("ready", flush=True)
while True:
    n = recv_into(buf)
    if n == 0:
        empties += 1
        continue
    if n == 1:
        break
    sid, seq = unpack("<II", buf)
    if seq <= last[sid] or n != sizes[seq & 4095]:
        print(json.dumps(["BAD", sid, seq, last[sid], n]), flush=True)
        sys.exit(1)
    last[sid] = seq
    count[sid] += 1
    seqsum[sid] += seq
    crcsum[sid] += crc32(mv[:n])
print(json.dumps([count, seqsum, crcsum, empties]), flush=True)
"""


@pytest.mark.slow
def test_a_million_messages_four_by_four(pyshm_name, pyshm_child):
    per_sender = PER_SENDER
    with pyshm.Channel(pyshm_name, create=True, capacity=1 << 20) as c:
        receivers = [pyshm_child(RECEIVER, pyshm_name, SENDERS) for _ in range(RECEIVERS)]
        senders = [pyshm_child(SENDER, pyshm_name, s, per_sender) for s in range(SENDERS)]
        for p in receivers + senders:
            p.expect("ready")
        for p in senders:
            p.send_line("go")
        sent = [json.loads(p.line(timeout=600)) for p in senders]
        for p in senders:
            p.finish()
        for _ in receivers:
            c.send(STOP, timeout=60)
        got = []
        for p in receivers:
            line = json.loads(p.line(timeout=600))
            assert line[0] != "BAD", f"receiver saw {line}"
            got.append(line)
            p.finish()
        assert c.queued == 0

    empties_sent = sum(s[3] for s in sent)
    assert sum(g[3] for g in got) == empties_sent
    for sid in range(SENDERS):
        count, seqsum, crcsum, _ = sent[sid]
        assert count + sent[sid][3] == per_sender
        got_count = sum(g[0][sid] for g in got)
        assert got_count == count, f"sender {sid}: sent {count}, received {got_count}"
        assert sum(g[1][sid] for g in got) == seqsum, f"sender {sid}: other sequence numbers"
        assert sum(g[2][sid] for g in got) == crcsum, f"sender {sid}: other bytes"
