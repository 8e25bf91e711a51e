"""Reads src/sources.txt, the one list of pyshm's C sources, by build group.

Imported by setup.py (the extension on this platform), tools/winbuild.py
(the Windows extension, cross-built) and tools/release.py (the manylinux
wheels, cross-built), which also share the Linux compiler settings below;
tests/c/Makefile reads the same file with sed.  Standard library only: setup.py loads it
before setuptools has built anything, winbuild.py runs on any Python 3.

Format (documented at the top of src/sources.txt): ``group: path path ...``,
one group a line and each group once, paths relative to src/ without
spaces, ``#`` comments to the end of the line, blank lines skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union


class ManifestError(ValueError):
    """src/sources.txt does not follow its format."""


def read_manifest(path: Union[str, Path], prefix: str = "src") -> Dict[str, List[str]]:
    """The build groups of the manifest at PATH: {group: [PREFIX/path, ...]}.

    Paths come back joined to PREFIX with '/' (setup.py wants them relative
    to the project root, "src/core/ring.c").  A malformed line raises
    ManifestError naming the file and the line."""
    groups: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            group, colon, paths = line.partition(":")
            group = group.strip()
            if not colon or not group or group in groups or not paths.split():
                raise ManifestError(f"{path}:{number}: expected 'group: path ...', "
                                    "each group once")
            groups[group] = [f"{prefix}/{p}" if prefix else p for p in paths.split()]
    return groups


# ---- how the extension is compiled on Linux ------------------------------------------
# Shared by setup.py (the build on the machine it runs on, with its compiler)
# and tools/release.py (the manylinux wheels, cross-built with zig cc), so
# that a release is compiled as a checkout is: the same groups, macros,
# libraries and warnings.  (tools/winbuild.py keeps Windows' own.)

# The groups of the Linux extension (see the top of src/sources.txt), and of
# the portable POSIX build (other systems, or PYSHM_WAIT=fallback on Linux).
LINUX_GROUPS = ("binding", "core", "posix", "linux", "ready_posix", "ready_linux")
FALLBACK_GROUPS = ("binding", "core", "posix", "fallback", "ready_posix", "ready_fallback")
# _GNU_SOURCE: mremap, O_TMPFILE, sched_getcpu, the OFD lock commands;
# posix_fallocate reserves tmpfs pages at create time (no SIGBUS later).
LINUX_MACROS = (("_GNU_SOURCE", None), ("PYSHM_HAVE_POSIX_FALLOCATE", None))
# shm_open is librt's and the robust mutexes libpthread's before glibc 2.34
# (manylinux2014's 2.17 among them).
LINUX_LIBRARIES = ("rt", "pthread")
# The warnings every POSIX build compiles with (gcc and clang alike).
POSIX_CFLAGS = ("-std=c11", "-Wall", "-Wextra", "-Wshadow",
                "-Wno-missing-field-initializers", "-Wno-cast-function-type")
