"""The README's first command: python -m pyshm demo."""

from __future__ import annotations

import subprocess
import sys

from conftest import child_env


def test_demo_runs_and_data_crosses_both_ways():
    result = subprocess.run([sys.executable, "-m", "pyshm", "demo"], capture_output=True,
                            text=True, env=child_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[process 2" in out and "read: 'data from process 1" in out
    assert "read at offset 128: 'hello back from process 2" in out
    assert "Data crossed both ways." in out


def test_cli_version_and_help():
    result = subprocess.run([sys.executable, "-m", "pyshm", "--version"], capture_output=True,
                            text=True, env=child_env(), timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("pyshm ")
    result = subprocess.run([sys.executable, "-m", "pyshm"], capture_output=True, text=True,
                            env=child_env(), timeout=60)
    assert result.returncode == 2 and "COMMAND" in result.stderr
