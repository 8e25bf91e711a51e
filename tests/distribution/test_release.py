"""tools/release.py: its check passes a release wheel and refuses what a
release must not be.

A real manylinux wheel is built once (`release.py wheel 3.11 x86_64`: zig
cc for glibc 2.17, tagged by auditwheel), and a debug build of it
(PYSHM_DEBUG=1).  Each test puts wheels in a folder of its own, with a
SHA256SUMS, and runs `release.py check` on it: the release wheel passes;
a tag written by hand (on this extension, or on one that the host's gcc
linked against a newer glibc) is refused because auditwheel finds the
extension needs more than the tag says; so are a linux_ tag that auditwheel
never saw, file name tags that are not the WHEEL file's, an extension of
another architecture, an extension needing a symbol nothing defines (a
source left out of the link), debug information, a RECORD that lies, and a
SHA256SUMS that does not match the folder.  The whole release (every
CPython and architecture, the Windows wheels, the sdist) is built by CI
(.ci/run, step "release").

The tools (zig, auditwheel, twine...) come from PyPI into release.py's
cache on first use.  Linux only; release.py needs Python 3.11+.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="tools/release.py builds and checks manylinux wheels on Linux"),
    pytest.mark.skipif(sys.version_info < (3, 11),
                       reason="tools/release.py reads pyproject.toml with tomllib (3.11+)"),
]

VERSION = "3.11"     # the pyenv CPython of the machine image the wheel is built for
TAG = "cp311"
RELEASE_TAGS = "manylinux2014_x86_64.manylinux_2_17_x86_64"
EXTENSION = "pyshm/_pyshm.cpython-311-x86_64-linux-gnu.so"


def release(source_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(source_dir / "tools" / "release.py"), *args],
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **env})


def build(source_dir: Path, out: Path, **env: str) -> Path:
    proc = release(source_dir, "wheel", VERSION, "x86_64", str(out), **env)
    if proc.returncode != 0 and "no CPython 3.11 under" in proc.stderr:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: pyenv's CPython {VERSION}\n{proc.stderr}")
        pytest.skip(f"no pyenv CPython {VERSION} to build a release wheel for")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = Path(proc.stdout.splitlines()[-1])
    assert wheel.parent == out.resolve() and wheel.is_file()
    return wheel


@pytest.fixture(scope="module")
def good_wheel(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(source_dir, tmp_path_factory.mktemp("release"), PYSHM_DEBUG="0")


@pytest.fixture(scope="module")
def debug_wheel(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(source_dir, tmp_path_factory.mktemp("debug"), PYSHM_DEBUG="1")


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def rewrite(wheel: Path, dest: Path, replace: Optional[Dict[str, Optional[bytes]]] = None,
            tags: Optional[str] = None, honest_record: bool = True) -> Path:
    """A copy of WHEEL in DEST with members replaced, its platform tags set
    to TAGS (file name and WHEEL file alike), and RECORD rewritten to match
    (unless not HONEST_RECORD)."""
    replace = dict(replace or {})
    name = wheel.name
    with zipfile.ZipFile(wheel) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    wheel_file = next(n for n in members if n.endswith(".dist-info/WHEEL"))
    record = next(n for n in members if n.endswith(".dist-info/RECORD"))
    if tags is not None:
        name = f"pyshm_ipc-{name.split('-')[1]}-{TAG}-{TAG}-{tags}.whl"
        text = "".join(line + "\n" for line in members[wheel_file].decode().splitlines()
                       if not line.startswith("Tag:"))
        text += "".join(f"Tag: {TAG}-{TAG}-{p}\n" for p in tags.split("."))
        replace[wheel_file] = text.encode()
    members.update(replace)
    members = {n: d for n, d in members.items() if d is not None}      # None: removed
    if honest_record:
        buf = io.StringIO()
        rows = [(n, record_hash(d), str(len(d))) for n, d in members.items()
                if n != record and not n.endswith("/")]     # (auditwheel writes folders)
        csv.writer(buf, lineterminator="\n").writerows(rows + [(record, "", "")])
        members[record] = buf.getvalue().encode()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / name
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return out


def write_sums(folder: Path) -> None:
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(folder.iterdir()) if p.name != "SHA256SUMS"))


def check(source_dir: Path, folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return release(source_dir, "check", str(folder), *args, **env)


def refused(proc: subprocess.CompletedProcess, *patterns: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for pattern in patterns:
        assert re.search(pattern, proc.stderr), f"{pattern!r} not in:\n{proc.stderr}"


def single(folder: Path, wheel: Path) -> Path:
    """FOLDER holding WHEEL alone, with its SHA256SUMS."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(wheel, folder / wheel.name)
    write_sums(folder)
    return folder


def with_extension(wheel: Path, tmp_path: Path, compiler, source: str) -> Path:
    """A folder (with its SHA256SUMS) holding WHEEL with its extension
    replaced by SOURCE, compiled by the host's compiler as a stripped
    shared library."""
    c = tmp_path / "ext.c"
    c.write_text(source)
    so = tmp_path / "ext.so"
    subprocess.run([compiler.cc, "-shared", "-fPIC", "-g0", "-s", "-o", str(so), str(c)],
                   check=True)
    folder = tmp_path / "dist"
    rewrite(wheel, folder, replace={EXTENSION: so.read_bytes()})
    write_sums(folder)
    return folder


def test_a_release_wheel_passes(source_dir, good_wheel, tmp_path):
    assert good_wheel.name.endswith(f"-{TAG}-{TAG}-{RELEASE_TAGS}.whl")
    folder = single(tmp_path / "dist", good_wheel)
    proc = check(source_dir, folder, "--partial")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "auditwheel: consistent with manylinux_2_17_x86_64" in proc.stdout
    # The sums are the format sha256sum reads.
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=folder, check=True)


def test_a_tag_written_by_hand_is_refused(source_dir, good_wheel, tmp_path):
    # This extension calls clock_gettime@GLIBC_2.17: manylinux1 (glibc 2.5)
    # written on it, consistently in the file name, WHEEL and RECORD, is a
    # claim auditwheel disproves.
    folder = tmp_path / "dist"
    rewrite(good_wheel, folder, tags="manylinux1_x86_64.manylinux_2_5_x86_64")
    write_sums(folder)
    refused(check(source_dir, folder, "--partial"),
            r"tagged manylinux_2_5_x86_64, but auditwheel says it is consistent with "
            r"manylinux_2_17_x86_64 at best")


def test_a_host_build_tagged_manylinux_is_refused(source_dir, good_wheel, tmp_path, native_compiler):
    # What `pip wheel .` on this machine gives, tagged by hand: the host's
    # gcc links against the host's glibc; reallocarray arrived in 2.26.
    folder = with_extension(good_wheel, tmp_path, native_compiler,
                            "#define _GNU_SOURCE\n#include <stdlib.h>\n"
                            "void *newer(size_t n) { return reallocarray(NULL, n, 8); }\n")
    refused(check(source_dir, folder, "--partial"),
            r"tagged manylinux_2_17_x86_64, but auditwheel says it is consistent with "
            r"manylinux_2_(2[6-9]|[3-9]\d)_x86_64 at best")


def test_an_extension_missing_a_source_is_refused(source_dir, good_wheel, tmp_path,
                                                  native_compiler):
    # A source group left out of the link (as the merge of the readiness
    # groups once did): the library links and loads, `import` fails on the
    # first symbol nothing defines.  CPython's symbols (Py*) and glibc's
    # (versioned) are resolved at load; this one is neither.
    folder = with_extension(good_wheel, tmp_path, native_compiler,
                            "int sync_thr_open(int);\n"
                            "int PyInit__pyshm(void) { return sync_thr_open(0); }\n")
    refused(check(source_dir, folder, "--partial"),
            r"needs symbols that neither glibc nor CPython defines .*: sync_thr_open$")


def test_a_wheel_auditwheel_never_tagged_is_refused(source_dir, good_wheel, tmp_path):
    folder = tmp_path / "dist"
    rewrite(good_wheel, folder, tags="linux_x86_64")
    write_sums(folder)
    refused(check(source_dir, folder, "--partial"),
            r"platform tags \['linux_x86_64'\] are not one architecture's manylinux tags")


def test_file_name_tags_must_be_the_wheel_files(source_dir, good_wheel, tmp_path):
    folder = tmp_path / "dist"
    folder.mkdir()
    shutil.copy(good_wheel, folder / good_wheel.name.replace(RELEASE_TAGS, "manylinux_2_5_x86_64"))
    write_sums(folder)
    refused(check(source_dir, folder, "--partial"),
            r"the file name's tags \['cp311-cp311-manylinux_2_5_x86_64'\] are not its WHEEL's")


def test_an_extension_of_another_architecture_is_refused(source_dir, good_wheel, tmp_path):
    folder = tmp_path / "dist"
    rewrite(good_wheel, folder, tags="manylinux2014_aarch64.manylinux_2_17_aarch64",
            replace={EXTENSION: None, EXTENSION.replace("x86_64", "aarch64"):
                     zipfile.ZipFile(good_wheel).read(EXTENSION)})
    write_sums(folder)
    refused(check(source_dir, folder, "--partial"), r"is built for ELF machine 62, not aarch64")


def test_debug_information_is_refused_and_the_debug_build_has_it(source_dir, debug_wheel, tmp_path):
    folder = single(tmp_path / "dist", debug_wheel)
    refused(check(source_dir, folder, "--partial", PYSHM_DEBUG="0"),
            r"carries debug information \([^)]*\.debug_info")
    # The switch for a debug release: the same check then requires it.
    proc = check(source_dir, folder, "--partial", PYSHM_DEBUG="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_record_that_lies_is_refused(source_dir, good_wheel, tmp_path):
    folder = tmp_path / "dist"
    rewrite(good_wheel, folder, replace={"pyshm/py.typed": b"changed\n"}, honest_record=False)
    write_sums(folder)
    refused(check(source_dir, folder, "--partial"),
            r"RECORD's hash or size of pyshm/py\.typed is wrong")


@pytest.mark.parametrize("damage", ["hash", "unlisted", "missing"])
def test_sha256sums_must_match_the_folder(source_dir, good_wheel, tmp_path, damage):
    folder = single(tmp_path / "dist", good_wheel)
    sums = folder / "SHA256SUMS"
    if damage == "hash":
        text = sums.read_text()
        sums.write_text(("0" if text[0] != "0" else "1") + text[1:])
        pattern = r"its sha256 is not the one SHA256SUMS gives"
    elif damage == "unlisted":
        (folder / "notes.txt").write_text("not part of the release\n")
        pattern = r"SHA256SUMS does not list notes\.txt"
    else:
        sums.write_text(sums.read_text() + f"{'ab' * 32}  gone.whl\n")
        pattern = r"SHA256SUMS lists gone\.whl, which is not in"
    refused(check(source_dir, folder, "--partial"), pattern)


def test_a_release_lacking_files_is_refused(source_dir, good_wheel, tmp_path):
    # Without --partial the set is checked: this part of a release (3.11,
    # x86_64, no Windows wheels) also needs its sdist.
    folder = single(tmp_path / "dist", good_wheel)
    refused(check(source_dir, folder, "--python", VERSION, "--arch", "x86_64", "--no-windows"),
            r"lacks pyshm_ipc-[^ ]+\.tar\.gz")
