"""setup.py's environment switches take effect in a tree that was built before,
and what it builds carries no debug information unless PYSHM_DEBUG=1 asks.

setuptools skips compiling an extension that is newer than its sources,
whatever the flags: a second build with another PYSHM_WAIT or PYSHM_SANITIZE
in a tree with an earlier build/ (pip builds in the tree) would silently
ship the first one.  setup.py forces every build; this builds one tree
twice with setuptools' build command (what pip's wheel build runs)
and loads what came out each time.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import List, Tuple

import pytest

from pyshm._subprocess import child_env

# What a build needs from the checkout (what the sdist holds, minus the tests).
BUILD_INPUTS = ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
                "CHANGELOG.md", "src", "pyshm", "tools"]

# Load the extension FILE on its own and print its wait scheme.
PROBE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("pyshm._pyshm", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.CHANNEL_WAIT)
"""


def _build(tree: Path, **switches: str) -> Tuple[str, List[str]]:
    """Build the extension in TREE (build/ kept between calls) with the
    SWITCHES set; the CHANNEL_WAIT of what was built, and its debug
    sections."""
    built = subprocess.run([sys.executable, "setup.py", "-q", "build"], cwd=tree,
                           env=child_env(**switches), capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (ext,) = [p for p in tree.glob("build/lib*/pyshm/_pyshm*")
              if any(p.name.endswith(s) for s in EXTENSION_SUFFIXES)]
    probe = subprocess.run([sys.executable, "-c", PROBE, str(ext)],
                           capture_output=True, text=True, env=child_env())
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.strip(), _debug_sections(ext.read_bytes())


def _debug_sections(elf: bytes) -> List[str]:
    """The .debug* section names of a 64-bit little-endian ELF file."""
    assert elf[:6] == b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF file"
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    entsize, count, strndx = struct.unpack_from("<HHH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(count)]
    names = elf[sections[strndx][4]:][:sections[strndx][5]]
    found = [names[s[0]:names.index(b"\0", s[0])].decode() for s in sections]
    return [n for n in found if n.startswith((".debug", ".zdebug"))]


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the futex/fallback switch exists on Linux only")
def test_second_build_with_other_switches_is_rebuilt(source_dir, tmp_path):
    if shutil.which(os.environ.get("CC", "cc")) is None:
        if os.environ.get("CI"):
            pytest.fail("a C compiler is required in CI")
        pytest.skip("no C compiler")
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in BUILD_INPUTS:
        src = source_dir / name
        if src.is_dir():
            shutil.copytree(src, tree / name,
                            ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
        elif src.exists():
            shutil.copy2(src, tree / name)
    # The first build leaves build/ behind (objects, the linked extension);
    # each next one changes a switch and nothing else.  What gets installed
    # carries no debug information (the interpreter's CFLAGS may say -g);
    # PYSHM_DEBUG=1 is the build that keeps it.  The switches that keep it
    # are cleared for the others: CI's debug and sanitizer passes export them.
    plain = dict(PYSHM_DEBUG="", PYSHM_COVERAGE="", PYSHM_SANITIZE="")
    assert _build(tree, PYSHM_WAIT="native", **plain) == ("futex", [])
    assert _build(tree, PYSHM_WAIT="fallback", **plain) == ("fallback", [])
    wait, debug = _build(tree, PYSHM_WAIT="native", **dict(plain, PYSHM_DEBUG="1"))
    assert wait == "futex" and ".debug_info" in debug


def test_a_build_carries_the_c_api(source_dir, tmp_path):
    """setup.py generates pyshm/include/ in a tree that has none (a fresh
    clone: the folder is ignored by git), and the build -- what a wheel is
    made of -- carries both files."""
    # setup.py is run directly, with this environment's setuptools: one
    # older than pyproject.toml's build requirement ignores [tool.setuptools]
    # (the package data among it), which pip's isolated build never meets.
    pytest.importorskip("setuptools", minversion="64",
                        reason="pyproject.toml's build requires setuptools >= 64")
    tree = tmp_path / "tree"
    tree.mkdir()
    # Copied byte by byte: shutil's copies use CopyFile2 on Windows, which
    # Wine 8 lacks (WINDOWS-TESTING.md).
    for name in BUILD_INPUTS:
        src = source_dir / name
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(source_dir)
            if (path.suffix in (".so", ".pyd", ".pyc") or "__pycache__" in rel.parts
                    or rel.parts[:2] == ("pyshm", "include")):
                continue
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(path.read_bytes())
    assert not (tree / "pyshm" / "include").exists()
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_py"], cwd=tree,
                           env=child_env(), capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    for name in ("pyshm.h", "pyshm.c"):
        made = tree / "pyshm" / "include" / name
        (shipped,) = tree.glob(f"build/lib*/pyshm/include/{name}")
        assert made.is_file() and shipped.read_bytes() == made.read_bytes()
