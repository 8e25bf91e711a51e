"""The slot core as plain C between forked processes (tests/c/slot_test.c).

Builds and runs `make -C tests/c check-slot`: the futex build and the
fallback build of slot_test, each of which must end with "all passed"; then
slot_test again built with AddressSanitizer and UndefinedBehaviorSanitizer
(its fuzz loop of hostile bytes over header and cells above all).  valgrind
runs it too (test_valgrind.py); the Windows build runs under Wine
(tests/windows/test_wine.py).
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CDIR = os.path.join(ROOT, "tests", "c")
SANITIZE = "-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the C test forks on Linux; the core with the Windows sync objects runs under "
           "Wine from the host (tests/windows/test_wine.py)")


def make(args, out, prefix, cflags=None):
    missing = [t for t in ("make", "cc") if shutil.which(t) is None]
    if missing or not os.path.exists(os.path.join(CDIR, "slot_test.c")):
        if os.environ.get("CI"):
            pytest.fail(f"missing in CI: {missing}")
        pytest.skip(f"needs {missing} and the source tree")
    env = dict(os.environ, PYSHM_TEST_PREFIX=prefix)
    argv = ["make", "-s", "-C", CDIR, f"OUT={out}", *args]
    if cflags:
        argv.append(f"CFLAGS={cflags}")
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)


def test_slot_core_in_c(tmp_path, pyshm_name):
    # The program's slot names start with one of this session's names, so
    # the session's leftover check sees any it leaves behind.
    proc = make(["check-slot"], tmp_path / "build", pyshm_name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("all passed") == 2, proc.stdout


def test_slot_core_under_asan_and_ubsan(tmp_path, pyshm_name):
    out = tmp_path / "asan"
    proc = make([f"{out}/slot_test"], out, pyshm_name, SANITIZE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = subprocess.run([str(out / "slot_test")], capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, PYSHM_TEST_PREFIX=pyshm_name,
                                  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.splitlines()[-1] == "all passed"
