#!/usr/bin/env python3
"""Run the Windows test programs under Wine and check their results.

    run_wine.py --dir DIR --bin BINDIR [TEST.exe ...]
    run_wine.py --dir DIR --bin BINDIR --bench BENCH.exe

DIR holds this run's Wine prefix (DIR/prefix) and TMPDIR (DIR/tmp, where
Debian's wineserver keeps its socket); every Wine process started here shares
both, so they all talk to one wineserver and see each other's named objects.
DIR defaults to $PYSHM_WINE_DIR, else $XDG_CACHE_HOME/pyshm/c-wine (~/.cache
when unset): never inside the checkout, whose prefix links z: to / (setuptools
follows links when it collects the sdist's files).

Each TEST.exe must exit 0 *and* print "all passed" as its last line (a
crashed program may exit 0 under Wine).  Then shmpeer.exe and seed.exe from
BINDIR are launched as separate programs to exchange data both ways.  The
wineserver is shut down at the end whatever happened.  Exit status: 0 when
everything passed, 1 otherwise.  With --bench, BENCH.exe alone is run in
the same environment and its output shown (numbers, nothing checked but
its exit code).
"""

import argparse
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

# The first use of a prefix creates it (5-7 s measured; allow for slow CI).
FIRST_DEADLINE = 300.0
DEADLINE = 120.0

failures = []


def log(msg):
    print(msg, flush=True)


def check(ok, what):
    log(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)
    return ok


def wine_env(base):
    env = dict(os.environ)
    env.update(
        WINEPREFIX=os.path.join(base, "prefix"),
        TMPDIR=os.path.join(base, "tmp"),
        WINEDEBUG="-all",
        WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d",
    )
    env.pop("DISPLAY", None)    # headless: no window may ever appear
    return env


def lines_of(text):
    """Wine's console output is CRLF: strip the CR before comparing."""
    return [line.rstrip("\r") for line in text.splitlines()]


def show(label, text):
    for line in lines_of(text):
        log(f"  {label}| {line}")


def run(args, env, deadline=DEADLINE):
    """Run a program to its end; return (exit code, stdout, stderr)."""
    try:
        p = subprocess.run(args, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, errors="replace",
                           timeout=deadline)
    except subprocess.TimeoutExpired as e:   # run() has killed and reaped it
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, out, err + f"\n(run_wine: killed after {deadline:.0f} s)"
    return p.returncode, p.stdout, p.stderr


class Peer:
    """A program that keeps running: its stdout is read line by line by a
    thread so that waits for a handshake line can have a deadline."""

    def __init__(self, args, env):
        self.args = args
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._keep_err),
                         daemon=True).start()

    def _keep_err(self, line):
        if line is not None:
            self.stderr.append(line)

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink(line.rstrip("\r\n"))
        sink(None)

    def expect(self, wanted, deadline=DEADLINE):
        """Wait for the line WANTED; False at EOF or when the deadline passes."""
        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            log(f"  peer| {line}")
            if line == wanted:
                return True

    def finish(self, send=None, deadline=DEADLINE):
        """Send a line (or EOF), reap the program, return its exit code."""
        try:
            if send is not None:
                self.proc.stdin.write(send + "\n")
            self.proc.stdin.close()
        except OSError:
            pass                    # it already ended; the exit code tells
        try:
            return self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def rest(self):
        """Every line still queued (call after the program ended)."""
        out = []
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_test_program(exe, env, deadline):
    code, out, err = run(["wine", exe], env, deadline)
    name = os.path.basename(exe)
    lines = [line for line in lines_of(out) if line.strip()]
    ok = code == 0 and lines and lines[-1] == "all passed"
    if not ok:
        show(name, out)
        show(name + " stderr", err)
    else:
        for line in lines:          # what a passing program could not test
            if line.startswith("skip"):
                log(f"  {name}| {line}")
    check(ok, f"{name}: exit code {code}, last line {lines[-1] if lines else None!r}")


def interop(bindir, env):
    """shmpeer.exe and seed.exe, each started as its own `wine` command."""
    shmpeer = os.path.join(bindir, "shmpeer.exe")
    seed = os.path.join(bindir, "seed.exe")
    tag = f"pyshm-run{os.getpid()}"
    peers = []
    try:
        # 1. shmpeer serve <-> shmpeer read / seed read.
        name = tag + "-serve"
        serve = Peer(["wine", shmpeer, "serve", name, "5000", "hello from serve"], env)
        peers.append(serve)
        if check(serve.expect("ready"), "shmpeer serve: ready"):
            code, out, err = run(["wine", shmpeer, "read", name], env)
            check(code == 0 and lines_of(out) == ["hello from serve"],
                  f"shmpeer read (second program) sees the text: {code} {lines_of(out)!r} {err.strip()!r}")
            code, out, err = run(["wine", seed, "read", name], env)
            check(code == 0 and lines_of(out) == ["text: hello from serve"],
                  f"seed read sees shmpeer's text: {code} {lines_of(out)!r} {err.strip()!r}")
            code, out, err = run(["wine", shmpeer, "serve", name, "4096", "again"], env)
            check(code == 1 and "OS error 183" in err,
                  f"second exclusive create refused with ERROR_ALREADY_EXISTS: {code} {err.strip()!r}")
        code = serve.finish(send="done")
        check(code == 0, f"shmpeer serve exits 0: {code} {serve.stderr!r}")
        code, out, err = run(["wine", shmpeer, "read", name], env)
        check(code == 1 and "OS error 2)" in err,
              f"name gone with its last handle (ERROR_FILE_NOT_FOUND): {code} {err.strip()!r}")

        # 2. seed create <-> shmpeer read with a reply at offset 128.
        name = tag + "-seed"
        creator = Peer(["wine", seed, "create", name, "hello from seed"], env)
        peers.append(creator)
        if check(creator.expect("ready"), "seed create: ready"):
            code, out, err = run(["wine", shmpeer, "read", name, "reply from shmpeer"], env)
            check(code == 0 and lines_of(out) == ["hello from seed"],
                  f"shmpeer read sees the seed's text and replies: {code} {lines_of(out)!r} {err.strip()!r}")
        code = creator.finish(send="done")
        rest = creator.rest()
        for line in rest:
            log(f"  peer| {line}")
        check(code == 0 and rest == ["reply: reply from shmpeer"],
              f"seed sees the reply at offset 128: {code} {rest!r} {creator.stderr!r}")
    finally:
        for p in peers:
            p.kill()


def stop_wineserver(env):
    # -k exits 1 when no server runs; -w waits until it has gone.
    for flag in ("-k", "-w"):
        try:
            subprocess.run(["wineserver", flag], env=env, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            log(f"run_wine: wineserver {flag} did not finish")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    ap.add_argument("--dir", default=os.environ.get("PYSHM_WINE_DIR")
                    or os.path.join(cache, "pyshm", "c-wine"),
                    help="Wine prefix and TMPDIR of this run")
    ap.add_argument("--bin", default=os.path.join(here, "build", "win32"),
                    help="folder of the .exe files")
    ap.add_argument("--bench", help="run this benchmark program of --bin instead")
    ap.add_argument("tests", nargs="*", help="test programs in --bin")
    opts = ap.parse_args()

    for tool in ("wine", "wineserver"):
        if shutil.which(tool) is None:
            log(f"run_wine: {tool} not found")
            return 1
    base = os.path.abspath(opts.dir)
    bindir = os.path.abspath(opts.bin)
    os.makedirs(os.path.join(base, "tmp"), exist_ok=True)
    env = wine_env(base)
    log(f"run_wine: WINEPREFIX={env['WINEPREFIX']} TMPDIR={env['TMPDIR']}")

    try:
        # Start the wineserver (and create the prefix on first use) with a
        # program whose answer is known: usage, exit code 2.
        code, out, err = run(["wine", os.path.join(bindir, "shmpeer.exe")], env,
                             FIRST_DEADLINE)
        if not check(code == 2, f"wine starts; exit codes pass through (shmpeer usage: {code})"):
            show("stderr", err)
            return 1
        if opts.bench:
            code, out, err = run(["wine", os.path.join(bindir, opts.bench)], env, 600)
            show(opts.bench, out)
            show(opts.bench + " stderr", err)
            return 0 if code == 0 else 1
        for test in opts.tests:
            run_test_program(os.path.join(bindir, test), env, DEADLINE)
        interop(bindir, env)
    finally:
        stop_wineserver(env)

    if failures:
        log(f"run_wine: {len(failures)} FAILED")
        for what in failures:
            log(f"  - {what}")
        return 1
    log("run_wine: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
