"""The Windows platform layer, cross-built with mingw-w64 and run under Wine.

Runs ``make -C tests/c check-win32`` (see tests/c/run_wine.py) with a Wine
prefix of its own in a temporary folder.  Needs no pyshm build: the Windows
programs use the C platform layer alone.

Without mingw-w64 or Wine the test is skipped with the reason; with
PYSHM_REQUIRE_WINE=1 (CI) a missing tool is a failure instead (conftest's
windows_toolchain).
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTS_C = ROOT / "tests" / "c"
TOOLS = ("x86_64-w64-mingw32-gcc", "wine", "wineserver", "make")

# Creating a fresh prefix takes 5-7 s and the tests a few more; this is only
# a backstop for a hung Wine (run_wine.py has its own deadlines).
TIMEOUT = 900


def test_check_win32_under_wine(tmp_path, windows_toolchain):
    windows_toolchain(*TOOLS)
    wine_dir = tmp_path / "wine"
    cmd = ["make", "-C", str(TESTS_C), "check-win32",
           f"WINE_DIR={wine_dir}", f"PYTHON={sys.executable}"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=TIMEOUT)
    finally:
        # The prefix is ~700 MB; the runner has stopped its wineserver.
        shutil.rmtree(wine_dir, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{output}")
    assert "run_wine: all passed" in proc.stdout, output
