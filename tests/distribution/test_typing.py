"""The public surface is typed: mypy --strict on the package and the README's examples."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyshm

PACKAGE = Path(pyshm.__file__).resolve().parent


def mypy(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("mypy is required in CI (it is in the test extras)")
        pytest.skip("mypy is not installed")
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_stub_and_marker_are_shipped():
    assert (PACKAGE / "_pyshm.pyi").is_file()
    assert (PACKAGE / "py.typed").is_file()


def test_stub_matches_extension():
    stub = (PACKAGE / "_pyshm.pyi").read_text()
    from pyshm import _pyshm

    public = {n for n in dir(_pyshm) if not n.startswith("_")}
    declared = set(re.findall(r"^(?:class|def) (\w+)|^(\w+):", stub, re.M))
    declared_names = {a or b for a, b in declared}
    assert public <= declared_names, f"missing from the stub: {public - declared_names}"


def copy_package(tmp_path: Path) -> None:
    """Copy exactly the files that were imported into TMP_PATH/pyshm.  mypy
    runs there: pointed at a package inside site-packages it would take
    site-packages itself for a source root, and it cannot follow an editable
    install's import hook."""
    import shutil

    # copyfile, not copytree's default copy2: on Windows, Python 3.12+'s
    # copy2 calls CopyFile2, which Wine 8 lacks (the process aborts).
    shutil.copytree(PACKAGE, tmp_path / "pyshm", copy_function=shutil.copyfile,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))


def test_package_is_strictly_typed(tmp_path):
    copy_package(tmp_path)
    result = mypy("--cache-dir", str(tmp_path / ".mypy_cache"), "pyshm", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in" in result.stdout


def test_readme_examples_type_check(tmp_path, source_dir):
    readme = source_dir / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    assert blocks, "the README has python examples"
    files = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme_example_{i}.py"
        path.write_text(block)
        files.append(str(path))
    copy_package(tmp_path)
    result = mypy(*files, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_callable_has_a_signature_and_doc():
    """help() and inspect.signature work for everything a REPL user touches."""
    import inspect

    targets = [pyshm.SharedMemory, pyshm.Channel, pyshm.unlink]
    for cls in (pyshm.SharedMemory, pyshm.Channel):
        targets += [getattr(cls, n) for n in dir(cls)
                    if not n.startswith("_") and callable(getattr(cls, n))]
    for target in targets:
        inspect.signature(target)       # raises if the text signature is broken
        assert target.__doc__ and len(target.__doc__.strip()) > 20, target
