"""Inspect what .ci/package.sh built and installed (run by it; stdlib + packaging).

    check_dist.py wheel WHEEL CHECKOUT       the wheel holds what a user needs, nothing else
    check_dist.py sdist SDIST CHECKOUT       the sdist holds everything needed to build and test
    check_dist.py installed CHECKOUT         the pyshm this Python imports is the installed one

CHECKOUT is the clean copy of the source tree the distributions were built
from.  What must ship is derived from its files by pattern (every file under
src/ and tests/, every .py/.pyi/py.typed in pyshm/), so files added later are
checked without an edit here; and src/sources.txt must list every .c and .h
of src/.  Each failure is printed; the exit status is 1 if there was any.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path

DIST = "pyshm-ipc"
PACKAGE = "pyshm"
EXTENSION = re.compile(r"pyshm/_pyshm\.[^/]*(\.so|\.pyd)$")
# Build output that must never ship in either distribution.
BINARY = re.compile(r"\.(so|pyd|o|obj|exe|dll|pyc|pyo)$|(^|/)__pycache__/")

problems: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def files_under(root: Path, folder: str) -> set[str]:
    """Relative paths of the files under ROOT/FOLDER."""
    base = root / folder
    return {p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file()}


def package_files(checkout: Path) -> set[str]:
    """The files of the pyshm package that a user's install must contain."""
    return {f for f in files_under(checkout, PACKAGE)
            if f.endswith((".py", ".pyi")) or f.endswith("/py.typed")}


def source_version(checkout: Path) -> str:
    text = (checkout / PACKAGE / "_version.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert found, "no __version__ in pyshm/_version.py"
    return found.group(1)


def check_wheel(wheel: Path, checkout: Path) -> None:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    version = source_version(checkout)
    name, wversion, _build, tags = parse_wheel_filename(wheel.name)
    check(name == DIST, f"wheel name {name!r}, expected {DIST!r}")
    check(str(wversion) == version, f"wheel version {wversion}, pyshm/_version.py says {version}")
    check(all(t.platform != "any" for t in tags), f"wheel is not platform-specific: {wheel.name}")
    check(bool(set(tags) & set(sys_tags())),
          f"wheel tags {sorted(map(str, tags))} do not fit this interpreter and platform")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"{DIST.replace('-', '_')}-{version}.dist-info"
        metadata = zf.read(f"{dist_info}/METADATA").decode()

    # What a user needs: the package as in the source tree, stubs and
    # py.typed included when they exist there, and the compiled extension.
    for needed in sorted(package_files(checkout)):
        check(needed in names, f"wheel lacks {needed}")
    for needed in ("__init__.py", "__main__.py", "_version.py"):
        check(f"{PACKAGE}/{needed}" in names, f"wheel lacks {PACKAGE}/{needed}")
    extensions = [n for n in names if EXTENSION.match(n)]
    check(len(extensions) == 1, f"wheel should hold one pyshm/_pyshm extension, has {extensions}")
    check(any(n.startswith(f"{dist_info}/") and n.endswith("LICENSE") for n in names),
          "wheel lacks LICENSE in its .dist-info")

    # ... and nothing else: no sources, tests, headers or build leftovers.
    for n in sorted(names):
        top = n.split("/", 1)[0]
        check(top in (PACKAGE, dist_info), f"wheel holds {n} (outside {PACKAGE}/ and .dist-info)")
        check(not n.endswith((".c", ".h")), f"wheel holds C source {n}")
        check(not BINARY.search(n) or n in extensions, f"wheel holds build output {n}")

    fields = metadata.split("\n\n", 1)[0].splitlines()
    for field in (f"Name: {DIST}", f"Version: {version}", "License: MIT",
                  "Provides-Extra: test", "Provides-Extra: bench", "Provides-Extra: dev",
                  "Classifier: Typing :: Typed", "Description-Content-Type: text/markdown"):
        check(field in fields, f"wheel METADATA lacks {field!r}")
    check(any(f.startswith("Requires-Python: ") for f in fields), "wheel METADATA lacks Requires-Python")
    print(f"wheel {wheel.name}: {len(names)} files, extension {extensions}")


def check_sdist(sdist: Path, checkout: Path) -> None:
    version = source_version(checkout)
    top = f"{DIST.replace('-', '_')}-{version}"
    check(sdist.name == f"{top}.tar.gz", f"sdist named {sdist.name}, expected {top}.tar.gz")
    with tarfile.open(sdist) as tf:
        members = [m.name for m in tf.getmembers() if m.isfile()]
    names = {m.split("/", 1)[1] for m in members if m.startswith(f"{top}/")}
    check(len(names) == len(members), f"sdist has files outside {top}/")

    needed = {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "setup.py",
              "MANIFEST.in", "PKG-INFO"}
    # Every header and C file of the extension and the C test programs, every
    # test and its helpers, the whole package: all that the checkout has.
    for folder in ("src", "tests", PACKAGE):
        needed |= {f for f in files_under(checkout, folder) if not BINARY.search(f)}
    for f in sorted(needed - names):
        check(False, f"sdist lacks {f}")
    for f in sorted(names):
        check(not BINARY.search(f), f"sdist holds build output {f}")
        check(not f.startswith("tests/c/build/"), f"sdist holds test build output {f}")
    check_manifest(checkout)
    print(f"sdist {sdist.name}: {len(names)} files")


def check_manifest(checkout: Path) -> None:
    """src/sources.txt, the one list of C sources, names every .c and .h
    under src/ exactly once, and nothing that is not there.  (Format: see
    the top of that file; setup.py and tests/c/Makefile read it.)"""
    listed: list[str] = []
    text = (checkout / "src" / "sources.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            listed += line.partition(":")[2].split()
    present = {f.split("/", 1)[1] for f in files_under(checkout, "src")
               if f.endswith((".c", ".h"))}
    for f in sorted(present - set(listed)):
        check(False, f"src/sources.txt does not list src/{f}")
    for f in sorted(set(listed) - present):
        check(False, f"src/sources.txt lists src/{f}, which does not exist")
    for f in sorted({f for f in listed if listed.count(f) > 1}):
        check(False, f"src/sources.txt lists src/{f} more than once")


def check_installed(checkout: Path) -> None:
    """Run from a folder outside the checkout, with the Python under test."""
    from importlib import metadata

    import pyshm
    import pyshm._pyshm

    where = Path(pyshm.__file__).resolve().parent
    check(f"{os.sep}site-packages{os.sep}" in str(where),
          f"pyshm imported from {where}, not from site-packages")
    check(Path(pyshm._pyshm.__file__).resolve().parent == where,
          f"extension imported from {pyshm._pyshm.__file__}, package from {where}")
    check(not str(where).startswith(str(checkout.resolve())), f"pyshm imported from the checkout: {where}")
    installed = metadata.version(DIST)
    check(pyshm.__version__ == installed == source_version(checkout),
          f"versions differ: pyshm.__version__ {pyshm.__version__}, installed {installed}, "
          f"source {source_version(checkout)}")
    for f in sorted(package_files(checkout)):
        check((where.parent / f).is_file(), f"installed package lacks {f}")
    print(f"installed: pyshm {pyshm.__version__} from {where}")


def main(argv: list[str]) -> int:
    what = argv[0]
    if what == "wheel":
        check_wheel(Path(argv[1]), Path(argv[2]))
    elif what == "sdist":
        check_sdist(Path(argv[1]), Path(argv[2]))
    elif what == "installed":
        check_installed(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"check_dist {what}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
