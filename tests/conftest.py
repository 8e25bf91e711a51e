"""What every test here shares, on top of pyshm's own pytest plugin.

Names and child processes come from the plugin's fixtures, the ones users
get (pyshm/pytest_plugin.py): ``pyshm_name``, ``pyshm_names``,
``pyshm_segment``, ``pyshm_channel`` and ``pyshm_child`` (with ``.script``,
``.module`` and ``.command``); children import this very pyshm and are
killed and reaped after the test.  This file adds:

* a session-wide check that fails the run if any name of this session (the
  plugin's prefix) is still in /dev/shm at the end;
* ``source_dir``, ``c_programs``, ``native_compiler``, ``windows_toolchain``, ``under_asan``,
  ``under_wine``, ``numpy``, ``assert_no_leaks``, ``is_mapped``, ``shm_mappings``,
  ``gil_released_during``,
  ``creation_race`` and ``thread_stress`` for the tests that compile C,
  cross-build for Windows, read the documentation, count resources, need NumPy,
  look at this process's mappings, check that a call lets other threads
  run, race creators, or share one object among threads;
* ``not_a_segment`` and ``answers_at_once`` for the tests of names that are
  not segments (a FIFO in /dev/shm...), through every opener;
* ``pid_namespace``: the command prefix that runs a program as PID 1 of a
  PID namespace of its own (``unshare``), or a skip.

Each folder owns one subject (tests/README.md).  Test folders are packages,
tests/ itself is not: pytest puts tests/ on sys.path, never the checkout, so
an installed or fallback build is not shadowed.  A helper for one folder is a
module in it, imported relatively (``from .peer import pattern``); a helper
for several folders is a fixture here or in the plugin.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, List, Sequence, Tuple

import pytest

from pyshm.pytest_plugin import DEADLINE, session_names

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    # Installing pyshm registers the plugin (entry point pytest11); without an
    # install (a build on PYTHONPATH) load it here.
    if not config.pluginmanager.has_plugin("pyshm"):
        config.pluginmanager.import_plugin("pyshm.pytest_plugin")
    # A run started in a background job of a script (`pytest &`, as CI
    # scripts do) inherits SIGINT ignored, and so would every child: Python
    # then installs no KeyboardInterrupt handler there and the SIGINT tests
    # hang.  Give this process, and through exec its children, the default
    # an interactive run has.
    import signal

    if hasattr(signal, "SIGINT") and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _wine_version():
        _retry_wine_process_creation()


# ERROR_INTERNAL_ERROR: Wine's answer when a new process dies while it starts
# (its NtCreateUserProcess maps a start that never reported to
# STATUS_INTERNAL_ERROR).  Seen once in CI, in a test starting ~75 children
# on a loaded machine; real Windows does not answer it.
_WINE_START_FAILED = 1359


def _retry_wine_process_creation() -> None:
    """Under Wine, start a child again when its start fails as above: a
    failed CreateProcess consumed none of the handles it was given, so the
    call is simply repeated (a few times, then the error stands)."""
    import _winapi
    import time

    create = _winapi.CreateProcess

    def create_process(*args: Any) -> Any:
        for attempt in range(1, 6):
            try:
                return create(*args)
            except OSError as e:
                if getattr(e, "winerror", None) != _WINE_START_FAILED or attempt == 5:
                    raise
                time.sleep(0.1 * attempt)   # back off: the machine is starved, not racing us

    _winapi.CreateProcess = create_process  # subprocess looks it up at every call


@pytest.fixture(autouse=True, scope="session")
def nothing_left_in_dev_shm() -> Iterator[None]:
    """Fails the run if a name made by this session is left in /dev/shm (the
    fixtures remove theirs after each test: what is left escaped them)."""
    yield
    left = session_names.in_dev_shm()
    for name in left:
        session_names.remove(name)
    assert not left, f"tests left segments in /dev/shm: {sorted(left)}"


@pytest.fixture(scope="session")
def source_dir() -> Path:
    """The checkout (or unpacked sdist) holding src/, README.md and docs/, for tests
    that compile C or read the documentation.

    Normally the tree these tests sit in.  When they run from a copy outside
    it, against an installed pyshm (.ci/package.sh does that),
    PYSHM_SOURCE_DIR names it; without it such tests skip and say why.
    """
    given = os.environ.get("PYSHM_SOURCE_DIR")
    root = Path(given) if given else HERE.parent
    src = root / "src"
    if (src / "sources.txt").is_file():
        return root.resolve()
    if given:
        pytest.fail(f"PYSHM_SOURCE_DIR={given!r} has no src/sources.txt")
    pytest.skip("the C sources are not here (tests run outside a checkout); "
                "set PYSHM_SOURCE_DIR to a checkout or an unpacked sdist")


@pytest.fixture(scope="session")
def c_programs(source_dir: Path) -> Path:
    """The folder of the C peers and test programs, built on the platform
    layer alone from source_dir's src/: tests/c/build after ``make -C
    tests/c native``; on Windows the folder PYSHM_WIN32_PROGRAMS names,
    where the host built them with mingw-w64 (``make -C tests/c win32``,
    done by ``tools/winbuild.py test``: neither make nor a compiler runs
    inside Windows here).  Their names are the same; Windows adds .exe."""
    if sys.platform == "win32":
        given = os.environ.get("PYSHM_WIN32_PROGRAMS")
        if given and (Path(given) / "shmpeer.exe").is_file():
            return Path(given)
        reason = ("the Windows C peers are cross-built on the host (make -C tests/c win32) "
                  "and named by PYSHM_WIN32_PROGRAMS, which is "
                  + (f"{given!r} (no shmpeer.exe there)" if given else "not set"))
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)
    missing = [t for t in ("make", os.environ.get("CC", "cc")) if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")
    c_dir = HERE / "c"
    built = subprocess.run(["make", "-C", str(c_dir), "native", f"SRC={source_dir / 'src'}"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return c_dir / "build"


@dataclass(frozen=True)
class NativeCompiler:
    """How a native program is built against ``pyshm.get_include()`` here."""

    cc: str                 # the C compiler: CC, else cc
    wait_flags: List[str]   # a fallback build of the extension talks only to a fallback build


@pytest.fixture(scope="session")
def native_compiler() -> NativeCompiler:
    """The C compiler that builds native programs on the C API, and the
    flags that match this extension's wait build; the test skips without
    one (fails in CI)."""
    import pyshm

    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: a C compiler ({cc})")
        pytest.skip(f"no C compiler ({cc}) to build a native program with")
    return NativeCompiler(cc, ["-DPYSHM_WAIT_FALLBACK"] if pyshm.CHANNEL_WAIT == "fallback" else [])


@pytest.fixture(scope="session")
def windows_toolchain() -> Callable[..., None]:
    """``windows_toolchain(*programs)``: for the tests that build Windows
    programs on the Linux host (mingw-w64) or start Wine.  Skips on Windows
    itself, and when a program is missing -- a failure instead with
    PYSHM_REQUIRE_WINE=1 (CI)."""

    def require(*programs: str) -> None:
        if sys.platform == "win32":
            pytest.skip("runs on the Linux host: cross-builds with mingw-w64, starts Wine")
        missing = [p for p in programs if shutil.which(p) is None]
        if missing:
            reason = "not installed: " + ", ".join(missing)
            if os.environ.get("PYSHM_REQUIRE_WINE") == "1":
                pytest.fail(f"PYSHM_REQUIRE_WINE=1 but {reason}")
            pytest.skip(reason)

    return require


@pytest.fixture(scope="session")
def under_asan() -> bool:
    """True when the suite runs against the sanitizer build (ASan runtime preloaded)."""
    return "libasan" in os.environ.get("LD_PRELOAD", "")


def _wine_version() -> str:
    """Wine's version when this is Windows Python under Wine, else ''."""
    if sys.platform != "win32":
        return ""
    import ctypes

    get = getattr(ctypes.WinDLL("ntdll"), "wine_get_version", None)  # Wine's own export
    if get is None:
        return ""
    get.restype = ctypes.c_char_p
    return str(get().decode())


@pytest.fixture(scope="session")
def under_wine() -> str:
    """Wine's version ("8.0") when the suite runs in Windows Python under
    Wine, '' elsewhere (real Windows included)."""
    return _wine_version()


@pytest.fixture(scope="session")
def numpy(under_wine: str) -> ModuleType:
    """NumPy, or the test skips and says why."""
    if under_wine:
        pytest.skip(f"NumPy 2.x aborts on import under Wine {under_wine} (ucrtbase's crealf "
                    "is unimplemented), so it is not installed there")
    return pytest.importorskip("numpy")


# ---- leak checks ----------------------------------------------------------------

def _shm_handles() -> int:
    """Descriptors and mappings of shared memory held by this process: what a
    leak in pyshm would grow (other descriptors come and go with the test run:
    pipes of earlier tests' children closed by the garbage collector).
    Windows: every open handle (GetProcessHandleCount) plus every mapped view
    (MEM_MAPPED regions), the two things a segment holds there."""
    if sys.platform == "win32":
        return _win_handles() + _win_mapped_views()
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
    """Memory this process owns: resident pages on Linux; on Windows its
    private commit (PROCESS_MEMORY_COUNTERS.PagefileUsage), which a leaked
    allocation grows and shared sections do not."""
    if sys.platform == "win32":
        return _win_private_bytes()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_in_use() -> Callable[[], int] | None:
    """A function that returns the bytes C's malloc has handed out and not
    had back (glibc's mallinfo2(): uordblks + hblkhd), or None where that
    cannot be asked (not glibc, glibc before 2.33).  Unlike resident pages,
    it sees a leak that fills memory freed earlier in the run."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None

    class Info(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    mallinfo2.restype = Info
    mallinfo2.argtypes = []

    def in_use() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return in_use


def _kernel32():  # type: ignore[no-untyped-def]
    import ctypes
    from ctypes import wintypes

    k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    k32.GetCurrentProcess.restype = wintypes.HANDLE
    k32.GetProcessHandleCount.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    k32.GetProcessHandleCount.restype = wintypes.BOOL
    return k32


def _win_handles() -> int:
    """Open handles of this process: GetProcessHandleCount; Wine 8 answers
    0 there for every process, so under Wine the handle values are probed
    one by one instead (GetHandleInformation succeeds on open ones; values
    are multiples of 4, and a test process stays far below 2**16)."""
    import ctypes
    from ctypes import wintypes

    k32 = _kernel32()
    count = wintypes.DWORD()
    if not k32.GetProcessHandleCount(k32.GetCurrentProcess(), ctypes.byref(count)):
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    if count.value > 0:
        return int(count.value)
    k32.GetHandleInformation.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    k32.GetHandleInformation.restype = wintypes.BOOL
    flags = wintypes.DWORD()
    return sum(1 for value in range(4, 1 << 16, 4)
               if k32.GetHandleInformation(value, ctypes.byref(flags)))


def _win_mapped_views() -> int:
    """Regions of this process's address space that are views of a section
    (MEMORY_BASIC_INFORMATION.Type == MEM_MAPPED), found by walking it with
    VirtualQuery from address 0."""
    import ctypes
    from ctypes import wintypes

    class MBI(ctypes.Structure):
        _fields_ = [("BaseAddress", ctypes.c_void_p), ("AllocationBase", ctypes.c_void_p),
                    ("AllocationProtect", wintypes.DWORD), ("PartitionId", wintypes.WORD),
                    ("RegionSize", ctypes.c_size_t), ("State", wintypes.DWORD),
                    ("Protect", wintypes.DWORD), ("Type", wintypes.DWORD)]

    k32 = _kernel32()
    k32.VirtualQuery.argtypes = [ctypes.c_void_p, ctypes.POINTER(MBI), ctypes.c_size_t]
    k32.VirtualQuery.restype = ctypes.c_size_t
    mem_mapped, views, address, info = 0x40000, 0, 0, MBI()
    while k32.VirtualQuery(address, ctypes.byref(info), ctypes.sizeof(info)):
        if info.Type == mem_mapped and info.BaseAddress == info.AllocationBase:
            views += 1
        address = (info.BaseAddress or 0) + info.RegionSize
    return views


def _win_private_bytes() -> int:
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
            (f, ctypes.c_size_t) for f in (
                "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage",
                "QuotaPagedPoolUsage", "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage",
                "PagefileUsage", "PeakPagefileUsage")]

    k32 = _kernel32()
    k32.K32GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.POINTER(Counters),
                                            wintypes.DWORD]
    k32.K32GetProcessMemoryInfo.restype = wintypes.BOOL
    counters = Counters(cb=ctypes.sizeof(Counters))
    if not k32.K32GetProcessMemoryInfo(k32.GetCurrentProcess(), ctypes.byref(counters),
                                       counters.cb):
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    return int(counters.PagefileUsage)


# The leak check's bounds (assert_no_leaks).  Bytes a cycle may keep: half
# of glibc's smallest heap chunk (32 bytes), so that one allocation of any
# size forgotten every cycle fails; a 64-byte one keeps 80 bytes.  The noise
# under it, the smallest window's growth after the warm-up, was at most
# 0.8 bytes a cycle in resident memory and 0.02 in malloc's bytes in use
# (release and debug CPython 3.11, Linux).  The old check, 4 MiB of
# resident memory over 20,000 cycles, let 200 bytes a cycle through.
LEAK_BYTES_PER_CYCLE = 16
# Python memory blocks (sys.getallocatedblocks()) a cycle may keep: one per
# fifty cycles, where a leaked object is at least one per cycle (measured
# noise: under 0.01 a cycle).
LEAK_BLOCKS_PER_CYCLE = 0.02
LEAK_WINDOWS = 4


@pytest.fixture
def assert_no_leaks(under_asan: bool) -> Callable[..., None]:
    """``assert_no_leaks(cycle, rounds=20_000, python_blocks=True)``: run
    CYCLE(i) ROUNDS times,
    after a warm-up, and assert that shared-memory descriptors and mappings
    (Windows: handles and mapped views) and this session's /dev/shm names
    are what they were, and that the memory a cycle keeps stays under
    LEAK_BYTES_PER_CYCLE (the process's resident pages, Windows: its private
    commit; and with glibc, malloc's bytes in use) and LEAK_BLOCKS_PER_CYCLE
    (Python's allocated blocks).

    Growth is measured per cycle, in LEAK_WINDOWS windows of ROUNDS /
    LEAK_WINDOWS cycles, and the smallest window counts: a leak grows every
    window by the same amount, while an allocator that takes a new arena or
    a cache that fills once grows one window only.  Linux and Windows; the
    byte bounds are not checked under ASan, whose quarantine keeps freed
    memory on purpose; PYTHON_BLOCKS=False leaves out Python's blocks."""
    if not (sys.platform.startswith("linux") or sys.platform == "win32"):
        pytest.skip(f"counts descriptors through /proc (Linux) or handles (Windows), "
                    f"not on {sys.platform}")

    malloc_in_use = _malloc_in_use()

    def check(cycle: Callable[[int], None], rounds: int = 20_000, *,
              python_blocks: bool = True) -> None:
        gc.collect()                # earlier tests' garbage goes before, not during
        for i in range(1000):       # allocator caches, free lists, first-use imports
            cycle(i)
        gc.collect()
        # Only this session's names: other programs may come and go in /dev/shm.
        handles, names = _shm_handles(), len(session_names.in_dev_shm())
        per = rounds // LEAK_WINDOWS
        # What is measured: Python's blocks; the process's memory (resident
        # pages, Windows: private commit), which also sees leaked mappings;
        # and (glibc) malloc's bytes in use, which also sees a leak that
        # only refills heap memory freed earlier in the session.
        meters: dict[str, Callable[[], int]] = {}
        if python_blocks:
            meters["Python memory blocks"] = sys.getallocatedblocks
        if not under_asan:          # ASan's quarantine keeps freed memory on purpose
            meters["bytes of memory"] = _rss
            if malloc_in_use is not None:
                meters["bytes from malloc"] = malloc_in_use
        seen: dict[str, list[int]] = {what: [meter()] for what, meter in meters.items()}
        for w in range(LEAK_WINDOWS):
            for i in range(w * per, (w + 1) * per):
                cycle(i)
            gc.collect()
            for what, meter in meters.items():
                seen[what].append(meter())
        assert _shm_handles() == handles
        assert len(session_names.in_dev_shm()) == names
        for what, values in seen.items():
            growth = [b - a for a, b in zip(values, values[1:])]
            bound = LEAK_BLOCKS_PER_CYCLE if what.startswith("Python") else LEAK_BYTES_PER_CYCLE
            assert min(growth) <= bound * per, (
                f"{what} grew by {growth} in windows of {per} cycles "
                f"(at least {min(growth) / per:.2f} a cycle, {bound} allowed)")

    return check


# ---- the GIL ----------------------------------------------------------------------

@pytest.fixture
def gil_released_during() -> Callable[[Callable[[], Any]], int]:
    """``gil_released_during(call)``: run CALL with preemption between Python
    threads turned off and return how many steps (up to 100) a second Python
    thread made meanwhile.  With no time-slice switches, that thread can run
    only while CALL has released the GIL itself: a CALL that keeps the GIL
    gives 0, whatever the timing.  (It then waits for CALL to finish: once it
    has made its steps, or at once if CALL took the GIL back first.)"""

    def measure(call: Callable[[], Any]) -> int:
        steps = 0
        go, done = threading.Event(), threading.Event()

        def other() -> None:
            nonlocal steps
            go.wait()
            while steps < 100 and not done.is_set():
                steps += 1
            done.wait()

        thread = threading.Thread(target=other)
        thread.start()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1000.0)  # no forced switch during CALL
        try:
            go.set()        # OTHER now waits for the GIL, which this thread has
            call()
            made = steps    # read before this thread can let OTHER run again
        finally:
            done.set()
            sys.setswitchinterval(interval)
            thread.join()
        return made

    return measure


# ---- creation races -----------------------------------------------------------------

# One racer: opens every name in order with KIND ("SharedMemory", "Channel"),
# creating (create=True, exist_ok=True) or polling for a creator (a plain
# open, FileNotFoundError retried), all racers starting on the same line
# from the parent.  Prints the number of errors, then each; what it opened
# must have the size (capacity) the creators ask for.  Its objects stay open
# until the parent says "close", once every racer has reported: on Windows a
# name lives only while a handle does, and a creator done before a slow
# poller started would take the names with it.
_RACER = r"""
import sys, time, pyshm
kind, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = sys.argv[4:]
cls = getattr(pyshm, kind)
extra = {"capacity" if kind == "Channel" else "size": size}
print("ready", flush=True)
sys.stdin.readline()
errors, made = [], []
end = time.monotonic() + 60
for name in names:
    while True:
        try:
            obj = cls(name, create=True, exist_ok=True, **extra) if mode == "create" else cls(name)
        except FileNotFoundError:
            if mode == "poll" and time.monotonic() < end:
                continue
            errors.append(f"{name}: no creator came")
            break
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            break
        made.append(obj)
        got = obj.capacity if kind == "Channel" else obj.size
        if got != size:
            errors.append(f"{name}: opened with {got} bytes, not {size}")
        break
print(len(errors), flush=True)
for error in errors:
    print(error, flush=True)
sys.stdin.readline()
for obj in made:
    obj.close()
"""


@pytest.fixture
def creation_race(pyshm_names: Any, pyshm_child: Any) -> Callable[..., List[str]]:
    """``creation_race(kind, size, creators=6, pollers=2, names=30)``: that many
    child processes open the same fresh names in the same order, starting
    together: creators with ``create=True, exist_ok=True``, pollers with a
    plain open retried while FileNotFoundError.  Returns every error the
    children saw (an exception, or an object of the wrong size)."""

    def race(kind: str, size: int, creators: int = 6, pollers: int = 2,
             names: int = 30) -> List[str]:
        fresh = [pyshm_names() for _ in range(names)]
        racers = [pyshm_child(_RACER, kind, mode, size, *fresh)
                  for mode in ["create"] * creators + ["poll"] * pollers]
        for racer in racers:
            racer.expect("ready")
        for racer in racers:
            racer.send_line("go")
        errors: List[str] = []
        for racer in racers:
            count = int(racer.line())
            errors += [racer.line() for _ in range(count)]
        for racer in racers:
            racer.send_line("close")
            racer.finish()
        return errors

    return race


# ---- thread stress --------------------------------------------------------------------

class ThreadStress:
    """Many threads on one object: see the ``thread_stress`` fixture."""

    threads = 8
    rounds = int(os.environ.get("PYSHM_STRESS_ROUNDS", "12"))

    def __init__(self) -> None:
        self.seed = int(os.environ.get("PYSHM_STRESS_SEED", random.randrange(1 << 30)))

    def run(self, one_round: Callable[[random.Random], None]) -> None:
        """ONE_ROUND(rng) ``rounds`` times, from one seed that a failure names."""
        rng = random.Random(self.seed)
        for _ in range(self.rounds):
            try:
                one_round(rng)
            except AssertionError as exc:
                raise AssertionError(f"PYSHM_STRESS_SEED={self.seed}: {exc}") from exc

    def share(self, make: Callable[[], Any], call: Callable[[Any, int, int, random.Random], None],
              ops: int, allowed: Tuple[type, ...], rng: random.Random) -> None:
        """The object MAKE() returns, used by ``threads`` threads that start
        together and make OPS calls each: CALL(obj, thread, seq, own_rng).
        Exceptions in ALLOWED are the documented ones; any other fails.  Once
        the threads run they hold the only references: the last one goes
        in whichever thread ends last."""
        seeds = [rng.randrange(1 << 30) for _ in range(self.threads)]
        start = threading.Barrier(self.threads)
        unexpected: List[str] = []

        def worker(tid: int, obj: Any) -> None:
            own = random.Random(seeds[tid])
            start.wait()
            for seq in range(ops):
                try:
                    call(obj, tid, seq, own)
                except allowed:
                    pass
                except BaseException as exc:    # anything else fails the test
                    unexpected.append(f"thread {tid} call {seq}: {exc!r}")
            del obj

        obj = make()
        workers = [threading.Thread(target=worker, args=(t, obj)) for t in range(self.threads)]
        for thread in workers:
            thread.start()
        del obj
        for thread in workers:
            thread.join(DEADLINE)
        assert not any(t.is_alive() for t in workers)
        assert unexpected == []


@pytest.fixture
def thread_stress() -> ThreadStress:
    """``thread_stress.run(one_round)`` and ``thread_stress.share(make, call, ops,
    allowed, rng)``: one object used by eight threads at once, for a bounded
    number of calls, over several rounds (PYSHM_STRESS_ROUNDS, default 12)
    from one seed (PYSHM_STRESS_SEED to replay one)."""
    return ThreadStress()


def _shm_mappings(name: str) -> List[Tuple[int, int]]:
    """The address ranges where this process maps the file that /dev/shm/NAME
    names, found by device and inode: a path would not do, a creator's
    mapping shows the unnamed file it made and linked under NAME only once
    whole ("/dev/shm/#1234 (deleted)", src/platform/segment_posix.c).
    [] where there is no /proc/self/maps to read (not Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    st = os.stat(f"/dev/shm/{name}")
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) < 5 or ":" not in fields[3]:
                continue
            major, minor = (int(x, 16) for x in fields[3].split(":"))
            if (int(fields[4]) == st.st_ino and major == os.major(st.st_dev)
                    and minor == os.minor(st.st_dev)):
                lo, hi = fields[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


@pytest.fixture
def shm_mappings() -> Callable[[str], List[Tuple[int, int]]]:
    """``shm_mappings(name)``: the address ranges where this process maps
    segment NAME now, however it was opened or created (Linux), to tell one
    object's mapping from another's of the same segment.  Always [] where
    there is no /proc/self/maps (not Linux): tests that use it on every
    platform look only where it can see."""
    return _shm_mappings


@pytest.fixture
def is_mapped() -> Callable[[str], bool]:
    """``is_mapped(name)``: whether this process maps segment NAME now,
    however it was opened or created (Linux; the name must exist)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps (Linux)")
    return lambda name: bool(_shm_mappings(name))


# ---- names that are not segments ------------------------------------------------------

@dataclass
class NotASegment:
    """An entry of /dev/shm under a fresh name that is not a segment."""

    kind: str           # the parameter: "fifo", "socket", "directory", "link-to-fifo", ...
    name: str
    what: str           # the words the error must say ("a FIFO", "a symbolic link")
    errno: int          # the errno pyshm gives it (docs/security.md)
    file_type: int      # stat.S_IFMT of the entry itself (not followed)
    ls_kind: str        # its KIND in `pyshm ls`

    def intact(self) -> bool:
        """Whether the entry is still there, of the same type."""
        try:
            return stat.S_IFMT(os.lstat(f"/dev/shm/{self.name}").st_mode) == self.file_type
        except FileNotFoundError:
            return False


# Every kind an unprivileged user can make in /dev/shm (a device needs
# CAP_MKNOD; the C layer names it the same way).
_NOT_SEGMENTS = ["fifo", "socket", "directory", "link-to-fifo", "link-to-file"]


@pytest.fixture(params=_NOT_SEGMENTS)
def not_a_segment(request: pytest.FixtureRequest, pyshm_names: Any,
                  tmp_path: Path) -> Iterator[NotASegment]:
    """A fresh name whose /dev/shm entry is one kind of thing that is not a
    segment, as any local user could make it: a FIFO, a socket, a directory,
    a symbolic link to a FIFO or to a regular file of the user's (both made
    in tmp_path).  Tests that take it run once per kind.  Linux (elsewhere
    shm_open names are no files); removed after the test."""
    if not sys.platform.startswith("linux"):
        pytest.skip("names in /dev/shm are files only on Linux")
    kind = request.param
    name = pyshm_names()
    path = f"/dev/shm/{name}"
    if kind == "fifo":
        os.mkfifo(path)
        made = NotASegment(kind, name, "a FIFO", errno.ENODEV, stat.S_IFIFO, "fifo")
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)         # the socket file stays after close
        made = NotASegment(kind, name, "a socket", errno.ENODEV, stat.S_IFSOCK, "socket")
    elif kind == "directory":
        os.mkdir(path)
        made = NotASegment(kind, name, "a directory", errno.EISDIR, stat.S_IFDIR, "directory")
    else:
        target = tmp_path / "target"
        if kind == "link-to-fifo":
            os.mkfifo(target)
        else:
            target.write_bytes(b"a file the link's maker wants written" + bytes(4096))
        os.symlink(target, path)
        made = NotASegment(kind, name, "a symbolic link", errno.ENODEV, stat.S_IFLNK,
                           "symlink")
    try:
        yield made
    finally:
        if os.path.lexists(path):
            (os.rmdir if kind == "directory" else os.unlink)(path)


# Runs each Python expression of argv[2:] (with `name` = argv[1] and pyshm
# imported) in order and prints, for each, one JSON line: the exception's
# type, errno, strerror and filename, or ["ok"] when it raised nothing.
_ATTEMPTS = r"""
import json, sys, pyshm
from pyshm import _pyshm
name = sys.argv[1]
for call in sys.argv[2:]:
    try:
        eval(call)
        print(json.dumps(["ok"]), flush=True)
    except Exception as exc:
        print(json.dumps([type(exc).__name__, getattr(exc, "errno", None),
                          getattr(exc, "strerror", None), getattr(exc, "filename", None)]),
              flush=True)
"""


@pytest.fixture
def answers_at_once(pyshm_child: Any) -> Callable[[str, Sequence[str]], List[List[Any]]]:
    """``answers_at_once(name, calls)``: each Python expression of CALLS
    (``name`` bound to NAME, ``pyshm`` and ``_pyshm`` imported) run in turn
    in one child process; returns per call [exception type name, errno,
    strerror, filename], or ["ok"].  An open that blocks (as open(2) of a
    FIFO does) fails the test after DEADLINE and the child is killed: it
    never stalls the suite."""

    def run(name: str, calls: Sequence[str]) -> List[List[Any]]:
        child = pyshm_child(_ATTEMPTS, name, *calls)
        results = [json.loads(child.line()) for _ in calls]
        child.finish()
        return results

    return run


# ---- PID namespaces ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def pid_namespace() -> List[str]:
    """The argv prefix that runs a program as PID 1 of a PID namespace of its
    own, with its own /proc -- as in one of two containers sharing /dev/shm:
    ``pyshm_child.command(*pid_namespace, sys.executable, ...)``.  Skips
    where unshare(1) cannot make one (not Linux, no privilege)."""
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux and unshare(1)")
    probe = subprocess.run(argv + [sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, timeout=DEADLINE)
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.skip(f"cannot make PID namespaces here: {probe.stderr.strip()[:200]}")
    return argv
