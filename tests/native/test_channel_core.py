"""The channel core as plain C between forked processes (tests/c/chan_test.c),
and the futex scheme's locks on their rare paths (tests/c/sync_linux_test.c).

Builds and runs `make -C tests/c check-chan`: every self-checking program
the Makefile lists (`make print-checks`: the futex and the fallback build of
chan_test, sync_linux_test), each of which must end with "all passed".
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CDIR = os.path.join(ROOT, "tests", "c")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the C test forks on Linux; the core with the Windows sync objects "
                           "runs under Wine from the host (tests/windows/test_wine.py)")
def test_chan_core_in_c(tmp_path, pyshm_name):
    missing = [t for t in ("make", "cc") if shutil.which(t) is None]
    if missing or not os.path.exists(os.path.join(CDIR, "chan_test.c")):
        if os.environ.get("CI"):
            pytest.fail(f"missing in CI: {missing}")
        pytest.skip(f"needs {missing} and the source tree")
    out = str(tmp_path / "build")
    checks = subprocess.run(["make", "-s", "-C", CDIR, "print-checks"], capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    assert {"chan_test", "chan_test_fallback", "sync_linux_test"} <= set(checks), checks
    # The programs' channel names start with one of this session's names, so
    # the session's leftover check sees any they leave behind.
    proc = subprocess.run(["make", "-s", "-C", CDIR, f"OUT={out}", "check-chan"],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYSHM_TEST_PREFIX=pyshm_name))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("all passed") == len(checks), proc.stdout
