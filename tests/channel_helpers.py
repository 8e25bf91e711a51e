"""Shared helpers for the channel tests: unique names, child processes.

Children run ``sys.executable`` with ``PYTHONPATH`` set to the directory
that holds the parent's ``pyshm`` package, so both import the same build
(the worktree's, or the fallback build under test).  They say "ready" on
stdout when set up; the parent waits for lines with a deadline and always
kills and reaps them.
"""

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import pyshm

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyshm.__file__)))

# Generous: a loaded CI machine must not turn a slow child into a failure.
DEADLINE = 60.0


def unique_name(tag="ch"):
    """A short fresh segment name (FreeBSD allows 14 characters in all)."""
    return f"t{tag[:3]}{uuid.uuid4().hex[:10]}"


def unlink_quietly(name):
    try:
        pyshm.unlink(name)
    except FileNotFoundError:
        pass


class Child:
    """A Python child process running CODE (dedented), with line-wise stdout."""

    def __init__(self, code, *args):
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, text=True)
        self.lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self):
        return self.proc.pid

    def line(self, timeout=DEADLINE):
        """The next stdout line; fails the test at the deadline or on EOF."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child {self.pid} said nothing for {timeout} s")
        if line is None:
            self.proc.wait(timeout=DEADLINE)
            pytest.fail(f"child {self.pid} ended (rc {self.proc.returncode}) "
                        f"without a line; stderr:\n{self.proc.stderr.read()}")
        return line

    def expect(self, text, timeout=DEADLINE):
        line = self.line(timeout)
        assert line == text, f"child {self.pid}: expected {text!r}, got {line!r}"

    def send_line(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=DEADLINE):
        """Wait for a clean exit; return the remaining stdout lines."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"child {self.pid} did not finish within {timeout} s")
        self._reader.join(timeout)
        out = []
        while True:
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                break
            out.append(line)
        err = self.proc.stderr.read()
        assert rc == 0, f"child {self.pid} failed with rc {rc}; stderr:\n{err}"
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)

    def close(self):
        """Always safe: kill if running, reap, close pipes."""
        try:
            self.kill()
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_until_sleeping(pid, tid=None, timeout=DEADLINE):
    """Wait (deadline, no fixed sleep) until PID (thread TID) blocks in the kernel.

    Linux only: /proc/PID[/task/TID]/stat state 'S'.  Elsewhere return at once.
    """
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    if not os.path.exists(path):
        return
    end = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < end:
        with open(path) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        # Several readings in a row: a spin phase between short sleeps
        # (fallback waits) must not count as blocked.
        seen = seen + 1 if state == "S" else 0
        if seen >= 3:
            return
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess
    pytest.fail(f"process {pid} never blocked")


def sigint(pid):
    os.kill(pid, signal.SIGINT)
