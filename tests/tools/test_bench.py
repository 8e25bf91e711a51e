"""Smoke test for the benchmark program: it runs and reports every row.

Tiny sizes, one short trial, no third-party peers.  Never asserts on speed
(STYLE.md habit 13): a slow or loaded machine must not fail the suite.
"""

import json
import math
import subprocess
import sys

from pyshm._subprocess import child_env


def test_bench_quick_json():
    proc = subprocess.run(
        [sys.executable, "-m", "pyshm", "bench", "--quick", "--sizes", "64,4096",
         "--shm-size", "64KiB", "--trials", "1", "--seconds", "0.01", "--no-third-party",
         "--json"],
        capture_output=True, text=True, env=child_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["machine"]["nproc"] >= 1
    rows = {(r["test"], r["impl"]): r for r in doc["rows"]}

    expected = []
    rt = ["pyshm.Channel", "multiprocessing.Pipe", "multiprocessing.Queue",
          "socket.socketpair", "stdlib shared_memory, busy-poll"]
    expected += [("round trip 64 B", impl) for impl in rt]
    stream = ["Channel.recv", "Channel.recv_into", "Pipe.recv_bytes", "Queue.get",
              "socketpair.recv_into", "memcpy (bytearray slice copy)"]
    for size in ("64 B", "4 KiB"):
        expected += [(f"stream {size}", impl) for impl in stream]
    for test in ("write 64 B", "read 64 B", "write+read 64 B", "write 64 KiB",
                 "read 64 KiB (new bytes)", "readinto 64 KiB", "create + first write 64 KiB"):
        expected += [(test, impl) for impl in ("stdlib memoryview slice",
                                               "bytearray slice (limit)")]
    missing = [key for key in expected if key not in rows]
    assert not missing, missing
    for key, row in rows.items():
        for name in ("value", "ratio"):
            x = row[name]
            assert isinstance(x, (int, float)) and math.isfinite(x) and x > 0, (key, name, x)
        if row["unit"] == "us":
            assert row["p99"] >= row["value"] > 0, key
    # Each test has its pyshm row.
    for test in {t for t, _ in expected}:
        assert any(t == test and (i.startswith("pyshm") or i.startswith("Channel."))
                   for t, i in rows), test
    # The goals are reported (met or not), never enforced.
    assert doc["goals"] and all(isinstance(g["met"], bool) for g in doc["goals"])
