"""The C API as a Windows program: the peer cross-built from
pyshm.get_include() with mingw-w64 exactly as a user would, run under Wine on
the Linux host -- its checks of every bad input and its self-test between
Windows processes (channels both ways, a receiver blocked without a timeout,
a writer publishing flat out read whole).  (The same peer against Windows
Python runs in the suite under Wine: tools/winbuild.py test.)

Without mingw-w64 or Wine the test skips with the reason; with
PYSHM_REQUIRE_WINE=1 (CI) a missing tool is a failure instead."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pyshm

from .peer import PEER_SOURCE

TOOLS = ("x86_64-w64-mingw32-gcc", "wine", "wineserver")


def test_peer_under_wine(tmp_path, windows_toolchain):
    windows_toolchain(*TOOLS)
    inc = Path(pyshm.get_include())
    exe = tmp_path / "capi_peer.exe"
    subprocess.run(["x86_64-w64-mingw32-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror",
                    str(PEER_SOURCE), str(inc / "pyshm.c"), "-I", str(inc), "-o", str(exe)],
                   check=True, capture_output=True)
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, WINEPREFIX=str(tmp_path / "prefix"), TMPDIR=str(tmp_path / "tmp"),
               WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d")
    env.pop("DISPLAY", None)
    # Wine is not ours to instrument: the sanitizer pass preloads the ASan
    # runtime into every child, and Wine's loader cannot start with it.
    env.pop("LD_PRELOAD", None)
    try:
        for role in ("checks", "selftest"):
            # A crashing program may exit 0 under Wine: the last line must
            # say so too.  Output is CRLF.
            proc = subprocess.run(["wine", str(exe), role], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=600)
            lines = [line.rstrip("\r") for line in proc.stdout.splitlines() if line.strip()]
            assert proc.returncode == 0 and lines and lines[-1] == "all passed", (
                f"{role}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
            assert not [line for line in lines if line.startswith("FAIL")]
    finally:
        for flag in ("-k", "-w"):
            subprocess.run(["wineserver", flag], env=env, timeout=120,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp_path / "prefix", ignore_errors=True)
