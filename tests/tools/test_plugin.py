"""The pytest plugin (entry point pytest11) and its fixtures."""

from __future__ import annotations

import os

import pytest

import pyshm

pytest_plugins = ["pytester"]


def test_plugin_is_registered(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("pyshm"), \
        "pyshm's pytest11 entry point is not active (is pyshm installed?)"


def test_fixtures_clean_up_after_the_test(pytester):
    record = pytester.path / "record.txt"
    pytester.makepyfile(f"""
        import pyshm

        def test_uses_everything(pyshm_name, pyshm_segment, pyshm_child):
            made = pyshm.SharedMemory(pyshm_name, create=True, size=8)
            made.close()
            shm = pyshm_segment(64)
            shm.write(b"ping")
            keep_view = None
            child = pyshm_child(
                "import pyshm, sys\\n"
                "print(pyshm.SharedMemory(sys.argv[1]).read(4).decode(), flush=True)\\n"
                "sys.stdin.readline()\\n",   # blocks: the fixture must kill it
                shm.name)
            assert child.stdout.readline().strip() == "ping"
            with open({str(record)!r}, "w") as f:
                f.write(" ".join([pyshm_name, shm.name, str(child.pid)]))
    """)
    result = pytester.runpytest_subprocess("-p", "pyshm")
    result.assert_outcomes(passed=1)
    name, seg_name, pid = record.read_text().split()
    for gone in (name, seg_name):
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(gone)
    # The blocked child was killed and reaped: no such process any more.
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


def test_segment_factory_with_name(pyshm_segment, pyshm_name):
    shm = pyshm_segment(100, name=pyshm_name)
    assert shm.name == pyshm_name and shm.size == 100
    assert len(pyshm_name) <= 14


def test_readme_example_passes(pytester):
    import re
    from pathlib import Path

    # Beside the tests in a checkout; PYSHM_SOURCE_DIR names the checkout or
    # unpacked sdist when they run from a copy (.ci/package.sh).
    root = os.environ.get("PYSHM_SOURCE_DIR") or Path(__file__).resolve().parents[2]
    readme = Path(root) / "README.md"
    if not readme.is_file():
        pytest.skip("README.md is not beside the tests (installed copy); "
                    "set PYSHM_SOURCE_DIR to a checkout or an unpacked sdist")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
              if "def test_" in b]
    assert blocks, "the README shows an example test"
    pytester.makepyfile(test_readme_example=blocks[0])
    result = pytester.runpytest_subprocess("-p", "pyshm")
    result.assert_outcomes(passed=1)
