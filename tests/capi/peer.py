"""The native program these tests talk to: tests/c/capi_peer.c (its roles
are listed at its top), built from ``pyshm.get_include()`` exactly as a user
builds a program::

    cc capi_peer.c "$INC/pyshm.c" -I "$INC" -pthread -o capi_peer

On Windows (the suite in Windows CPython under Wine) no compiler runs
inside Windows: the host cross-built ``capi_peer.exe`` from a fresh
generation of the same files (``make -C tests/c win32``, which
``tools/winbuild.py test`` runs), found through the ``c_programs`` fixture;
``test_files`` checks that the shipped files are that generation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

import pyshm

PEER_SOURCE = Path(__file__).resolve().parents[1] / "c" / "capi_peer.c"

# Error codes of pyshm.h, as the peer prints them.
EINVAL, ETIMEDOUT, EPROTOCOL, ETOOBIG = -1, -2, -3, -4

_built: Dict[Tuple[str, ...], Path] = {}


def compiler() -> str:
    """The C compiler to build with, or the test skips (fails in CI)."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: a C compiler ({cc})")
        pytest.skip(f"no C compiler ({cc}) to build a native program with")
    return cc


def user_command(cc: str, out: Path, extra: Sequence[str] = ()) -> List[str]:
    """The one command of pyshm.h that builds the peer, with EXTRA flags.
    A fallback build of the extension talks only to a fallback build."""
    inc = pyshm.get_include()
    flags = list(extra)
    if pyshm.CHANNEL_WAIT == "fallback":
        flags.append("-DPYSHM_WAIT_FALLBACK")
    return [cc, *flags, str(PEER_SOURCE), os.path.join(inc, "pyshm.c"), "-I", inc,
            "-pthread", "-o", str(out)]


def build(out_dir: Path, extra: Sequence[str] = ()) -> Path:
    """The peer built with EXTRA flags (once per session and flags)."""
    key = tuple(extra)
    if key not in _built:
        cc = compiler()
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"capi_peer{len(_built)}"
        proc = subprocess.run(user_command(cc, out, extra), capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(user_command(cc, out, extra))}:\n{proc.stderr}"
        _built[key] = out
    return _built[key]


@pytest.fixture(scope="session")
def capi_peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The peer program (warnings are errors, C99)."""
    if sys.platform == "win32":
        programs = request.getfixturevalue("c_programs")
        exe = Path(programs) / "capi_peer.exe"
        if not exe.is_file():
            pytest.fail(f"{exe} was not built (make -C tests/c win32 builds it)")
        return exe
    return build(tmp_path_factory.mktemp("capi"), ["-std=c99", "-Wall", "-Wextra", "-Werror"])


def error_of(line: str) -> Tuple[int, str]:
    """(code, message) of the peer's "error CODE MESSAGE" line."""
    word, code, message = line.rstrip("\r\n").split(" ", 2)
    assert word == "error", line
    return int(code), message
