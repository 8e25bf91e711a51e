"""Shared fixtures for the pyshm tests.

Every test that makes a segment takes its name from `shm_name` (unique per
test, removed afterwards whatever happened); child processes come from
`spawn`, run `sys.executable` with the same pyshm on their path, and are
killed and reaped when the test ends.  A session-wide check fails the run if
any test left a segment of ours in /dev/shm.
"""

from __future__ import annotations

import gc
import itertools
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import pyshm

# Every name a test makes starts with this, so leftovers are recognisable.
TEST_PREFIX = f"pyt{os.getpid()}_{secrets.token_hex(2)}_"
_counter = itertools.count()
DEV_SHM = Path("/dev/shm")

#: The folder that holds the imported pyshm package; children get it first on
#: their path so they use the very build under test (source tree or installed).
PYSHM_PATH = str(Path(pyshm.__file__).resolve().parent.parent)
HERE = Path(__file__).resolve().parent
PEER = str(HERE / "segments" / "peer.py")


#: True when the suite runs against the sanitizer build (ASan runtime preloaded).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def source_dir() -> Path:
    """The checkout (or unpacked sdist) holding src/, for tests that compile C.

    Normally the tree these tests sit in.  When they run from a copy outside
    it, against an installed pyshm (.ci/package.sh does that),
    PYSHM_SOURCE_DIR names it; without it such tests skip and say why.
    """
    given = os.environ.get("PYSHM_SOURCE_DIR")
    root = Path(given) if given else HERE.parent
    if (root / "src" / "shm.h").is_file():
        return root.resolve()
    if given:
        pytest.fail(f"PYSHM_SOURCE_DIR={given!r} has no src/shm.h")
    pytest.skip("the C sources are not here (tests run outside a checkout); "
                "set PYSHM_SOURCE_DIR to a checkout or an unpacked sdist")


def new_name() -> str:
    return f"{TEST_PREFIX}{next(_counter)}"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (PYSHM_PATH, env.get("PYTHONPATH", "")) if p
    )
    return env


def remove_quietly(name: str) -> None:
    try:
        pyshm.unlink(name)
    except FileNotFoundError:
        pass


@pytest.fixture
def shm_name():
    """A fresh unique segment name; unlinked after the test if it exists."""
    name = new_name()
    yield name
    remove_quietly(name)


@pytest.fixture
def shm_names():
    """A factory of fresh names, all unlinked after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(new_name())
        return made[-1]

    yield make
    for name in made:
        remove_quietly(name)


class Children:
    """Starts child processes and guarantees they are reaped."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *argv: str, python: bool = True) -> subprocess.Popen[str]:
        cmd = [sys.executable, *argv] if python else list(argv)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.procs.append(proc)
        return proc

    def peer(self, *args: str) -> subprocess.Popen[str]:
        """Start tests/peer.py with ARGS (see its docstring for the roles)."""
        return self.start(PEER, *args)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=30)
            except (subprocess.TimeoutExpired, ValueError):
                pass
            proc.wait()


@pytest.fixture
def children():
    kids = Children()
    yield kids
    kids.close()


def expect_line(proc: subprocess.Popen[str], expected: str | None = None) -> str:
    """Read one line from PROC's stdout; fail with its stderr if it ended."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        err = proc.stderr.read() if proc.stderr else ""
        pytest.fail(f"child exited ({proc.returncode}) before saying {expected!r}:\n{err}")
    line = line.rstrip("\r\n")
    if expected is not None:
        assert line == expected, f"child said {line!r}, expected {expected!r}"
    return line


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for PROC; assert it exited 0; return its remaining stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out


# ---- leak checks ----------------------------------------------------------------

def _shm_handles() -> int:
    """Descriptors and mappings of shared memory held by this process: what a
    leak in pyshm would grow (other descriptors come and go with the test run:
    pipes of earlier tests' children closed by the garbage collector)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/shm/"):
                count += 1
        except OSError:
            pass
    with open("/proc/self/maps") as maps:
        count += sum(1 for line in maps if "/dev/shm/" in line)
    return count


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _our_names() -> int:
    # Only this run's names: other programs may come and go in /dev/shm.
    return sum(1 for n in os.listdir("/dev/shm") if n.startswith(TEST_PREFIX))


def assert_cycles_leak_nothing(cycle, rounds: int = 20_000) -> None:
    """Run CYCLE(i) ROUNDS times (after a warm-up) and assert that shared-memory
    descriptors and mappings, this run's /dev/shm names and RSS stay flat.
    Linux only (/proc)."""
    for i in range(500):        # warm up allocator caches
        cycle(i)
    gc.collect()
    handles, rss, names = _shm_handles(), _rss(), _our_names()
    for i in range(rounds):
        cycle(i)
    gc.collect()
    assert _shm_handles() == handles
    assert _our_names() == names
    if UNDER_ASAN:
        return  # ASan's quarantine holds freed memory back on purpose
    growth = _rss() - rss
    assert growth < 4 << 20, f"RSS grew by {growth} bytes over {rounds} cycles"


def _ours_in_dev_shm() -> set[str]:
    if not DEV_SHM.is_dir():
        return set()
    return {p.name for p in DEV_SHM.iterdir() if p.name.startswith(TEST_PREFIX)}


@pytest.fixture(autouse=True, scope="session")
def nothing_left_in_dev_shm():
    yield
    left = _ours_in_dev_shm()
    for name in left:
        remove_quietly(name)
    assert not left, f"tests left segments in /dev/shm: {sorted(left)}"
