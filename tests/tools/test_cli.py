"""The README's first command: python -m pyshm demo."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pyshm
from pyshm._subprocess import child_env


def test_demo_runs_and_data_crosses_both_ways():
    result = subprocess.run([sys.executable, "-m", "pyshm", "demo"], capture_output=True,
                            text=True, env=child_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[process 2" in out and "read: 'data from process 1" in out
    assert "read at offset 128: 'hello back from process 2" in out
    assert "Data crossed both ways." in out
    assert "got back 'echo: first message'" in out
    assert "Messages crossed both ways." in out


def test_cli_version_and_help():
    result = subprocess.run([sys.executable, "-m", "pyshm", "--version"], capture_output=True,
                            text=True, env=child_env(), timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("pyshm ")
    result = subprocess.run([sys.executable, "-m", "pyshm"], capture_output=True, text=True,
                            env=child_env(), timeout=60)
    assert result.returncode == 2 and "COMMAND" in result.stderr


def pyshm_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pyshm", *args], input=stdin,
                          capture_output=True, env=child_env(), timeout=60)


def assert_clean_error(result: subprocess.CompletedProcess[bytes], command: str,
                       *words: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"pyshm {command}: ")
    for word in words:
        assert word in err


def test_create_write_cat_rm(pyshm_name):
    assert pyshm_cli("create", pyshm_name, "1K").returncode == 0
    with pyshm.SharedMemory(pyshm_name) as shm:
        assert shm.size == 1024
    assert pyshm_cli("write", pyshm_name, "hello", "--offset", "16").returncode == 0
    assert pyshm_cli("write", pyshm_name, stdin=b"\x00\xffbinary").returncode == 0
    out = pyshm_cli("cat", pyshm_name, "--size", "8").stdout
    assert out == b"\x00\xffbinary"
    out = pyshm_cli("cat", pyshm_name, "--offset", "16", "--size", "5").stdout
    assert out == b"hello"
    assert len(pyshm_cli("cat", pyshm_name).stdout) == 1024
    assert pyshm_cli("rm", pyshm_name).returncode == 0
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_info_and_ls(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100):
        info = pyshm_cli("info", pyshm_name)
        assert info.returncode == 0
        text = info.stdout.decode()
        assert f"name:     {pyshm_name}" in text and "size:     256" in text
        assert "kind:     raw" in text
        listing = pyshm_cli("ls")
        if sys.platform.startswith("linux"):
            assert listing.returncode == 0
            rows = [line.split() for line in listing.stdout.decode().splitlines()]
            assert rows[0][:3] == ["NAME", "SIZE", "KIND"]
            assert [pyshm_name, "256", "raw"] in [r[:3] for r in rows]
        else:
            assert_clean_error(listing, "ls", "no way to list")


def test_errors_are_one_line_without_traceback(pyshm_name):
    assert_clean_error(pyshm_cli("cat", pyshm_name), "cat", "No such file", pyshm_name)
    assert_clean_error(pyshm_cli("info", pyshm_name), "info", pyshm_name)
    assert pyshm_cli("create", pyshm_name, "16").returncode == 0
    assert_clean_error(pyshm_cli("create", pyshm_name, "16"), "create", "exists", pyshm_name)
    assert_clean_error(pyshm_cli("write", pyshm_name, "x" * 17), "write", "do not fit")
    assert_clean_error(pyshm_cli("cat", pyshm_name, "--offset", "17"), "cat", "offset")
    assert_clean_error(pyshm_cli("create", "bad/name", "16"), "create", "'/'")
    result = pyshm_cli("rm", pyshm_name, pyshm_name)
    assert_clean_error(result, "rm", "No such file")
    bad = pyshm_cli("create", pyshm_name, "lots")
    assert bad.returncode == 2 and b"not a size" in bad.stderr


def test_channel_commands(pyshm_name):
    assert pyshm_cli("create", pyshm_name, "64K", "--channel").returncode == 0
    assert pyshm_cli("send", pyshm_name, "first").returncode == 0
    assert pyshm_cli("send", pyshm_name, stdin=b"\x00second\xff").returncode == 0
    info = pyshm_cli("info", pyshm_name).stdout.decode()
    assert "kind:     channel" in info and "capacity: 65536" in info
    assert "queued:   " in info
    if sys.platform.startswith("linux"):
        rows = [line.split() for line in pyshm_cli("ls").stdout.decode().splitlines()]
        row = next(r for r in rows if r and r[0] == pyshm_name)
        assert row[2:4] == ["channel", "65536"] and int(row[4]) > 0
    assert pyshm_cli("recv", pyshm_name).stdout == b"first"
    assert pyshm_cli("recv", pyshm_name, "--timeout", "5").stdout == b"\x00second\xff"
    result = pyshm_cli("recv", pyshm_name, "--timeout", "0")
    assert_clean_error(result, "recv", "timeout")
    with pyshm.Channel(pyshm_name) as chan:
        assert chan.queued == 0
    bad = pyshm_cli("recv", pyshm_name, "--timeout", "-1")
    assert bad.returncode == 2 and b"timeout" in bad.stderr
    assert pyshm_cli("rm", pyshm_name).returncode == 0


def test_channel_commands_on_a_raw_segment(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=4096):
        assert_clean_error(pyshm_cli("send", pyshm_name, "x"), "send", "channel")
        assert_clean_error(pyshm_cli("recv", pyshm_name, "--timeout", "0"), "recv", "channel")


def test_recv_blocks_until_a_send(pyshm_name, pyshm_child):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        receiver = pyshm_child.module("pyshm", "recv", pyshm_name, "--timeout", "60")
        chan.send(b"delivered")
        assert receiver.finish() == "delivered"


@pytest.mark.parametrize("command", ["ls", "info", "create", "write", "cat", "rm", "send",
                                     "recv", "demo", "bench"])
def test_help_for_each_command(command):
    result = pyshm_cli(command, "--help")
    assert result.returncode == 0
    assert result.stdout.decode().startswith(f"usage: pyshm {command}")


def test_cat_into_closed_pipe(pyshm_name):
    # `pyshm cat NAME | head -c1`: the reader leaving early is not an error.
    with pyshm.SharedMemory(pyshm_name, create=True, size=8 << 20):
        proc = subprocess.Popen([sys.executable, "-m", "pyshm", "cat", pyshm_name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env())
        assert proc.stdout.read(1) == b"\0"
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 0, err
        assert b"Traceback" not in err


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("pyshm") == "pyshm.cli:main"
