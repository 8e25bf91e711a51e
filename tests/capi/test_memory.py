"""The C API under the memory checkers: the peer built from
pyshm.get_include() with AddressSanitizer and UndefinedBehaviorSanitizer,
and the plain build under valgrind's memcheck, each running its checks of
every bad input and its self-test between processes (channels both ways, a
blocked receiver, a writer publishing flat out)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .peer import build

pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="the checkers run native Linux programs; the Windows "
                                       "build runs under Wine on the host (test_wine.py)")

SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all", "-g", "-O1"]


@pytest.mark.parametrize("role", ["checks", "selftest"])
def test_under_asan_and_ubsan(tmp_path_factory, pyshm_name, role):
    peer = build(tmp_path_factory.mktemp("capi-asan"), SANITIZE)
    proc = subprocess.run([str(peer), role], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYSHM_TEST_PREFIX=pyshm_name,
                                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "all passed"


@pytest.mark.parametrize("role", ["checks", "selftest"])
def test_under_valgrind(tmp_path_factory, under_asan, pyshm_name, role):
    if under_asan:
        pytest.skip("valgrind and a preloaded ASan runtime exclude each other; memcheck runs "
                    "in the normal pass")
    tool = shutil.which("valgrind")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is required in CI")
        pytest.skip("valgrind is not installed")
    peer = build(tmp_path_factory.mktemp("capi-vg"), ["-g", "-O1"])
    proc = subprocess.run([tool, "--quiet", "--error-exitcode=99", "--leak-check=full",
                           "--errors-for-leak-kinds=definite,indirect", str(peer), role],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYSHM_TEST_PREFIX=pyshm_name))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "all passed"
