"""The C API's files as shipped: pyshm.get_include() holds pyshm.h and pyshm.c,
they are a fresh generation from src/ (never a copy kept by hand), the header
is plain C99 (and C++) declaring only pyshm_/PYSHM_ names, pyshm.c defines no
other global symbol, and a program builds from them with one command on
Linux, in the fallback flavour, and for Windows with mingw-w64."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pyshm

from .peer import PEER_SOURCE, compiler, user_command

INC = Path(pyshm.get_include())
posix_host = pytest.mark.skipif(sys.platform == "win32",
                                reason="compilers run on the Linux host, not inside Windows")


@pytest.fixture(scope="module")
def amalgamate(source_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyshm_tools_amalgamate",
                                                  source_dir / "tools" / "amalgamate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_get_include_holds_both_files():
    assert INC.is_dir() and INC.name == "include"
    assert INC.parent == Path(pyshm.__file__).resolve().parent
    assert (INC / "pyshm.h").is_file() and (INC / "pyshm.c").is_file()


def test_shipped_files_are_a_fresh_generation(amalgamate, source_dir):
    fresh = amalgamate.generate(source_dir)
    for name, text in fresh.items():
        assert (INC / name).read_bytes() == text.encode("utf-8"), (
            f"{INC / name} differs from tools/amalgamate.py's output for {source_dir}: "
            "rebuild (pip install -e .)")


def test_generation_follows_the_manifest(amalgamate, source_dir):
    """Every C file of the groups pyshm.c takes is in it, under its branch;
    the binding is not."""
    text = amalgamate.generate(source_dir)["pyshm.c"]
    groups = amalgamate._sources_module().read_manifest(source_dir / "src" / "sources.txt",
                                                        prefix="")
    for group in ("core", "capi", "posix", "linux", "fallback", "win32"):
        for path in groups[group]:
            assert f"/* ==== begin src/{path} ==== */" in text, path
    for path in groups["binding"]:
        assert f"src/{path}" not in text
    assert not re.search(r'#\s*include\s*[<"]Python\.h', text)


def test_header_numbers(amalgamate):
    header = (INC / "pyshm.h").read_text()
    assert f'#define PYSHM_VERSION           "{pyshm.__version__}"' in header
    assert (f"#define PYSHM_VERSION_NUMBER    {amalgamate.version_number(pyshm.__version__)}"
            in header)
    assert f"#define PYSHM_NAME_MAX          {pyshm.NAME_MAX}" in header
    assert amalgamate.version_number("1.2.3") == 1002003
    assert amalgamate.version_number("0.10.0.dev1") == 10000


def test_header_declares_only_pyshm_names():
    """Every name the header puts in a program's namespace -- macros, types,
    struct tags, enum constants, functions -- is pyshm_ or PYSHM_.
    (Parameter and member names live in their own scopes.)"""
    text = (INC / "pyshm.h").read_text()
    code = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)     # comments
    declared = set(re.findall(r"^\s*#\s*define\s+(\w+)", code, re.M))
    declared |= set(re.findall(r"\bstruct\s+(\w+)", code))
    declared |= set(re.findall(r"\}\s*(\w+)\s*;", code))                   # typedef'd structs
    declared |= set(re.findall(r"\btypedef\s+struct\s+\w+\s+(\w+)\s*;", code))
    for body in re.findall(r"\benum\s*\{(.*?)\}", code, re.S):
        declared |= set(re.findall(r"(\w+)\s*=", body))
    declared |= set(re.findall(r"\b(\w+)\s*\(", code)) - {"defined", "if", "sizeof"}
    assert {"pyshm_slot_open", "PYSHM_EPROTOCOL", "pyshm_options", "pyshm_error",
            "PYSHM_VERSION_NUMBER", "pyshm_version_number"} <= declared
    foreign = sorted(n for n in declared if not n.startswith(("pyshm_", "PYSHM_")))
    assert foreign == [], f"pyshm.h declares names outside pyshm_/PYSHM_: {foreign}"
    assert 'extern "C" {' in text


@posix_host
def test_header_is_c99_without_extensions(tmp_path):
    cc = compiler()
    probe = tmp_path / "probe.c"
    probe.write_text('#include "pyshm.h"\nint main(void) { return PYSHM_EINVAL + 1; }\n')
    for std in ("c99", "c11"):
        proc = subprocess.run([cc, f"-std={std}", "-pedantic-errors", "-Wall", "-Wextra",
                               "-Werror", "-fsyntax-only", "-I", str(INC), str(probe)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@posix_host
def test_header_works_from_cplusplus(tmp_path):
    """extern "C": a C++ program links against pyshm.c compiled as C."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: a C++ compiler ({cxx})")
        pytest.skip(f"no C++ compiler ({cxx})")
    cc = compiler()
    obj = tmp_path / "pyshm.o"
    proc = subprocess.run([cc, "-c", str(INC / "pyshm.c"), "-I", str(INC), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    app = tmp_path / "app.cpp"
    app.write_text('#include "pyshm.h"\n#include <cstdio>\n'
                   "int main() { pyshm_error err; "
                   'pyshm_slot *s = pyshm_slot_open("", PYSHM_OPEN, 0, &err); '
                   'std::printf("%d %lu\\n", s == 0 ? err.code : 0, pyshm_version_number()); '
                   "return 0; }\n")
    exe = tmp_path / "app"
    proc = subprocess.run([cxx, "-std=c++11", "-pedantic-errors", "-Wall", "-Werror",
                           str(app), str(obj), "-I", str(INC), "-pthread", "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == -1 and int(out[1]) > 0


def global_symbols(nm: str, obj: Path) -> list:
    out = subprocess.run([nm, "-g", "--defined-only", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


@posix_host
@pytest.mark.parametrize("flavour", ["native", "fallback"])
def test_pyshm_c_defines_only_pyshm_symbols(tmp_path, flavour):
    cc = compiler()
    if shutil.which("nm") is None:
        pytest.skip("no nm")
    obj = tmp_path / "pyshm.o"
    flags = ["-DPYSHM_WAIT_FALLBACK"] if flavour == "fallback" else []
    proc = subprocess.run([cc, "-c", "-O2", *flags, str(INC / "pyshm.c"), "-I", str(INC),
                           "-o", str(obj)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    symbols = global_symbols("nm", obj)
    assert "pyshm_slot_open" in symbols and "pyshm__ring_send" in symbols
    assert [s for s in symbols if not s.startswith("pyshm_")] == []


@posix_host
@pytest.mark.parametrize("std", ["c99", "c11", "gnu11"])
@pytest.mark.parametrize("flavour", ["native", "fallback"])
def test_a_program_builds_with_one_command(tmp_path, std, flavour):
    """The peer, built as pyshm.h says, with warnings as errors: its own
    checks of every bad input pass."""
    cc = compiler()
    out = tmp_path / "peer"
    extra = [f"-std={std}", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    if flavour == "fallback":
        extra.append("-DPYSHM_WAIT_FALLBACK")
    cmd = user_command(cc, out, extra)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr}"
    run = subprocess.run([str(out), "checks"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == "all passed", run.stdout


@posix_host
def test_mingw_builds_the_same_files(tmp_path, windows_toolchain):
    """x86_64-w64-mingw32-gcc app.c "$INC/pyshm.c" -I "$INC" -o app.exe, with
    warnings as errors; only pyshm_ symbols, and nothing but KERNEL32 and
    the C runtime imported.  (tests/capi/test_wine.py runs it.)"""
    windows_toolchain("x86_64-w64-mingw32-gcc", "x86_64-w64-mingw32-nm",
                      "x86_64-w64-mingw32-objdump")
    exe = tmp_path / "capi_peer.exe"
    proc = subprocess.run(["x86_64-w64-mingw32-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror",
                           "-pedantic", str(PEER_SOURCE), str(INC / "pyshm.c"), "-I", str(INC),
                           "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    obj = tmp_path / "pyshm.obj"
    subprocess.run(["x86_64-w64-mingw32-gcc", "-c", str(INC / "pyshm.c"), "-I", str(INC),
                    "-o", str(obj)], check=True)
    symbols = global_symbols("x86_64-w64-mingw32-nm", obj)
    assert "pyshm_channel_recv" in symbols
    assert [s for s in symbols if not s.startswith("pyshm_")] == []
    dump = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", str(exe)], capture_output=True,
                          text=True, check=True).stdout
    dlls = {d.lower() for d in re.findall(r"DLL Name: (\S+)", dump)}
    assert dlls <= {"kernel32.dll", "msvcrt.dll"}, dlls
