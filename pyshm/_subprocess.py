"""How pyshm starts Python children that must import this very pyshm.

The demo, the pytest plugin and the test suite start ``sys.executable``
children; each child must import the same build as its parent (a source
tree, an editable install, a wheel, or a test build in a temporary folder),
so the folder that holds the imported package goes first on the child's
``PYTHONPATH``.  This is the one place that knows how.  (The benchmark's
children need none of it: multiprocessing's 'spawn' gives each the
parent's ``sys.path``.)
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

import pyshm


def package_root() -> str:
    """The folder that holds the imported ``pyshm`` package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(pyshm.__file__)))


def child_env(base: Optional[Mapping[str, str]] = None, **extra: str) -> Dict[str, str]:
    """A copy of BASE (default: this process's environment) with EXTRA set and
    this pyshm's folder first on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root(), env.get("PYTHONPATH", "")) if p)
    return env
