"""The command line: python -m pyshm (also the `pyshm` script): the demo, every
command and option, the exit statuses, the table and JSON outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from typing import Iterator, Union

import pytest

import pyshm
from pyshm._subprocess import child_env
from pyshm._units import human_size

# docs/windows.md, platform differences: on Windows a name lives only while some
# process holds a handle, so what `pyshm create` makes is gone when that
# command exits, and `pyshm rm` has nothing to remove.
WINDOWS = sys.platform == "win32"


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
                       *words: str, status: int = 1) -> None:
    err = result.stderr.decode()
    assert result.returncode == status, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"pyshm {command}: ")
    for word in words:
        assert word in err


@contextlib.contextmanager
def created(name: str, size: str, *options: str) -> Iterator[None]:
    """`pyshm create NAME SIZE OPTIONS`; on Windows, where the segment died
    with that command, this process then makes and holds it for the block."""
    assert pyshm_cli("create", name, size, *options).returncode == 0
    if not WINDOWS:
        yield
        return
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(name)
    nbytes = {"16": 16, "1K": 1024, "64K": 65536}[size]
    holder: Union[pyshm.SharedMemory, pyshm.Channel]
    if "--channel" in options:
        holder = pyshm.Channel(name, create=True, capacity=nbytes)
    else:
        holder = pyshm.SharedMemory(name, create=True, size=nbytes)
    with holder:
        yield


def test_create_write_cat_rm(pyshm_name):
    with created(pyshm_name, "1K"):
        with pyshm.SharedMemory(pyshm_name) as shm:
            # What an opener sees: Windows rounds up to a page.
            size = pyshm.PAGE_SIZE if WINDOWS else 1024
            assert shm.size == size
        write_cat_rm(pyshm_name, size)
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def write_cat_rm(pyshm_name: str, size: int) -> None:
    assert pyshm_cli("write", pyshm_name, "hello", "--offset", "16").returncode == 0
    assert pyshm_cli("write", pyshm_name, stdin=b"\x00\xffbinary").returncode == 0
    out = pyshm_cli("cat", pyshm_name, "--size", "8").stdout
    assert out == b"\x00\xffbinary"
    out = pyshm_cli("cat", pyshm_name, "--offset", "16", "--size", "5").stdout
    assert out == b"hello"
    assert len(pyshm_cli("cat", pyshm_name).stdout) == size
    assert pyshm_cli("rm", pyshm_name).returncode == 0
    if not WINDOWS:
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(pyshm_name)


def test_info_and_ls(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100):
        info = pyshm_cli("info", pyshm_name)
        assert info.returncode == 0
        text = info.stdout.decode()
        size = human_size(pyshm.PAGE_SIZE if WINDOWS else 256)  # an opener's view of it
        assert f"name:     {pyshm_name}" in text and f"size:     {size}" in text
        assert "kind:     raw" in text
        listing = pyshm_cli("ls", "--bytes")
        if sys.platform.startswith("linux"):
            assert listing.returncode == 0
            rows = [line.split() for line in listing.stdout.decode().splitlines()]
            assert rows[0][:3] == ["NAME", "SIZE", "KIND"]
            assert [pyshm_name, "256", "raw"] in [r[:3] for r in rows]
        else:
            assert_clean_error(listing, "ls", "no way to list")


def test_errors_are_one_line_without_traceback(pyshm_name):
    # The OS's words for a missing name (Windows' text differs by version
    # and under Wine: the name alone is checked there).
    missing = () if WINDOWS else ("No such file",)
    assert_clean_error(pyshm_cli("cat", pyshm_name), "cat", *missing, pyshm_name)
    assert_clean_error(pyshm_cli("info", pyshm_name), "info", pyshm_name)
    with created(pyshm_name, "16"):
        assert_clean_error(pyshm_cli("create", pyshm_name, "16"), "create", "exists",
                           pyshm_name)
        # Windows rounds an opener's view up to a page: 16 bytes fit nowhere else.
        end = str(pyshm.PAGE_SIZE if WINDOWS else 16)
        assert_clean_error(pyshm_cli("write", pyshm_name, "x" * (int(end) + 1)), "write",
                           "do not fit")
        assert_clean_error(pyshm_cli("cat", pyshm_name, "--offset", str(int(end) + 1)), "cat",
                           "offset")
        assert_clean_error(pyshm_cli("create", "bad/name", "16"), "create", "'/'")
        result = pyshm_cli("rm", pyshm_name, pyshm_name)
        if WINDOWS:
            assert result.returncode == 0, result.stderr    # unlink() does nothing there
        else:
            assert_clean_error(result, "rm", *missing)
    bad = pyshm_cli("create", pyshm_name, "lots")
    assert bad.returncode == 2 and b"not a size" in bad.stderr


def test_channel_commands(pyshm_name):
    with created(pyshm_name, "64K", "--channel"):
        channel_commands(pyshm_name)


def channel_commands(pyshm_name: str) -> None:
    assert pyshm_cli("send", pyshm_name, "first").returncode == 0
    assert pyshm_cli("send", pyshm_name, stdin=b"\x00second\xff").returncode == 0
    info = pyshm_cli("info", pyshm_name).stdout.decode()
    assert "kind:     channel" in info and "capacity: 64 KiB" in info
    assert "queued:   32 B" in info and "messages: 2" in info
    # (universal newlines: Windows prints CRLF)
    info = pyshm_cli("info", pyshm_name, "--bytes").stdout.decode().replace("\r\n", "\n")
    assert "capacity: 65536" in info and "queued:   32\n" in info
    if sys.platform.startswith("linux"):
        rows = [line.split() for line in pyshm_cli("ls", "--bytes").stdout.decode().splitlines()]
        row = next(r for r in rows if r and r[0] == pyshm_name)
        assert row[2:6] == ["channel", "65536", "32", "2"]
    assert pyshm_cli("recv", pyshm_name).stdout == b"first"
    assert pyshm_cli("recv", pyshm_name, "--timeout", "5").stdout == b"\x00second\xff"
    result = pyshm_cli("recv", pyshm_name, "--timeout", "0")
    assert_clean_error(result, "recv", "timeout", status=3)
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
                                     "recv", "watch", "demo", "bench"])
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

    found = entry_points()
    # Python 3.9 answers with a dict of groups; 3.10+ selects by keyword.
    group = (found.select(group="console_scripts") if hasattr(found, "select")
             else found.get("console_scripts", ()))  # type: ignore[attr-defined]
    scripts = {ep.name: ep.value for ep in group}
    assert scripts.get("pyshm") == "pyshm.cli:main"


# ---- exit statuses -----------------------------------------------------------------

def test_exit_statuses_tell_failures_apart(pyshm_name, pyshm_names):
    """0 ok, 1 error, 2 usage, 3 timeout: an empty channel and a missing one
    differ for scripts."""
    missing = pyshm_names()
    # (The OS's words for a missing name; Windows' differ by version and
    # under Wine: the name alone is checked there.)
    words = (missing,) if WINDOWS else ("No such file", missing)
    assert_clean_error(pyshm_cli("recv", missing, "--timeout", "0"), "recv", *words, status=1)
    assert pyshm_cli("recv", "--timeout", "0").returncode == 2          # NAME missing
    assert pyshm_cli("create", pyshm_name, "1K", "--mode", "999").returncode == 2
    with pyshm.Channel(pyshm_name, create=True, capacity=16) as chan:
        assert_clean_error(pyshm_cli("recv", pyshm_name, "--timeout", "0"), "recv",
                           "no message", status=3)
        chan.send(b"12345678")              # full: 8 + 8 of 16 bytes
        assert_clean_error(pyshm_cli("send", pyshm_name, "x", "--timeout", "0"), "send",
                           "no space", status=3)
        assert_clean_error(pyshm_cli("send", pyshm_name, "x", "--timeout", "0.05"), "send",
                           "no space", status=3)
        assert pyshm_cli("recv", pyshm_name, "--timeout", "0").returncode == 0


@pytest.mark.parametrize("command", [None, "send", "recv", "ls"])
def test_help_documents_the_exit_statuses(command):
    out = pyshm_cli(*([command] if command else []), "--help").stdout.decode()
    for line in ("0    success", "1    error", "2    usage error", "3    timeout"):
        assert line in out, out


# ---- ls and info: tables for people, JSON for scripts --------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists /dev/shm")


@linux_only
def test_ls_and_info_json(pyshm_name, pyshm_names):
    import json

    raw = pyshm_names()
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan, \
            pyshm.SharedMemory(raw, create=True, size=3 << 20, mode=0o640):
        chan.send(b"one")
        chan.send(b"two")
        listing = pyshm_cli("ls", "--json")
        assert listing.returncode == 0, listing.stderr
        records = {r["name"]: r for r in json.loads(listing.stdout)}
        info = json.loads(pyshm_cli("info", pyshm_name, "--json").stdout)
    c, r = records[pyshm_name], records[raw]
    assert info == c or dict(info, mtime=None) == dict(c, mtime=None)
    assert c["kind"] == "channel" and c["capacity"] == 4096 and c["size"] == 4096 + 512
    assert c["queued"] == 32 and c["messages"] == 2
    assert c["creator_pid"] == os.getpid() and c["creator_alive"] is True
    assert c["mode"] == "0o600" and c["uid"] == os.getuid() and c["error"] is None
    assert isinstance(c["mtime"], float)
    assert r["kind"] == "raw" and r["size"] == 3 << 20 and r["mode"] == "0o640"
    assert r["capacity"] is r["messages"] is r["creator_pid"] is r["creator_alive"] is None
    assert list(c) == list(r)       # one schema: the same keys, in the same order


def _columns(line: str) -> list:
    """Display columns where each cell after the first starts."""
    import unicodedata

    starts, col, prev_space = [], 0, False
    for i, ch in enumerate(line):
        if ch != " " and prev_space and line[i - 2:i] == "  ":
            starts.append(col)
        prev_space = ch == " "
        col += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return starts


@linux_only
def test_ls_table_human_sizes_wide_names_and_quoting(pyshm_names):
    base = pyshm_names()
    names = {"wide": base[:8] + "日本", "space": base[:8] + " x", "ctl": base[:8] + "\tt"}
    try:
        pyshm.SharedMemory(names["wide"], create=True, size=256 << 20).close()
        pyshm.SharedMemory(names["space"], create=True, size=1500).close()
        pyshm.SharedMemory(names["ctl"], create=True, size=64).close()
        out = pyshm_cli("ls").stdout.decode()
        lines = out.splitlines()
        rows = {n: next(l for l in lines if l.startswith(shown))
                for n, shown in ((names["wide"], names["wide"]),
                                 (names["space"], f"'{names['space']}'"),
                                 (names["ctl"], repr(names["ctl"])))}
        assert "256 MiB" in rows[names["wide"]]
        assert "1.46 KiB" in rows[names["space"]]
        assert "64 B" in rows[names["ctl"]]
        header = _columns(lines[0])[:2]
        for line in rows.values():      # SIZE and KIND start under their headers
            assert _columns(line)[:2] == header, (lines[0], line)
        exact = pyshm_cli("ls", "--bytes").stdout.decode()
        assert str(256 << 20) in exact and "1500" in exact
    finally:
        for name in names.values():
            pyshm_names.remove(name)


@linux_only
def test_ls_never_opens_raw_segments_as_channels(pyshm_names, pyshm_name, monkeypatch, capsys):
    """With 20 raw segments present, ls opens none of them as a channel (each
    such open used to wait 200 ms for a header that never comes): it reads
    their first bytes only.  Counted, not timed."""
    import json

    from pyshm import cli
    from pyshm.cli import segments

    raws = [pyshm_names() for _ in range(20)]
    opened = []
    real = pyshm.Channel

    class Counting(real):  # type: ignore[misc,valid-type]
        def __init__(self, name, *args, **kwargs):
            opened.append(name)
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(segments.pyshm, "Channel", Counting)
    try:
        for name in raws:
            pyshm.SharedMemory(name, create=True, size=4096).close()
        with real(pyshm_name, create=True, capacity=64):
            assert cli.main(["ls", "--json"]) == 0
        records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    finally:
        for name in raws:
            pyshm_names.remove(name)
    assert all(records[n]["kind"] == "raw" for n in raws)
    assert records[pyshm_name]["kind"] == "channel"
    assert not set(opened) & set(raws)
    assert pyshm_name in opened


# ---- names that are not segments (issue 19, point 5) --------------------------------

def test_entries_that_are_not_segments_never_hang_a_command(not_a_segment):
    """A FIFO (socket, directory, link) in /dev/shm: info, cat and
    rm --stale --dry-run used to block in open(2).  Each command now answers
    at once (run with a deadline: a hang fails the test) -- info and cat
    with the extension's error naming the name and what it is, rm --stale
    keeping it, ls listing it under its file type -- and leaves it as it was."""
    import json

    entry = not_a_segment
    for command in ("info", "cat"):
        result = pyshm_cli(command, entry.name)
        assert_clean_error(result, command, entry.what, "not a shared-memory segment",
                           repr(entry.name))
    for dry in (["--dry-run"], []):
        result = pyshm_cli("rm", "--stale", *dry, entry.name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == f"kept {entry.name} (not a segment: {entry.ls_kind})\n"
    listing = pyshm_cli("ls", "--json")
    assert listing.returncode == 0, listing.stderr
    record, = (r for r in json.loads(listing.stdout) if r["name"] == entry.name)
    assert record["kind"] == entry.ls_kind and record["size"] is None
    assert record["error"].startswith(entry.what)
    table = pyshm_cli("ls").stdout.decode().splitlines()
    assert [entry.name, entry.ls_kind] in [line.split() for line in table]
    assert entry.intact()


# ---- create --mode, recv --follow ----------------------------------------------------

@linux_only
def test_create_mode(pyshm_name, pyshm_names):
    umask = os.umask(0o022)
    os.umask(umask)                 # the child inherits it: the mode is narrowed by it
    assert pyshm_cli("create", pyshm_name, "4K", "--mode", "0640").returncode == 0
    assert os.stat(f"/dev/shm/{pyshm_name}").st_mode & 0o777 == 0o640 & ~umask
    chan = pyshm_names()
    assert pyshm_cli("create", chan, "4K", "--channel", "--mode", "0o604").returncode == 0
    assert os.stat(f"/dev/shm/{chan}").st_mode & 0o777 == 0o604 & ~umask
    bad = pyshm_cli("create", pyshm_names(), "4K", "--mode", "rw")
    assert bad.returncode == 2 and b"not a mode" in bad.stderr


def test_create_on_a_taken_name_offers_the_commands_own_flag(pyshm_name, pyshm_names):
    """Issue 23: the hint names `--exist-ok`, not the Python argument
    exist_ok=True; with the flag an existing segment or channel that fits is
    kept, one that does not is refused in this command's words and left as it
    was."""
    with created(pyshm_name, "1K"):
        taken = pyshm_cli("create", pyshm_name, "1K")
        assert_clean_error(taken, "create", "exists", "--exist-ok", f"pyshm rm {pyshm_name}")
        assert b"exist_ok" not in taken.stderr
        kept = pyshm_cli("create", pyshm_name, "1K", "--exist-ok")
        assert kept.returncode == 0, kept.stderr
        assert kept.stdout.decode().startswith(f"exists: '{pyshm_name}', ")
        # Windows: an opener sees the size in whole pages.
        larger = str((pyshm.PAGE_SIZE if WINDOWS else 1024) + 1)
        refused = pyshm_cli("create", pyshm_name, larger, "--exist-ok")
        assert_clean_error(refused, "create", "exists with", "nothing was changed",
                           f"pyshm rm {pyshm_name}")
        assert b"exist_ok" not in refused.stderr and b"size=" not in refused.stderr
    chan = pyshm_names()
    with created(chan, "64K", "--channel"):
        kept = pyshm_cli("create", chan, "64K", "--channel", "--exist-ok")
        assert kept.stdout.decode().strip() == f"exists: channel '{chan}', capacity 65536"
        refused = pyshm_cli("create", chan, "1K", "--channel", "--exist-ok")
        assert_clean_error(refused, "create", "capacity 65536, not the 1024 asked for")
        assert b"exist_ok" not in refused.stderr and b"capacity=" not in refused.stderr
        with pyshm.Channel(chan) as opened:
            assert opened.capacity == 65536


def on_a_terminal(*args: str) -> bytes:
    """What `pyshm ARGS` shows on a terminal: its stdout is a pseudo-terminal
    (which turns each newline into CR LF)."""
    import pty

    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pyshm", *args], stdout=secondary,
                                stderr=subprocess.PIPE, env=child_env())
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:         # EIO: the child closed its end
                break
            if not chunk:
                break
            out += chunk
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, err
        return out
    finally:
        os.close(main)


@pytest.mark.skipif(WINDOWS, reason="pseudo-terminals are POSIX (pty)")
def test_recv_and_cat_end_their_line_on_a_terminal(pyshm_name, pyshm_names):
    """Issue 23: on a terminal the prompt no longer continues the message's
    line; into a pipe the bytes stay exactly the message's (test_channel_commands)."""
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        chan.send(b"resize photo.jpg")
        chan.send(b"two lines\nalready ended\n")
        assert on_a_terminal("recv", pyshm_name) == b"resize photo.jpg\r\n"
        assert on_a_terminal("recv", pyshm_name) == b"two lines\r\nalready ended\r\n"
    with pyshm.SharedMemory(pyshm_names(), create=True, size=16) as shm:
        shm.write(b"hello")
        assert on_a_terminal("cat", shm.name, "--size", "5") == b"hello\r\n"
        shm.unlink()


def private_dev_shm() -> list[str]:
    """The argv prefix that runs a shell script with an empty /dev/shm of its
    own (a tmpfs in a mount namespace); skips where unshare(1) cannot."""
    argv = ["unshare", "--mount", "sh", "-ec", 'mount -t tmpfs pyshm-test /dev/shm\n"$@"',
            "sh"]
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux and unshare(1)")
    probe = subprocess.run([*argv, "ls", "-A", "/dev/shm"], capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0 or probe.stdout:
        pytest.skip(f"cannot mount a private /dev/shm here: {probe.stderr.strip()[:200]}")
    return argv


@linux_only
def test_rm_stale_says_so_when_nothing_is_stale():
    """Issue 23: `rm --stale` over all of /dev/shm used to print nothing at
    all when it removed nothing.  Run where /dev/shm is private (an empty
    tmpfs): the machine's own segments are neither seen nor touched."""
    script = ("set -e\n"
              'pyshm() { "$PYSHM_PYTHON" -m pyshm "$@"; }\n'
              "pyshm rm --stale\n"
              "pyshm create raw 1K >/dev/null\n"
              "pyshm rm --stale --dry-run\n"
              "pyshm rm --stale\n")
    argv = private_dev_shm()
    result = subprocess.run([*argv, "bash", "-c", script], capture_output=True, text=True,
                            env=child_env(PYSHM_PYTHON=sys.executable), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "nothing removed: /dev/shm holds no segment",
        "nothing would be removed: no stale channel among the 1 segment(s) in /dev/shm",
        "nothing removed: no stale channel among the 1 segment(s) in /dev/shm",
    ]


def test_recv_follow_prints_every_message_until_idle(pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096) as chan:
        for text in (b"first", b"", b"third \xff"):
            chan.send(text)
        result = pyshm_cli("recv", pyshm_name, "--follow", "--timeout", "0")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"first\n\nthird \xff\n"
        assert chan.messages == 0


# ---- rm --stale: channels that no Channel object has open ----------------------------

CREATE_AND_LEAVE = (
    "import pyshm, sys\n"
    "pyshm.Channel(sys.argv[1], create=True, capacity=64).send(b'left behind')\n"
)

HOLD = ("import os, pyshm, sys\nc = pyshm.Channel(sys.argv[1])\n"
        "print('holding', os.getpid(), flush=True)\nsys.stdin.readline()\n")

# The futex build counts a channel's users itself (its liveness slots); the
# fallback build decides by the creator and the mappings (test_fallback.py).
counts_users = pytest.mark.skipif(pyshm.CHANNEL_WAIT != "futex",
                                  reason="liveness slots of the futex build")


@linux_only
@counts_users
def test_rm_stale_removes_only_channels_nobody_has_open(pyshm_names, pyshm_child):
    """Issue 19, point 7: stale is what the channel itself knows -- no
    liveness slot held, that is no Channel object open, in any process.  The
    creator's pid is information only: a channel its (running) creator has
    closed is stale, one whose creator exited but another process holds is
    not."""
    orphan, used, alive, closed, raw = (pyshm_names() for _ in range(5))
    for name in (orphan, used):
        pyshm_child(CREATE_AND_LEAVE, name).finish()        # creator exits
    holder = pyshm_child(HOLD, used)
    assert holder.line() == f"holding {holder.pid}"
    pyshm.Channel(closed, create=True, capacity=64).close()   # creator runs: this process
    with pyshm.Channel(alive, create=True, capacity=64), \
            pyshm.SharedMemory(raw, create=True, size=64):
        rows = {line.split()[0]: line for line in pyshm_cli("ls").stdout.decode().splitlines()}
        assert rows[orphan].endswith("(gone)") and not rows[alive].endswith("(gone)")
        names = (orphan, used, alive, closed, raw)
        dry = pyshm_cli("rm", "--stale", "--dry-run", *names)
        assert dry.returncode == 0, dry.stderr
        out = dry.stdout.decode()
        assert (f"would remove {orphan} (channel; no Channel object has it open: no liveness "
                f"slot is held, creator pid ") in out
        assert f"would remove {closed} (" in out and f"creator pid {os.getpid()} running" in out
        assert all(os.path.exists(f"/dev/shm/{name}") for name in names)
        result = pyshm_cli("rm", "--stale", *names)
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert f"removed {orphan} (" in out and f"removed {closed} (" in out
        assert f"kept {used} (open by 1 Channel object(s): liveness slots held" in out
        assert f"kept {alive} (open by 1 Channel object(s)" in out
        assert f"kept {raw} (raw segment: pyshm records no users of raw segments)" in out
        assert not os.path.exists(f"/dev/shm/{orphan}")
        assert not os.path.exists(f"/dev/shm/{closed}")
        for name in (used, alive, raw):
            assert os.path.exists(f"/dev/shm/{name}")
        info = pyshm_cli("info", alive).stdout.decode()
        assert "users:    1 Channel object(s) have it open" in info
    holder.finish()
    # Its last user gone, the channel is stale too.
    result = pyshm_cli("rm", "--stale", used)
    assert f"removed {used} (" in result.stdout.decode()
    pyshm_names.remove(alive)
    pyshm_names.remove(raw)


@linux_only
@counts_users
def test_rm_stale_across_pid_namespaces(pyshm_names, pyshm_child, pid_namespace):
    """Two containers sharing /dev/shm: a process of one PID namespace holds a
    channel (whose creator, in a third, has exited); `rm --stale` runs in
    another namespace, whose /proc shows neither of them.  By pids and maps
    the channel looked stale and was removed; its liveness slot says it is
    in use: kept.  Once the holder is gone it is stale, from any namespace."""
    name = pyshm_names()
    pyshm_child(CREATE_AND_LEAVE, name).finish()
    holder = pyshm_child.command(*pid_namespace, sys.executable, "-c", HOLD, name)
    assert holder.line() == "holding 1"

    def rm_stale_elsewhere(*options: str) -> str:
        rm = pyshm_child.command(*pid_namespace, sys.executable, "-m", "pyshm", "rm",
                                 "--stale", *options, name)
        return rm.finish()

    out = rm_stale_elsewhere()
    assert out == (f"kept {name} (open by 1 Channel object(s): liveness slots held, in any "
                   f"PID namespace)\n")
    assert os.path.exists(f"/dev/shm/{name}")
    out = pyshm_cli("rm", "--stale", "--dry-run", name).stdout.decode()    # from here too
    assert out.startswith(f"kept {name} (open by 1 Channel object(s)")
    holder.finish()
    out = rm_stale_elsewhere("--dry-run")
    assert out.startswith(f"would remove {name} (channel; no Channel object has it open")
    out = rm_stale_elsewhere()
    assert out.startswith(f"removed {name} (")
    assert not os.path.exists(f"/dev/shm/{name}")


@linux_only
@counts_users
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to run the command as another user")
def test_rm_stale_counts_users_of_a_channel_it_may_only_read(pyshm_name):
    """Another user's channel that this user may read but not open as a
    Channel (mode 0644): its users are still counted (read-only), so it is
    kept while in use, and `info` shows both the count and the refusal."""
    import json

    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run(as_nobody + ["true"]).returncode != 0:
        pytest.skip("setpriv cannot change user here")
    # The installed pyshm must be readable by that user (a venv in a 0700
    # temporary folder, as .ci/package.sh makes, is not).
    probe = subprocess.run([*as_nobody, sys.executable, "-c", "import pyshm"],
                           capture_output=True, env=child_env(), timeout=60)
    if probe.returncode != 0:
        pytest.skip("this pyshm cannot be imported as another user here: "
                    + probe.stderr.decode(errors="replace").strip().splitlines()[-1][:200])

    def cli_as_nobody(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*as_nobody, sys.executable, "-m", "pyshm", *args],
                              capture_output=True, env=child_env(), timeout=60)

    with pyshm.Channel(pyshm_name, create=True, capacity=64, mode=0o644):
        info = cli_as_nobody("info", pyshm_name, "--json")
        assert info.returncode == 0, info.stderr
        record = json.loads(info.stdout)
        assert record["users"] == 1 and "Permission denied" in record["error"]
        out = cli_as_nobody("rm", "--stale", "--dry-run", pyshm_name).stdout.decode()
        assert out.startswith(f"kept {pyshm_name} (open by 1 Channel object(s)")
    out = cli_as_nobody("rm", "--stale", "--dry-run", pyshm_name).stdout.decode()
    assert out.startswith(f"would remove {pyshm_name} (channel; no Channel object has it "
                          f"open: no liveness slot is held, creator unknown")


def test_rm_needs_names_or_stale():
    result = pyshm_cli("rm")
    assert result.returncode == 2 and b"--stale" in result.stderr
    result = pyshm_cli("rm", "x", "--dry-run")
    assert result.returncode == 2 and b"--dry-run goes with --stale" in result.stderr


@linux_only
def test_creator_alive_knows_exited_zombie_and_reused_pids():
    import time

    from pyshm.cli.processes import creator_alive

    assert creator_alive(os.getpid(), time.time()) is True
    # A segment made long before this process started: the pid was reused.
    assert creator_alive(os.getpid(), time.time() - 10 ** 6) is False
    assert creator_alive(0, None) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Exited but not reaped: a zombie holds the pid, the creator is gone.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert creator_alive(child.pid, time.time()) is False
    finally:
        child.wait()
    assert creator_alive(child.pid, time.time()) is False


# ---- slots: ls, info, watch ------------------------------------------------------------

def test_info_and_ls_show_a_slot(pyshm_name):
    import json

    with pyshm.Slot(pyshm_name, create=True, size=64) as slot:
        text = pyshm_cli("info", pyshm_name).stdout.decode()
        assert "kind:     slot" in text and "capacity: 64 B (its largest value)" in text
        assert "latest:   generation 0 (nothing published yet)" in text
        for value in (b"one", b"two", b"three"):
            slot.publish(value)
        text = pyshm_cli("info", pyshm_name, "--bytes").stdout.decode()
        assert "capacity: 64 (its largest value)" in text
        assert "latest:   generation 3" in text
        info = json.loads(pyshm_cli("info", pyshm_name, "--json").stdout)
        assert info["kind"] == "slot" and info["capacity"] == 64 and info["generation"] == 3
        assert info["error"] is None and info["queued"] is info["messages"] is None
        if not sys.platform.startswith("linux"):
            return
        records = {r["name"]: r for r in json.loads(pyshm_cli("ls", "--json").stdout)}
        assert dict(records[pyshm_name], mtime=None) == dict(info, mtime=None)
        rows = [line.split() for line in pyshm_cli("ls", "--bytes").stdout.decode().splitlines()]
        assert rows[0][6] == "GENERATION"
        row = next(r for r in rows if r and r[0] == pyshm_name)
        assert row[2:] == ["slot", "64", "3"]


@linux_only
def test_ls_tells_slots_channels_and_raw_segments_apart(pyshm_names):
    import json

    slot, chan, raw = pyshm_names(), pyshm_names(), pyshm_names()
    with pyshm.Slot(slot, create=True, size=16), \
            pyshm.Channel(chan, create=True, capacity=64), \
            pyshm.SharedMemory(raw, create=True, size=4096):
        records = {r["name"]: r for r in json.loads(pyshm_cli("ls", "--json").stdout)}
    assert [records[n]["kind"] for n in (slot, chan, raw)] == ["slot", "channel", "raw"]
    assert records[slot]["generation"] == 0 and records[chan]["generation"] is None
    assert records[raw]["generation"] is records[raw]["capacity"] is None
    # rm --stale keeps a slot, and says why.
    kept = pyshm_cli("rm", "--stale", slot)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.decode() == f"kept {slot} (slot: --stale removes channels only)\n"
    assert os.path.exists(f"/dev/shm/{slot}")


PUBLISHER = """if True:
    import pyshm, sys
    slot = pyshm.Slot(sys.argv[1], create=True, size=64)
    print("ready", flush=True)
    for line in sys.stdin:
        print("published", slot.publish(bytes.fromhex(line.strip())), flush=True)
    slot.close()
"""


def test_watch_prints_each_value_another_process_publishes(pyshm_name, pyshm_child):
    """A watcher started before the slot exists (--wait), a publisher in
    another process: each value published is printed (JSON here), then a
    real SIGINT ends the watcher with status 130."""
    import json
    import signal

    watcher = pyshm_child.module("pyshm", "watch", pyshm_name, "--json", "--wait", "60")
    publisher = pyshm_child(PUBLISHER, pyshm_name)
    publisher.expect("ready")
    values = [b"first", b"", bytes(range(64)), b"\xff" * 7]
    for generation, value in enumerate(values, 1):
        # One at a time: the next is published once the watcher printed
        # this one (a slot keeps only the latest: a watcher may skip values).
        publisher.send_line(value.hex() or "")
        publisher.expect(f"published {generation}")
        assert json.loads(watcher.line()) == {"generation": generation, "length": len(value),
                                              "hex": value.hex()}
    with pyshm.Slot(pyshm_name) as slot:
        wait_until_watcher_sleeps(slot)
    if WINDOWS:
        return      # no SIGINT to send there (tests/windows covers Ctrl-C)
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 130, err
    assert err == "pyshm watch: interrupted\n" and out == ""
    publisher.finish()


# docs/format.md, the slot header: its wait word (bit 31: a waiter sleeps on
# it, futex build) and that word's waiter count (Windows).
GEN_SEQ, GEN_WAITERS, SYNC_WAITERS = 72, 76, 0x80000000


def wait_until_watcher_sleeps(slot) -> None:
    """Until a waiter sleeps on SLOT (deadline, no fixed sleep): registered in
    its header -- the futex build's waiter bit, Windows' waiter count.  The
    fallback's waiters nap without registering: at once there."""
    import struct
    import time

    if pyshm.CHANNEL_WAIT == "fallback":
        return
    offset, bit = (GEN_WAITERS, 0xFFFFFFFF) if WINDOWS else (GEN_SEQ, SYNC_WAITERS)
    with pyshm.SharedMemory(slot.name, readonly=True) as raw:
        end = time.monotonic() + 60
        while not struct.unpack_from("=I", raw.buf, offset)[0] & bit:
            assert time.monotonic() < end, "the watcher never slept in Slot.wait"
            time.sleep(0.001)   # pacing a poll with a deadline, not a guess


def test_watch_output_formats(pyshm_name):
    with pyshm.Slot(pyshm_name, create=True, size=64) as slot:
        result = pyshm_cli("watch", pyshm_name, "--timeout", "0")
        assert result.returncode == 0 and result.stdout == b""   # nothing published yet
        slot.publish(bytes.fromhex("0100000000000000" "0200000000000000" "030000"))
        result = pyshm_cli("watch", pyshm_name, "--count", "1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().replace("\r\n", "\n") == (
            "generation 1, 19 bytes: 0100000000000000 0200000000000000 030000\n")
        slot.publish(b"raw\x00bytes\n")
        result = pyshm_cli("watch", pyshm_name, "--raw", "--count", "1")
        assert result.returncode == 0 and result.stdout == b"raw\x00bytes\n\n"
        slot.publish(b"")
        result = pyshm_cli("watch", pyshm_name, "--timeout", "0")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().rstrip() == "generation 3, 0 bytes: (empty)"
        result = pyshm_cli("watch", pyshm_name, "--json", "--timeout", "0.05")
        assert result.stdout.decode().rstrip() == '{"generation": 3, "length": 0, "hex": ""}'


def test_watch_errors(pyshm_name, pyshm_names):
    missing = () if WINDOWS else ("No such file",)
    assert_clean_error(pyshm_cli("watch", pyshm_name), "watch", *missing, pyshm_name)
    assert_clean_error(pyshm_cli("watch", pyshm_name, "--wait", "0.05"), "watch", pyshm_name,
                       "within wait=0.05 seconds")
    chan, raw = pyshm_names(), pyshm_names()
    with pyshm.Channel(chan, create=True, capacity=64), \
            pyshm.SharedMemory(raw, create=True, size=4096):
        assert_clean_error(pyshm_cli("watch", chan), "watch", "channel, not a slot")
        assert_clean_error(pyshm_cli("watch", raw), "watch", "not a pyshm slot")
    for bad in (["--count", "0"], ["--wait", "-1"], ["--wait", "inf"], ["--json", "--raw"],
                ["--timeout", "x"]):
        result = pyshm_cli("watch", pyshm_name, *bad)
        assert result.returncode == 2 and b"Traceback" not in result.stderr, bad
