"""SharedMemory under bad input and OS refusals: DESIGN.md's error table.

Every wrong argument gets the exception the table names (TypeError for a
wrong type, ValueError for a bad value or a closed object, the matching
OSError subclass with ``filename`` when the OS refuses), writes nothing and
leaves no name behind; hypothesis then tries any offset and size, valid or
not, against a bytearray model; a full /dev/shm is refused at create, never
a SIGBUS later.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm
from pyshm._subprocess import child_env

WINDOWS = sys.platform == "win32"

SIZE = 97  # odd on purpose: no alignment luck


# ---- the error table ---------------------------------------------------------------

def test_readonly_with_create_is_value_error(pyshm_name):
    with pytest.raises(ValueError, match="readonly"):
        pyshm.SharedMemory(pyshm_name, create=True, size=8, readonly=True)
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


def test_open_missing_is_file_not_found(pyshm_name):
    with pytest.raises(FileNotFoundError) as info:
        pyshm.SharedMemory(pyshm_name)
    assert info.value.filename == pyshm_name
    assert info.value.errno == errno.ENOENT


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="POSIX permission bits set through /dev/shm (Linux); Windows objects "
                           "get the default DACL, and Wine checks no permissions")
def test_permission_denied_is_permission_error(pyshm_name, pyshm_child):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8):
        if os.geteuid() == 0:
            # root ignores permission bits: ask an unprivileged child.
            code = (
                "import os, sys, pyshm\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "try:\n"
                "    pyshm.SharedMemory(sys.argv[1])\n"
                "except PermissionError as e:\n"
                "    print('PermissionError', e.filename)\n"
            )
            proc = pyshm_child(code, pyshm_name)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert out.split() == ["PermissionError", pyshm_name]
        else:
            os.chmod(f"/dev/shm/{pyshm_name}", 0)
            with pytest.raises(PermissionError) as info:
                pyshm.SharedMemory(pyshm_name)
            assert info.value.filename == pyshm_name


@pytest.mark.skipif(not (sys.platform.startswith("linux") or WINDOWS),
                    reason="pages reserved at create: posix_fallocate on Linux, the page "
                           "file's commit on Windows; other systems may overcommit")
def test_no_space_is_oserror_and_leaves_nothing(pyshm_name):
    # Far more than /dev/shm holds (Linux: posix_fallocate refuses at create
    # time, and the half-made name is removed again) or than the page file
    # can commit (Windows: CreateFileMappingW refuses, nothing is made).
    with pytest.raises(OSError) as info:
        pyshm.SharedMemory(pyshm_name, create=True, size=1 << 46)
    if WINDOWS:
        # ERROR_NOT_ENOUGH_MEMORY (Wine), ERROR_COMMITMENT_LIMIT (Windows)
        assert info.value.winerror in (8, 1455)  # type: ignore[attr-defined]
    else:
        assert info.value.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM)
        assert not os.path.exists(f"/dev/shm/{pyshm_name}")
    assert info.value.filename == pyshm_name
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


@pytest.mark.parametrize("kwargs,match", [
    (dict(create=True, size=0), "positive"),
    (dict(create=True, size=-1), "negative"),
    (dict(create=True, size=2**63), "range"),
    (dict(create=True, size=2**64), "range"),
    (dict(create=True), "positive"),
    (dict(create=True, size=8, mode=-1), "negative"),
    (dict(create=True, size=8, mode=0o10000), "mode"),
])
def test_bad_values_are_value_errors(pyshm_name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pyshm.SharedMemory(pyshm_name, **kwargs)
    with pytest.raises(FileNotFoundError):      # nothing was made
        pyshm.SharedMemory(pyshm_name)


@pytest.mark.parametrize("name,match", [
    ("", "empty"), ("a/b", "'/'"), ("/lead", "'/'"), ("nul\0here", "NUL"),
    ("x" * 251, "too long"), (".", "'.'"), ("..", "'..'"),
])
def test_bad_names(name, match):
    with pytest.raises(ValueError, match=match):
        pyshm.SharedMemory(name, create=True, size=8)
    with pytest.raises(ValueError, match=match):
        pyshm.SharedMemory(name)
    with pytest.raises(ValueError, match=match):
        pyshm.unlink(name)


def test_name_none_without_create():
    with pytest.raises(ValueError, match="name"):
        pyshm.SharedMemory()


@pytest.mark.parametrize("name", [b"bytes", 12, 1.5])
def test_name_wrong_type(name):
    with pytest.raises(TypeError, match="name"):
        pyshm.SharedMemory(name, create=True, size=8)
    with pytest.raises(TypeError, match="name"):
        pyshm.unlink(name)


def test_write_range_errors_write_nothing(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16) as shm:
        with pytest.raises(ValueError, match="do not fit"):
            shm.write(b"x" * 17)
        with pytest.raises(ValueError, match="do not fit"):
            shm.write(b"xy", 15)
        with pytest.raises(ValueError, match="past the end"):
            shm.write(b"", 17)
        with pytest.raises(ValueError, match="negative"):
            shm.write(b"x", -1)
        with pytest.raises(ValueError, match="range"):
            shm.write(b"x", 2**63)
        with pytest.raises(ValueError, match="range"):
            shm.write(b"x", 2**64)
        assert shm.read() == bytes(16)


def test_read_range_errors(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16) as shm:
        with pytest.raises(ValueError):
            shm.read(17)
        with pytest.raises(ValueError):
            shm.read(1, 16)
        with pytest.raises(ValueError):
            shm.read(-2)
        with pytest.raises(ValueError):
            shm.read(offset=17)
        with pytest.raises(ValueError):
            shm.read(2**63 - 1, 2)
        with pytest.raises(ValueError):
            shm.readinto(bytearray(1), 17)
        assert shm.read(-1, 16) == b""


def test_wrong_types_are_type_errors(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16) as shm:
        with pytest.raises(TypeError, match="encode"):
            shm.write("text")
        with pytest.raises(TypeError, match="bytes-like"):
            shm.write(12)
        with pytest.raises(TypeError, match="int"):
            shm.write(b"x", 1.0)
        with pytest.raises(TypeError, match="int"):
            shm.read("1")
        with pytest.raises(TypeError, match="writable"):
            shm.readinto(b"immutable")
        with pytest.raises(TypeError):
            shm.write()
        with pytest.raises(TypeError, match="unexpected keyword"):
            shm.write(b"x", where=1)
        with pytest.raises(TypeError, match="multiple values"):
            shm.write(b"x", 1, offset=2)
        with pytest.raises(TypeError, match="positional"):
            shm.read(1, 2, 3)


def test_closed_object_raises_value_error(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=16)
    shm.close()
    for call in (lambda: shm.write(b"x"), lambda: shm.read(),
                 lambda: shm.readinto(bytearray(1)), lambda: memoryview(shm)):
        with pytest.raises(ValueError, match="closed"):
            call()


class _ClosesOnIndex:
    """An integer argument whose conversion closes the segment: the call must
    see the closed segment (ValueError), not read or write a stale size."""

    def __init__(self, shm: pyshm.SharedMemory, value: int) -> None:
        self.shm, self.value = shm, value

    def __index__(self) -> int:
        self.shm.close()
        return self.value


@pytest.mark.parametrize("method", ["read-size", "read-offset", "write-offset",
                                   "readinto-offset"])
def test_closed_while_arguments_are_converted(pyshm_name, method):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=16)
    calls = {
        "read-size": lambda: shm.read(_ClosesOnIndex(shm, 4)),
        "read-offset": lambda: shm.read(4, _ClosesOnIndex(shm, 0)),
        "write-offset": lambda: shm.write(b"x", _ClosesOnIndex(shm, 0)),
        "readinto-offset": lambda: shm.readinto(bytearray(4), _ClosesOnIndex(shm, 0)),
    }
    with pytest.raises(ValueError, match="closed"):
        calls[method]()
    assert shm.closed


def test_range_errors_say_what_is_allowed(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        with pytest.raises(ValueError, match=r"size must be -1 \(to the end of the segment\) "
                           r"or a byte count >= 0, not -2"):
            shm.read(-2)
        with pytest.raises(ValueError, match=r"readinto\(\): offset 100 is past the end of "
                           r"the segment \(64 bytes"):
            shm.readinto(bytearray(8), offset=100)
        with pytest.raises(ValueError, match=r"read\(\): offset 65 is past the end"):
            shm.read(offset=65)
        with pytest.raises(ValueError, match=r"write\(\): offset 65 is past the end"):
            shm.write(b"", 65)
        with pytest.raises(ValueError, match=r"2 bytes at offset 63 do not fit in the segment "
                           r"of 64 bytes \(1 bytes from that offset\)"):
            shm.write(b"xy", 63)
        assert shm.readinto(bytearray(8), offset=64) == 0     # the end itself is fine


def test_existing_name_says_what_to_do(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16):
        with pytest.raises(FileExistsError) as info:
            pyshm.SharedMemory(pyshm_name, create=True, size=16)
        assert info.value.filename == pyshm_name
        assert info.value.errno == errno.EEXIST
        text = str(info.value)
        assert "exist_ok=True" in text and "pyshm rm NAME" in text and pyshm_name in text
        with pytest.raises(FileExistsError, match="exist_ok=True"):
            pyshm.Channel(pyshm_name, create=True)


# ---- names that are not segments (issue 19, point 5) -------------------------------

# Every way SharedMemory opens a name: for reading, for writing, and the open
# that create=True, exist_ok=True makes when the name is taken.
SEGMENT_OPENERS = [
    "pyshm.SharedMemory(name, readonly=True)",
    "pyshm.SharedMemory(name)",
    "pyshm.SharedMemory(name, create=True, size=64, exist_ok=True)",
]


def test_a_name_that_is_not_a_segment_is_refused_at_once(not_a_segment, answers_at_once):
    """A FIFO under the name used to block the read-only open in open(2) for
    ever (and the others waited a second for a size).  Each open now fails
    at once -- in a child with a deadline, so that a hang fails the test --
    with an OSError that names the name and what it is, and leaves it as it
    was."""
    entry = not_a_segment
    for result in answers_at_once(entry.name, SEGMENT_OPENERS):
        kind, code, text, filename = result[0], *result[1:]
        assert (kind, code, filename) == (
            "IsADirectoryError" if entry.errno == errno.EISDIR else "OSError",
            entry.errno, entry.name), result
        assert text.startswith(entry.what) and "not a shared-memory segment" in text, result
    assert entry.intact()


def test_existing_name_refused_without_exist_ok_when_not_a_segment(not_a_segment):
    """The name is taken, by whatever is there: an exclusive create says so
    (FileExistsError, as for a segment) and leaves it alone."""
    with pytest.raises(FileExistsError) as info:
        pyshm.SharedMemory(not_a_segment.name, create=True, size=64)
    assert info.value.filename == not_a_segment.name
    assert not_a_segment.intact()


# ---- exist_ok=True: never smaller than asked (issue 19, point 6) ----------------------

# What an opener sees of a segment of N bytes: Windows can tell a section's
# size only in whole pages (docs/windows.md, platform differences).
def seen_size(n: int) -> int:
    return -(-n // pyshm.PAGE_SIZE) * pyshm.PAGE_SIZE if WINDOWS else n


def test_exist_ok_on_a_smaller_segment_is_value_error_and_changes_nothing(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        shm.write(bytes(range(64)))
        have = seen_size(64)
        with pytest.raises(ValueError) as info:
            pyshm.SharedMemory(pyshm_name, create=True, size=have + 1, exist_ok=True)
        text = str(info.value)
        assert f"segment {pyshm_name!r} exists with size={have}" in text
        assert f"smaller than the size={have + 1} asked for" in text
        assert "nothing was changed" in text
        # Nothing truncated, resized or removed: the old size and bytes, by name.
        assert shm.read(64) == bytes(range(64))
        with pyshm.SharedMemory(pyshm_name) as again:
            assert again.size == have and again.read(64) == bytes(range(64))


@pytest.mark.parametrize("asked", [1, 63, 64])
def test_exist_ok_on_a_segment_as_large_or_larger_opens_it(pyshm_name, asked):
    """Raw segments: more than asked is fine (docs/channels.md, the exist_ok rule);
    the object has the existing size."""
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        shm.write(b"kept")
        with pyshm.SharedMemory(pyshm_name, create=True, size=asked, exist_ok=True) as same:
            assert same.size == seen_size(64) and same.read(4) == b"kept"


@pytest.mark.skipif(not WINDOWS, reason="Windows rule: sizes come back whole pages")
def test_exist_ok_counts_whole_pages_on_windows(pyshm_name):
    """A 64-byte section reads back as a page: asking for up to a page opens
    it (the object has a page, all of it usable); a byte more is refused."""
    page = pyshm.PAGE_SIZE
    with pyshm.SharedMemory(pyshm_name, create=True, size=64):
        with pyshm.SharedMemory(pyshm_name, create=True, size=page, exist_ok=True) as same:
            assert same.size == page
        with pytest.raises(ValueError, match=f"size={page}, smaller than the size={page + 1}"):
            pyshm.SharedMemory(pyshm_name, create=True, size=page + 1, exist_ok=True)


# ---- property: reads and writes behave like a bytearray of the same size ------

op = st.one_of(
    st.tuples(st.just("write"), st.integers(-3, SIZE + 3), st.binary(max_size=SIZE + 4)),
    st.tuples(st.just("read"), st.integers(-3, SIZE + 3), st.integers(-3, SIZE + 4)),
    st.tuples(st.just("readinto"), st.integers(-3, SIZE + 3), st.integers(0, SIZE + 4)),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=25))
def test_read_write_match_a_bytearray_model(pyshm_names, ops):
    name = pyshm_names()
    model = bytearray(SIZE)
    try:
        with pyshm.SharedMemory(name, create=True, size=SIZE) as shm:
            for kind, offset, arg in ops:
                if kind == "write":
                    fits = 0 <= offset and offset + len(arg) <= SIZE
                    if fits:
                        assert shm.write(arg, offset) == len(arg)
                        model[offset:offset + len(arg)] = arg
                    else:
                        with pytest.raises(ValueError):
                            shm.write(arg, offset)
                elif kind == "read":
                    size = arg
                    ok = 0 <= offset <= SIZE and (size == -1 or 0 <= size <= SIZE - offset)
                    if ok:
                        end = SIZE if size == -1 else offset + size
                        assert shm.read(size, offset) == bytes(model[offset:end])
                    else:
                        with pytest.raises(ValueError):
                            shm.read(size, offset)
                else:
                    buf = bytearray(b"\xaa" * arg)
                    if 0 <= offset <= SIZE:
                        n = min(arg, SIZE - offset)
                        assert shm.readinto(buf, offset) == n
                        assert buf[:n] == model[offset:offset + n]
                        assert buf[n:] == b"\xaa" * (arg - n)
                    else:
                        with pytest.raises(ValueError):
                            shm.readinto(buf, offset)
                assert shm.read() == bytes(model)
    finally:
        pyshm_names.remove(name)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.none(), st.floats(allow_nan=True), st.text(max_size=3),
                       st.integers(min_value=-(2**70), max_value=2**70), st.binary(max_size=3),
                       st.lists(st.integers(), max_size=2)))
def test_any_offset_value_gives_a_clean_exception_or_works(pyshm_names, value):
    name = pyshm_names()
    try:
        with pyshm.SharedMemory(name, create=True, size=16) as shm:
            for call in (lambda: shm.write(b"x", value), lambda: shm.read(1, value),
                         lambda: shm.read(value), lambda: shm.readinto(bytearray(1), value)):
                try:
                    call()
                except (TypeError, ValueError):
                    pass
            assert shm.read(0) == b""
    finally:
        pyshm_names.remove(name)


# ---- a full /dev/shm is an error at create, never SIGBUS later ---------------------

SMALL_TMPFS = r"""
import errno, sys, pyshm
toolarge, fits, nomore = sys.argv[1:4]
try:
    pyshm.SharedMemory(toolarge, create=True, size=8 << 20)
except OSError as e:
    print("refused", e.errno == errno.ENOSPC, e.filename)
import os
print("left", sorted(os.listdir("/dev/shm")))
s = pyshm.SharedMemory(fits, create=True, size=3 << 20)
s.write(b"x" * (3 << 20))          # every page was reserved: no SIGBUS
print("wrote", len(s.read()))
try:
    pyshm.SharedMemory(nomore, create=True, size=2 << 20)
except OSError as e:
    print("refused", e.errno == errno.ENOSPC, e.filename)
s.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="mounts a small tmpfs over /dev/shm (Linux); Windows commits a "
                           "section's pages at create (test_no_space_is_oserror_and_leaves_nothing)")
def test_full_dev_shm_refuses_create_instead_of_sigbus(pyshm_names):
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a small private /dev/shm")
    # A private mount namespace: a 4 MiB tmpfs over /dev/shm for the child only.
    script = (f"mount -t tmpfs -o size=4M tmpfs /dev/shm && "
              f"exec {sys.executable} -c '{SMALL_TMPFS}' \"$@\"")
    toolarge, fits, nomore = pyshm_names(), pyshm_names(), pyshm_names()
    probe = subprocess.run([unshare, "-m", "sh", "-c", "mount -t tmpfs -o size=4M tmpfs /dev/shm"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()}")
    result = subprocess.run([unshare, "-m", "sh", "-c", script, "sh", toolarge, fits, nomore],
                            capture_output=True, text=True, env=child_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"refused True {toolarge}",
        "left []",                    # the failed create left no name behind
        f"wrote {3 << 20}",
        f"refused True {nomore}",
    ]
