"""The public surface is typed: mypy --strict on the package, the examples of
the README and docs/, and a user's script after exactly the README's install
command."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyshm

from .documents import PYTHON_KINDS, all_examples, examples_in

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


def numpy_may_be_missing(folder: Path) -> None:
    """Where NumPy is not installed (under Wine it never is), mypy may not
    find it: the bench and the README import it where they use it."""
    if importlib.util.find_spec("numpy") is None:
        (folder / "mypy.ini").write_text("[mypy]\n\n[mypy-numpy,numpy.*]\n"
                                         "ignore_missing_imports = True\n")


@pytest.mark.parametrize("platform", [None, "win32", "linux"])
def test_package_is_strictly_typed(tmp_path, platform):
    """For the running platform, and for the other: Linux-only code (/proc,
    os.major) must be behind a platform test the checker understands, or a
    Windows user's mypy reports it."""
    copy_package(tmp_path)
    numpy_may_be_missing(tmp_path)
    chosen = ["--platform", platform] if platform else []
    result = mypy("--cache-dir", str(tmp_path / ".mypy_cache"), *chosen, "pyshm", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in" in result.stdout


def test_doc_examples_type_check(tmp_path, source_dir):
    """Every Python example of the README and of docs/ (what a reader
    copies) passes mypy --strict's checks of calls into pyshm."""
    blocks = [e for e in all_examples(source_dir) if e.kind in PYTHON_KINDS]
    assert blocks, "the documents have python examples"
    files = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"doc_example_{i}.py"
        path.write_text(f"# {block}\n{block.text}")
        files.append(str(path))
    copy_package(tmp_path)
    numpy_may_be_missing(tmp_path)
    result = mypy(*files, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_segment_is_a_buffer_for_type_checkers(tmp_path, numpy):
    """PEP 688: the stub's __buffer__ makes a SharedMemory a
    collections.abc.Buffer, which is what NumPy's frombuffer takes from Python
    3.12 on (its stubs for older versions list concrete types only, so the
    README passes shm.buf, a memoryview, which checks everywhere)."""
    (tmp_path / "user.py").write_text(
        "from collections.abc import Buffer\n"
        "import numpy\n"
        "import pyshm\n"
        "with pyshm.SharedMemory(create=True, size=64) as shm:\n"
        "    as_buffer: Buffer = shm\n"
        "    a = numpy.frombuffer(shm, dtype=numpy.uint8)\n"
        "    b = numpy.frombuffer(shm.buf, dtype=numpy.uint8)\n"
        "    reveal_type(a)\n")
    copy_package(tmp_path)
    result = mypy("--python-version", "3.12", "user.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ndarray" in result.stdout and "unsignedinteger" in result.stdout, result.stdout


def test_every_public_callable_has_a_signature_and_doc():
    """help() and inspect.signature work for everything a REPL user touches."""
    import inspect

    import pyshm.asyncio

    targets = [pyshm.SharedMemory, pyshm.Channel, pyshm.Slot, pyshm.asyncio.Channel,
               pyshm.asyncio.Slot, pyshm.unlink, pyshm.wait]
    for cls in (pyshm.SharedMemory, pyshm.Channel, pyshm.Slot, pyshm.asyncio.Channel,
                pyshm.asyncio.Slot):
        targets += [getattr(cls, n) for n in dir(cls)
                    if not n.startswith("_") and callable(getattr(cls, n))]
    for target in targets:
        inspect.signature(target)       # raises if the text signature is broken
        assert target.__doc__ and len(target.__doc__.strip()) > 20, target


# ---- after the README's install command -------------------------------------------

# A user's script: every line must type-check against pyshm's stubs, and the
# last one shows that mypy sees the real types, not Any.
USER_SCRIPT = """\
import pyshm

with pyshm.SharedMemory(create=True, size=64) as shm:
    data: bytes = shm.read(4)
    view: memoryview = memoryview(shm)
    count: int = len(shm)
    view.release()
    with pyshm.Channel(create=True, capacity=4096) as chan:
        chan.send(data, timeout=1.0)
        queued: int = chan.messages
    chan.unlink()
    shm.unlink()
reveal_type(shm.read)
"""


def readme_install_command(readme: Path) -> str:
    """The install of the README's first set-up command (install, then run
    the demo): the editable install of the checkout."""
    blocks = [e.text for e in examples_in(readme, readme.parent) if not e.lang]
    first = next(b for b in blocks if b.startswith("pip install -e"))
    command = first.split("&&")[0].strip()
    assert command == "pip install -e .", command
    return command


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32",
                    reason="pip install -e . compiles the extension: the Windows CPython "
                           "under Wine has no C compiler (its wheel is cross-built by "
                           "tools/winbuild.py)")
def test_readme_install_gives_type_checkers_the_package(tmp_path, source_dir):
    """`pip install -e .` as the README says, in a fresh venv on a copy of the
    checkout; then mypy --strict, pointed at that venv's interpreter, must find
    pyshm's types for a script outside the checkout.  (setuptools' default
    editable install hides the package behind an import hook that mypy cannot
    follow; pyproject.toml's package-dir makes it a plain path entry.)  The
    copy keeps this run's own build in place."""
    import shutil
    import venv

    command = readme_install_command(source_dir / "README.md")
    checkout = tmp_path / "checkout"
    shutil.copytree(source_dir, checkout, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.pyd", ".mypy_cache",
        ".pytest_cache", "tests"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    installed = subprocess.run([str(python), "-m", *command.split()], cwd=checkout, env=env,
                               capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    user = tmp_path / "user"
    user.mkdir()
    (user / "script.py").write_text(USER_SCRIPT)
    result = mypy("--python-executable", str(python), "--cache-dir", str(user / ".cache"),
                  "script.py", cwd=user)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r'Revealed type is "def \(size: (builtins\.)?int =, offset: '
                     r'(builtins\.)?int =\) -> (builtins\.)?bytes"', out), out
