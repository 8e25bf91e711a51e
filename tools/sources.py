"""Reads src/sources.txt, the one list of pyshm's C sources, by build group.

Imported by setup.py (the extension on this platform) and by
tools/winbuild.py (the Windows extension, cross-built); tests/c/Makefile
reads the same file with sed.  Standard library only: setup.py loads it
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
