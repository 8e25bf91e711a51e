"""valgrind memcheck over the C programs in tests/c (platform layer without Python)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform == "win32",
    reason="valgrind runs native Linux programs; the Windows programs run under Wine on "
           "the host (tests/windows/test_wine.py)")


@pytest.fixture(scope="module")
def valgrind(request, under_asan):
    if under_asan:
        pytest.skip("valgrind and a preloaded ASan runtime exclude each other; "
                    "memcheck runs in the normal pass")
    tool = shutil.which("valgrind")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is required in CI")
        pytest.skip("valgrind is not installed")
    request.getfixturevalue("c_programs")      # built after the checks above
    return [tool, "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--track-fds=no"]


def test_shmpeer_serve_and_read_are_clean(pyshm_child, pyshm_name, valgrind, c_programs):
    peer = str(c_programs / "shmpeer")
    server = pyshm_child.command(*valgrind, peer, "serve", pyshm_name, "4096",
                                 "under valgrind")
    server.expect("ready")
    reader = pyshm_child.command(*valgrind, peer, "read", pyshm_name, "reply")
    assert reader.finish(timeout=120) == "under valgrind\n"
    server.send_line("")
    server.finish(timeout=120)


def test_shmpeer_error_paths_are_clean(pyshm_child, pyshm_name, valgrind, c_programs):
    peer = str(c_programs / "shmpeer")
    missing = pyshm_child.command(*valgrind, peer, "read", pyshm_name)
    missing.communicate(timeout=120)
    assert missing.returncode == 1          # reported, not a memcheck error (99)
    usage = pyshm_child.command(*valgrind, peer, "serve", pyshm_name, "0", "x")
    usage.communicate(timeout=120)
    assert usage.returncode == 2


def test_other_native_programs_are_clean(valgrind, c_programs):
    """Every self-checking native test program (tests/c/build/*_test) under memcheck."""
    programs = sorted(p for p in c_programs.glob("*_test") if os.access(p, os.X_OK))
    if not programs:
        pytest.skip("no self-checking native test programs built yet")
    for program in programs:
        result = subprocess.run([*valgrind, str(program)], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{program.name}:\n{result.stdout}\n{result.stderr}"
