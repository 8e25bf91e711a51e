"""The portable fallback wait/lock (src/platform/sync_fallback.c) passes the channel
and slot tests.

macOS and the BSDs use it, but it is plain POSIX, so it is proven here on
Linux: a session fixture builds the extension with PYSHM_WAIT=fallback into
a temporary folder (its own build and temp dirs, nothing in the source tree
changes), copies the pure-Python package next to it, and runs the channel
tests of this folder (SUITE below), and those of tests/slots with the
wait= tests of tests/named (SLOT_SUITE), against that build in a pytest
subprocess with PYTHONPATH pointing there.  PYSHM_EXPECT_WAIT makes that
run fail if it imported any other build.  Child processes of that run get
the same build first on their path (they are given the imported package's
folder).

A futex build and a fallback build must never share a channel (their locks
differ): opening one from the other is refused, checked here as well.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

import pyshm

from .waits import DEADLINE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32",
                       reason="the fallback waits and locks are POSIX code (nanosleep, "
                              "kill(pid, 0)); Windows builds use named semaphores and lock words naming "
                              "liveness slots (named kernel objects)"),
    pytest.mark.skipif(os.environ.get("PYSHM_EXPECT_WAIT") == "fallback",
                       reason="already running inside the fallback run"),
]


def fallback_env(lib, **extra):
    """The environment of a child that must import the build in LIB, and only
    it.  Not pyshm._subprocess.child_env(): that puts the folder of the pyshm
    running the tests first on PYTHONPATH, the very build to keep out here."""
    return dict(os.environ, PYTHONPATH=str(lib), **extra)


@pytest.fixture(scope="session")
def fallback_build(tmp_path_factory):
    if not os.path.exists(os.path.join(ROOT, "setup.py")):
        pytest.skip("needs the source tree (setup.py)")
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc") is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler in CI")
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("fallback")
    lib, tmp = out / "lib", out / "tmp"
    env = dict(os.environ, PYSHM_WAIT="fallback")
    env.pop("PYSHM_SANITIZE", None)     # plain build; the sanitizer run covers the code
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(lib),
         "--build-temp", str(tmp)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The whole pure-Python package, subpackages too (pyshm.cli runs the
    # `python -m pyshm` children); not the source tree's own extension.
    shutil.copytree(os.path.join(ROOT, "pyshm"), lib / "pyshm", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    check = subprocess.run(
        [sys.executable, "-c", "import pyshm; print(pyshm.CHANNEL_WAIT, pyshm.__file__)"],
        cwd=str(out), env=fallback_env(lib),
        capture_output=True, text=True, timeout=DEADLINE)
    assert check.returncode == 0, check.stderr
    wait, path = check.stdout.split()
    assert wait == "fallback" and path.startswith(str(lib))
    return lib


# What runs again against the fallback build: the channel's behaviour in one
# process, between processes, under bad input, dying peers, hostile memory
# and threads.
SUITE = ["test_api.py", "test_processes.py", "test_bad_input.py", "test_faults.py",
         "test_hostile_memory.py", "test_threads.py", "test_loans.py", "test_objects.py",
         "test_asyncio.py", "test_readiness.py"]


def run_with_fallback(fallback_build, files):
    """pytest on FILES (paths under tests/) against the fallback build."""
    env = fallback_env(fallback_build, PYSHM_EXPECT_WAIT="fallback",
                       # The long campaigns run with the default build; here a
                       # shorter run of each covers the other wait/lock scheme.
                       PYSHM_FAULT_ROUNDS="8", PYSHM_FUZZ_EXAMPLES="100")
    # cwd outside the source tree so that sys.path[0] does not shadow the build
    # (pytest puts tests/, which holds no pyshm, on sys.path).
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(os.path.join(ROOT, "tests", f) for f in files)],
        cwd=str(fallback_build.parent), env=env, capture_output=True, text=True,
        timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout


def test_channel_suite_passes_with_fallback_wait(fallback_build):
    run_with_fallback(fallback_build, [f"channels/{f}" for f in SUITE])


# The slots and the shared lifecycle's wait= with the fallback's waits and
# locks (the same build: its slots take the write lock and wait the same way).
SLOT_SUITE = ["slots/test_api.py", "slots/test_processes.py", "slots/test_bad_input.py",
              "slots/test_faults.py", "slots/test_hostile_memory.py", "slots/test_threads.py",
              "slots/test_asyncio.py", "named/test_wait.py"]


def test_slot_suite_passes_with_fallback_wait(fallback_build):
    run_with_fallback(fallback_build, SLOT_SUITE)


OPEN_OTHER = """
import sys, pyshm
try:
    pyshm.Channel(sys.argv[1])
    print("opened")
except pyshm.ProtocolError as e:
    print("refused:", e)
"""


def test_futex_and_fallback_builds_refuse_each_other(fallback_build, pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=256):
        proc = subprocess.run([sys.executable, "-c", OPEN_OTHER, pyshm_name],
                              cwd=str(fallback_build.parent), env=fallback_env(fallback_build),
                              capture_output=True, text=True, timeout=DEADLINE)
        assert proc.returncode == 0, proc.stderr
        line = proc.stdout.strip()
        if pyshm.CHANNEL_WAIT == "fallback":
            assert line == "opened"
        else:
            assert line.startswith("refused:") and "scheme" in line




CREATE_AND_LEAVE = """
import sys, pyshm
pyshm.Channel(sys.argv[1], create=True, capacity=64).close()
"""

HOLD = """
import os, sys, pyshm
c = pyshm.Channel(sys.argv[1], create=sys.argv[2] == "create", capacity=64)
print("holding", os.getpid(), flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="rm --stale reads /dev/shm")
def test_rm_stale_keeps_the_pid_rule_in_the_fallback_build(fallback_build, pyshm_names):
    """The fallback's locks record no users (issue 19, point 7): `rm --stale`
    of that build still decides by the creator and the mappings of this PID
    namespace -- stale when the creator exited and no process maps it."""
    env = fallback_env(fallback_build)
    cwd = str(fallback_build.parent)

    def run(*argv: str, stdin=None, **kw):
        return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, text=True,
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                **kw)

    orphan, used, alive = (pyshm_names() for _ in range(3))
    for name in (orphan, used):
        made = run("-c", CREATE_AND_LEAVE, name)
        assert made.communicate(timeout=DEADLINE)[0] == "" and made.returncode == 0
    holders = [run("-c", HOLD, used, "open", stdin=subprocess.PIPE),
               run("-c", HOLD, alive, "create", stdin=subprocess.PIPE)]
    try:
        pids = [int(h.stdout.readline().split()[1]) for h in holders]
        rm = run("-m", "pyshm", "rm", "--stale", "--dry-run", orphan, used, alive)
        out, err = rm.communicate(timeout=DEADLINE)
        assert rm.returncode == 0, err
        assert (f"would remove {orphan} (channel; its creator (pid ") in out
        assert "has exited and no process has it mapped)" in out
        assert f"kept {used} (mapped by pid {pids[0]})" in out
        assert f"kept {alive} (its creator (pid {pids[1]}) is running)" in out
        info = run("-m", "pyshm", "info", alive)
        assert "users:    unknown" in info.communicate(timeout=DEADLINE)[0]
    finally:
        for h in holders:
            try:
                h.communicate(timeout=DEADLINE)     # stdin closed: it exits
            except subprocess.TimeoutExpired:
                h.kill()
                h.communicate()
    assert all(h.returncode == 0 for h in holders)
