"""Smoke test for the benchmark program: it runs and reports every row.

Tiny sizes, one short trial, no third-party peers.  Never asserts on speed
(STYLE.md habit 13): a slow or loaded machine must not fail the suite.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

from pyshm._subprocess import child_env

CPU_TEST = "CPU of a receiver at 10,000 msg/s"
TORN_TEST = ("torn reads of a 24 B struct rewritten flat out by another process, "
             "in 200,000 reads")


def test_bench_quick_json():
    proc = subprocess.run(
        [sys.executable, "-m", "pyshm", "bench", "--quick", "--sizes", "64,4096",
         "--shm-size", "64KiB", "--array-size", "256KiB", "--trials", "1", "--seconds", "0.01",
         "--no-third-party", "--json"],
        capture_output=True, text=True, env=child_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["machine"]["nproc"] >= 1
    rows = {(r["test"], r["impl"]): r for r in doc["rows"]}

    expected = []
    rt = ["pyshm.Channel", "multiprocessing.Pipe", "multiprocessing.Queue",
          "socket.socketpair", "stdlib shared_memory, busy-poll", "pyshm.Slot publish/wait"]
    expected += [("round trip 64 B", impl) for impl in rt]
    stream = ["Channel.recv", "Channel.recv_into", "Pipe.recv_bytes", "Queue.get",
              "socketpair.recv_into", "memcpy (bytearray slice copy)"]
    for size in ("64 B", "4 KiB"):
        expected += [(f"stream {size}", impl) for impl in stream]
    for test in ("write 64 B", "read 64 B", "write+read 64 B", "write 64 KiB",
                 "read 64 KiB (new bytes)", "readinto 64 KiB", "create + first write 64 KiB"):
        expected += [(test, impl) for impl in ("stdlib memoryview slice",
                                               "bytearray slice (limit)")]
    # The object sections (no third-party peers here: no faster-fifo, pyzmq).
    if importlib.util.find_spec("numpy") is not None:     # the array rows need NumPy
        expected += [("256 KiB float64 array", impl) for impl in (
            "Channel.send_obj/recv_obj", "Channel.reserve/recv_view", "multiprocessing.Pipe",
            "multiprocessing.Queue", "stdlib shared_memory hand-off",
            "memcpy (numpy.copyto, warm)")]
    expected += [("small dict {'id': i, 'name': 'x' * 32}", impl) for impl in (
        "Channel.send_obj/recv_obj", "multiprocessing.Pipe", "multiprocessing.Queue")]
    for size in ("256 KiB", "64 B"):
        expected += [(f"receive a queued {size} message", impl) for impl in (
            "Channel.recv_view", "Channel.recv (new bytes)", "Channel.recv_into (preallocated)")]
    expected += [("CPU of a receiver at 10,000 msg/s", impl) for impl in (
        "Channel.recv spin=True", "Channel.recv spin=False", "Pipe.recv_bytes")]
    # The slot rows (issue 20, point 6).
    expected += [("read 64 KiB while another process publishes", impl) for impl in (
        "pyshm Slot.readinto, writer publishing flat out", "Slot.readinto, writer idle")]
    expected += [(TORN_TEST, impl) for impl in ("pyshm Slot.read", "SharedMemory.read (raw)")]
    expected += [("publish+read 64 B", impl) for impl in (
        "pyshm Slot.publish+read", "pyshm SharedMemory.write+read", "bytearray slice (limit)")]
    missing = [key for key in expected if key not in rows]
    assert not missing, missing
    tests_with_a_limit = {r["test"] for r in doc["rows"] if "limit" in r["impl"]
                          or r["impl"].startswith(("memcpy", "stdlib shared_memory, busy"))}
    # Windows counts a process's CPU time in scheduler ticks (15.6 ms; 10 ms
    # under Wine): a receiver that needs less than one in this run's 0.2 s
    # reads 0 there, a ratio over it is 0 and one against it is not given.
    coarse_cpu = sys.platform == "win32"
    # The torn reads are a count: the slot's must be 0 (a torn read from a
    # Slot is a bug, not a figure); the raw segment's may be 0 in a short
    # run, and a ratio against 0 is not given.
    assert rows[(TORN_TEST, "pyshm Slot.read")]["value"] == 0
    assert rows[(TORN_TEST, "pyshm Slot.read")]["goal_met"] is True
    raw = rows[(TORN_TEST, "SharedMemory.read (raw)")]
    assert raw["value"] >= 0 and raw["ref"] == "pyshm Slot.read"
    assert raw["ratio"] == (0 if raw["value"] else None)
    # Peers of a pyshm row that is not the default pick: their ratio is
    # this row over that one.
    assert rows[("round trip 64 B", "pyshm.Slot publish/wait")]["ref"] == "pyshm.Channel"
    assert rows[("publish+read 64 B", "pyshm SharedMemory.write+read")]["ratio_of"] == \
        "pyshm Slot.publish+read / this"
    assert rows[("read 64 KiB while another process publishes", "Slot.readinto, writer idle")][
        "ratio_of"] == "pyshm Slot.readinto, writer publishing flat out / this"
    for key, row in rows.items():
        if key[0] == TORN_TEST:
            continue
        x = row["value"]
        zero_ok = coarse_cpu and key[0] == CPU_TEST
        assert isinstance(x, (int, float)) and math.isfinite(x) and \
            (x > 0 or (zero_ok and x == 0)), (key, x)
        # A ratio on every peer row, and on pyshm rows where a limit was measured.
        if row["ref"] is not None or not key[1].startswith(("pyshm", "Channel.")) or \
                key[0] in tests_with_a_limit:
            x = row["ratio"]
            if zero_ok and (x is None or x == 0):
                continue
            assert isinstance(x, (int, float)) and math.isfinite(x) and x > 0, (key, x)
        if row["unit"] == "us":
            assert row["p99"] >= row["value"] > 0, key
    assert rows[("receive a queued 64 B message", "Channel.recv (new bytes)")]["ref"] == \
        "Channel.recv_view"
    cpu = rows[(CPU_TEST, "Channel.recv spin=False")]
    assert (0 <= cpu["share"] if coarse_cpu else 0 < cpu["share"]) and \
        cpu["share"] <= 100 * os.cpu_count()
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


def test_a_cpu_time_of_zero_gives_no_ratio():
    """Windows counts process time in ticks of 10-16 ms: a receiver that
    needs less in a short run reads 0.  A ratio against that figure is not
    given (it was a ZeroDivisionError), one over it is 0, and the report
    still renders; the spin=False goal on the figure itself is judged."""
    from pyshm.bench.report import Row, document, finish_rows, render

    def rows(mine, pipe):
        return [
            Row("CPU", CPU_TEST, "Channel.recv spin=False", "CPU s/10k", "lower", mine,
                trials=[mine]),
            Row("CPU", CPU_TEST, "Pipe.recv_bytes", "CPU s/10k", "lower", pipe, trials=[pipe],
                ref="Channel.recv spin=False"),
        ]

    cfg = _config(1)
    pipe_zero, mine_zero = rows(0.05, 0.0), rows(0.0, 0.25)
    finish_rows(pipe_zero, cfg)
    finish_rows(mine_zero, cfg)
    assert pipe_zero[1].ratio is None and pipe_zero[1].ratio_of is None
    assert mine_zero[1].ratio == 0.0 and mine_zero[1].ratio_of == "Channel.recv spin=False / this"
    assert mine_zero[0].goal_met is True
    machine = {"pyshm": "x", "nproc": 2, "cpu": "c", "python": "3", "channel_wait": "win32",
               "date": "d"}
    for done in (pipe_zero, mine_zero):
        assert CPU_TEST in render(done, machine, cfg, [])
        json.dumps(document(done, machine, cfg, []), allow_nan=False)
