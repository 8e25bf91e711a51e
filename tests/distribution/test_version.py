"""One version, written in pyshm/_version.py, seen the same everywhere."""

from __future__ import annotations

import os
import re
from importlib import metadata

import pytest

import pyshm

DIST = "pyshm-ipc"  # the name on PyPI; the import name is pyshm


def test_version_is_a_release_number():
    assert isinstance(pyshm.__version__, str)
    # PEP 440 public version, the forms we use: 1.2.3, 1.2.3rc1, 1.2.3.dev4
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?",
                        pyshm.__version__), pyshm.__version__


def test_version_matches_installed_distribution():
    try:
        installed = metadata.version(DIST)
    except metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            pytest.fail(f"{DIST} is not installed: CI tests an installed pyshm")
        pytest.skip(f"{DIST} is not installed (pyshm imported from an in-place build)")
    assert pyshm.__version__ == installed
