"""The pytest plugin (entry point pytest11) and its fixtures."""

from __future__ import annotations

import os
import sys
import time

import pytest

import pyshm
from pyshm.pytest_plugin import DEADLINE

pytest_plugins = ["pytester"]
LINUX = sys.platform.startswith("linux")


def process_gone(pid: int) -> bool:
    """True when no process PID runs any more (a reaped child)."""
    if sys.platform == "win32":
        # os.kill(pid, 0) is no probe there: signal 0 is CTRL_C_EVENT.
        import ctypes
        from ctypes import wintypes

        k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        k32.OpenProcess.restype = wintypes.HANDLE
        k32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
        k32.GetExitCodeProcess.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
        k32.CloseHandle.argtypes = [wintypes.HANDLE]
        handle = k32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            # ERROR_INVALID_PARAMETER: no process has that id.
            return ctypes.get_last_error() == 87  # type: ignore[attr-defined]
        try:
            code = wintypes.DWORD()
            assert k32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value != 259                    # STILL_ACTIVE
        finally:
            k32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


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
    assert process_gone(int(pid))


def test_segment_factory_with_name(pyshm_segment, pyshm_name):
    shm = pyshm_segment(100, name=pyshm_name)
    assert shm.name == pyshm_name and shm.size == 100
    assert len(pyshm_name) <= 14


# ---- names ----------------------------------------------------------------------

def test_names_are_short_unique_and_recognisable(pyshm_names, pyshm_name):
    made = [pyshm_names() for _ in range(2000)] + [pyshm_name]
    assert len(set(made)) == len(made)
    assert all(len(n) <= 14 and n.startswith(pyshm_names.prefix) for n in made), made[:3]
    assert pyshm_names.prefix.startswith("pyt")


@pytest.mark.skipif(not LINUX, reason="lists /dev/shm (Linux); elsewhere: "
                                       "test_in_dev_shm_is_empty_where_nothing_lists")
def test_in_dev_shm_sees_this_sessions_names(pyshm_names):
    name = pyshm_names()
    assert name not in pyshm_names.in_dev_shm()
    with pyshm.SharedMemory(name, create=True, size=8):
        assert name in pyshm_names.in_dev_shm()
    pyshm_names.remove(name)
    assert name not in pyshm_names.in_dev_shm()
    pyshm_names.remove(name)        # again: nothing to do


@pytest.mark.skipif(LINUX, reason="the other systems' rule; Linux: "
                                   "test_in_dev_shm_sees_this_sessions_names")
def test_in_dev_shm_is_empty_where_nothing_lists(pyshm_names):
    """No listing outside Linux, even where a /dev/shm path exists (Windows
    Python under Wine sees the host's as \\dev\\shm)."""
    with pyshm.SharedMemory(pyshm_names(), create=True, size=8):
        assert pyshm_names.in_dev_shm() == set()


def test_names_factory_and_child_clean_up_after_the_test(pytester, tmp_path):
    """Names from pyshm_names and children started with .script and .command
    are removed, killed and reaped after the test, even when it fails."""
    record = pytester.path / "record.txt"
    script = tmp_path / "blocked.py"
    script.write_text("import sys\nprint('up', flush=True)\nsys.stdin.readline()\n")
    pytester.makepyfile(f"""
        import sys
        import pyshm

        def test_leaves_things_behind(pyshm_names, pyshm_child):
            names = [pyshm_names(), pyshm_names()]
            for name in names:
                pyshm.SharedMemory(name, create=True, size=8).close()
            kids = [pyshm_child.script({str(script)!r}),
                    pyshm_child.command(sys.executable, {str(script)!r})]
            for kid in kids:
                kid.expect("up")
            with open({str(record)!r}, "w") as f:
                f.write(" ".join(names + [str(k.pid) for k in kids]))
            assert False, "fails on purpose: the clean-up must happen anyway"
    """)
    result = pytester.runpytest_subprocess("-p", "pyshm")
    result.assert_outcomes(failed=1)
    *names, pid1, pid2 = record.read_text().split()
    for name in names:
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(name)
    for pid in (pid1, pid2):
        assert process_gone(int(pid))


# ---- the child helpers ----------------------------------------------------------

ECHO = """
import sys
print("ready", flush=True)
for line in sys.stdin:
    print("got", line.strip(), flush=True)
print("bye")
"""


def test_child_talks_line_by_line(pyshm_child):
    child = pyshm_child(ECHO)
    assert child.expect("ready") == "ready"
    child.send_line("one")
    assert child.line() == "got one"
    child.send_line("two")
    assert child.finish() == "got two\nbye\n"      # the rest, after stdin closed
    assert child.returncode == 0


def test_communicate_after_line_returns_the_rest(pyshm_child):
    child = pyshm_child("import sys\nprint('a')\nprint('b')\nprint('oops', file=sys.stderr)")
    assert child.line() == "a"
    assert child.stdout is None                        # the reader thread has it
    assert child.communicate(timeout=60) == ("b\n", "oops\n")


def test_line_fails_when_nothing_comes(pyshm_child, tmp_path):
    # The child writes to stderr, then makes a file: once the file is there,
    # stderr holds the line however slowly the interpreter started (a debug
    # build takes longer than the 0.5 s the test waits for stdout).
    marker = tmp_path / "wrote"
    child = pyshm_child("import sys\nprint('to stderr', file=sys.stderr, flush=True)\n"
                        "open(sys.argv[1], 'w').close()\nsys.stdin.readline()", marker)
    end = time.monotonic() + DEADLINE
    while not marker.exists():
        assert time.monotonic() < end, "the child never started"
        time.sleep(0.001)   # pacing a poll with a deadline, not a guess
    with pytest.raises(pytest.fail.Exception, match="(?s)said nothing.*to stderr"):
        child.line(timeout=0.5)
    assert child.returncode is not None                # killed and reaped


def test_line_fails_when_the_child_ends(pyshm_child):
    child = pyshm_child("import sys\nsys.exit('gone')")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)ended \(rc 1\).*gone"):
        child.line()


def test_expect_fails_on_another_line(pyshm_child):
    child = pyshm_child("print('hello')")
    with pytest.raises(AssertionError, match="'hello', expected 'bye'"):
        child.expect("bye")


def test_finish_fails_on_a_nonzero_exit(pyshm_child):
    child = pyshm_child("import sys\nprint('partial')\nsys.exit('broken')")
    with pytest.raises(AssertionError, match="(?s)rc 1.*broken"):
        child.finish()


def test_a_failing_test_shows_its_own_frames_not_the_plugins(pytester):
    """Issue 23: when a Child helper fails the test, the traceback ends in
    the test's own line (__tracebackhide__), with the helper's message."""
    pytester.makepyfile("""
        def test_expect(pyshm_child):
            child = pyshm_child("print('pong')")
            child.expect("ping")

        def test_line(pyshm_child):
            child = pyshm_child("pass")
            child.line()

        def test_finish(pyshm_child):
            child = pyshm_child("import sys; sys.exit(4)")
            child.finish()
    """)
    result = pytester.runpytest_subprocess("-p", "pyshm")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert "said 'pong', expected 'ping'" in out
    assert "without a line" in out and "failed (rc 4)" in out
    for test, line in (("test_expect", 'child.expect("ping")'), ("test_line", "child.line()"),
                       ("test_finish", "child.finish()")):
        assert f">       {line}" in out, out         # the failing line is the test's
    assert "pytest_plugin.py" not in out, out


def test_script_module_and_command(pyshm_child, tmp_path):
    script = tmp_path / "args.py"
    script.write_text("import sys\nprint(sys.argv[1:])\n")
    assert pyshm_child.script(script, "a", 1).finish() == "['a', '1']\n"
    assert pyshm_child.module("pyshm", "--version").finish().startswith("pyshm ")
    import sys
    assert pyshm_child.command(sys.executable, "-c", "print(2 * 21)").finish() == "42\n"


def test_child_imports_this_pyshm(pyshm_child, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)     # the child gets it anyway
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")          # kept, after this pyshm's folder
    child = pyshm_child("import os, pyshm\nprint(pyshm.__file__)\n"
                        "print(os.environ.get('PYTHONUNBUFFERED'))")
    assert child.finish().split("\n")[:2] == [pyshm.__file__, "1"]


def test_with_block_kills_and_reaps(pyshm_child):
    with pyshm_child("import sys\nsys.stdin.readline()") as child:
        pass
    assert child.returncode is not None


# ---- the suite's leftover check (tests/conftest.py) --------------------------------

@pytest.mark.skipif(not LINUX, reason="the leftover check lists /dev/shm (Linux); on Windows "
                                       "a name cannot outlive the session's handles")
def test_leftover_check_fails_the_run(pytester):
    """A name of the session that escapes every fixture (here: made from the
    prefix by hand) fails the run, and is removed."""
    from pathlib import Path

    pytester.makeconftest((Path(__file__).resolve().parents[1] / "conftest.py").read_text())
    record = pytester.path / "record.txt"
    pytester.makepyfile(f"""
        import pyshm

        def test_leaks(pyshm_names):
            name = pyshm_names.prefix + "leak"
            with open({str(record)!r}, "w") as f:
                f.write(name)
            pyshm.SharedMemory(name, create=True, size=8).close()
    """)
    result = pytester.runpytest_subprocess("-p", "pyshm")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*tests left segments in /dev/shm*leak*"])
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(record.read_text())
