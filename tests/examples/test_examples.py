"""The examples/ folder works as examples/README.md says: the native device
(examples/device.c) builds from pyshm.get_include() with the one command
given there, and its Python harness (examples/test_device.py, a pytest file
of its own) passes against it, run as a user runs it: ``pytest
examples/test_device.py`` in a fresh interpreter.

On Windows (the suite in Windows CPython under Wine) no compiler runs
inside Windows: the host cross-built device.exe with mingw-w64 from the
same files (``make -C tests/c win32``, run by ``tools/winbuild.py test``),
found through the ``c_programs`` fixture, and the harness runs in Windows
Python against it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pyshm
from pyshm._subprocess import child_env

# examples/test_device.py's tests, each of which must pass (none skipped).
HARNESS_TESTS = 11


@pytest.fixture(scope="module")
def device_program(request: pytest.FixtureRequest, source_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    if sys.platform == "win32":
        exe = Path(request.getfixturevalue("c_programs")) / "device.exe"
        if not exe.is_file():
            pytest.fail(f"{exe} was not built (make -C tests/c win32 builds it)")
        return exe
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: a C compiler ({cc})")
        pytest.skip(f"no C compiler ({cc}) to build the example with")
    inc = pyshm.get_include()
    out = tmp_path_factory.mktemp("examples") / "device"
    # examples/README.md's command, with warnings as errors; a fallback
    # build of the extension talks only to a fallback build.
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    if pyshm.CHANNEL_WAIT == "fallback":
        flags.append("-DPYSHM_WAIT_FALLBACK")
    cmd = [cc, *flags, str(source_dir / "examples" / "device.c"),
           os.path.join(inc, "pyshm.c"), "-I", inc, "-pthread", "-o", str(out)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(cmd)}:\n{built.stderr}"
    return out


def test_the_readme_gives_the_build_command(source_dir: Path):
    text = (source_dir / "examples" / "README.md").read_text(encoding="utf-8")
    assert 'cc device.c "$INC/pyshm.c" -I "$INC" -pthread -o device' in text
    assert 'x86_64-w64-mingw32-gcc device.c "$INC/pyshm.c" -I "$INC" -o device.exe' in text
    assert "pytest examples/test_device.py" in text


def test_device_harness_passes(device_program: Path, source_dir: Path, tmp_path: Path):
    """The harness in a fresh interpreter, from an empty folder (so that it
    imports the installed pyshm, as a user's would)."""
    harness = source_dir / "examples" / "test_device.py"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(harness)],
        cwd=tmp_path, env=child_env(DEVICE_PROGRAM=str(device_program)),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    assert re.match(rf"^{HARNESS_TESTS} passed in ", summary), out
