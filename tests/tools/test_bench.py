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
    assert doc["goals"] and all(isinstance(g["met"], bool) or g["busy"]
                                for g in doc["goals"])


def _config(trials: int):
    from pyshm.bench.common import Config

    return Config(quick=True, trials=trials, seconds=0.1, sizes=[64], shm_size=1 << 16,
                  third_party=False, pin=False)


def test_a_busy_trial_gives_no_verdict():
    """A busy-poll row of 7,999 us against a 1.8 us Channel once read "met":
    trials that vary this much say the machine was busy, and say so."""
    from pyshm.bench.report import Row, document, finish_rows, render

    def rows(poll_trials):
        return [
            Row("round trip", "round trip 64 B", "pyshm.Channel", "us", "lower", 1.8,
                p99=2.5, trials=[1.7, 1.8, 1.9]),
            Row("round trip", "round trip 64 B", "stdlib shared_memory, busy-poll", "us",
                "lower", sorted(poll_trials)[1], p99=9000.0, trials=poll_trials),
        ]

    cfg = _config(3)
    quiet, busy = rows([1.8, 1.9, 2.0]), rows([1.9, 7999.0, 8100.0])
    finish_rows(quiet, cfg)
    finish_rows(busy, cfg)
    assert quiet[1].goal_met is True and quiet[1].busy is None
    assert busy[1].goal_met is None and "busy machine" in busy[1].busy
    text = render(busy, {"pyshm": "x", "nproc": 2, "cpu": "c", "python": "3",
                         "channel_wait": "futex", "date": "d"}, cfg, [])
    assert "goal <= 2.00: BUSY" in text and "met" not in text and "SHORT" not in text
    assert "busy-poll vary 4,263x (> 3x), no verdict" in text
    goal, = document(busy, {}, cfg, [])["goals"]
    assert goal["met"] is None and goal["busy"].startswith("busy machine")
