"""valgrind memcheck over the C programs in tests/c (platform layer without Python)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import UNDER_ASAN, expect_line, finish, source_dir

C_DIR = Path(__file__).resolve().parent.parent / "c"
BUILD = C_DIR / "build"


@pytest.fixture(scope="module")
def valgrind():
    if UNDER_ASAN:
        pytest.skip("valgrind and a preloaded ASan runtime exclude each other; "
                    "memcheck runs in the normal pass")
    tool = shutil.which("valgrind")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is required in CI")
        pytest.skip("valgrind is not installed")
    if shutil.which("make") is None:
        pytest.skip("make is missing")
    src = source_dir() / "src"
    built = subprocess.run(["make", "-C", str(C_DIR), "native", f"SRC={src}"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return [tool, "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--track-fds=no"]


def test_shmpeer_serve_and_read_are_clean(children, shm_name, valgrind):
    peer = str(BUILD / "shmpeer")
    server = children.start(*valgrind, peer, "serve", shm_name, "4096", "under valgrind",
                            python=False)
    expect_line(server, "ready")
    reader = children.start(*valgrind, peer, "read", shm_name, "reply", python=False)
    assert finish(reader, timeout=120) == "under valgrind\n"
    server.stdin.write("\n")
    server.stdin.flush()
    finish(server, timeout=120)


def test_shmpeer_error_paths_are_clean(children, shm_name, valgrind):
    peer = str(BUILD / "shmpeer")
    missing = children.start(*valgrind, peer, "read", shm_name, python=False)
    missing.communicate(timeout=120)
    assert missing.returncode == 1          # reported, not a memcheck error (99)
    usage = children.start(*valgrind, peer, "serve", shm_name, "0", "x", python=False)
    usage.communicate(timeout=120)
    assert usage.returncode == 2


def test_other_native_programs_are_clean(valgrind):
    """Every self-checking native test program (tests/c/build/*_test) under memcheck."""
    programs = sorted(p for p in BUILD.glob("*_test") if os.access(p, os.X_OK))
    if not programs:
        pytest.skip("no self-checking native test programs built yet")
    for program in programs:
        result = subprocess.run([*valgrind, str(program)], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{program.name}:\n{result.stdout}\n{result.stderr}"
