"""SharedMemory under bad input, a full /dev/shm, and many cycles (issue: reliability)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyshm
from conftest import assert_cycles_leak_nothing, child_env, new_name, remove_quietly

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

SIZE = 97  # odd on purpose: no alignment luck


# ---- property: reads and writes behave like a bytearray of the same size ------

op = st.one_of(
    st.tuples(st.just("write"), st.integers(-3, SIZE + 3), st.binary(max_size=SIZE + 4)),
    st.tuples(st.just("read"), st.integers(-3, SIZE + 3), st.integers(-3, SIZE + 4)),
    st.tuples(st.just("readinto"), st.integers(-3, SIZE + 3), st.integers(0, SIZE + 4)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=25))
def test_read_write_match_a_bytearray_model(ops):
    name = new_name()
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
        remove_quietly(name)


@settings(max_examples=150, deadline=None)
@given(value=st.one_of(st.none(), st.floats(allow_nan=True), st.text(max_size=3),
                       st.integers(min_value=-(2**70), max_value=2**70), st.binary(max_size=3),
                       st.lists(st.integers(), max_size=2)))
def test_any_offset_value_gives_a_clean_exception_or_works(value):
    name = new_name()
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
        remove_quietly(name)


# ---- a full /dev/shm is an error at create, never SIGBUS later ---------------------

SMALL_TMPFS = r"""
import errno, sys, pyshm
try:
    pyshm.SharedMemory("toolarge", create=True, size=8 << 20)
except OSError as e:
    print("refused", e.errno == errno.ENOSPC, e.filename)
import os
print("left", sorted(os.listdir("/dev/shm")))
s = pyshm.SharedMemory("fits", create=True, size=3 << 20)
s.write(b"x" * (3 << 20))          # every page was reserved: no SIGBUS
print("wrote", len(s.read()))
try:
    pyshm.SharedMemory("nomore", create=True, size=2 << 20)
except OSError as e:
    print("refused", e.errno == errno.ENOSPC, e.filename)
s.close()
"""


@linux_only
def test_full_dev_shm_refuses_create_instead_of_sigbus():
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a small private /dev/shm")
    # A private mount namespace: a 4 MiB tmpfs over /dev/shm for the child only.
    script = f"mount -t tmpfs -o size=4M tmpfs /dev/shm && exec {sys.executable} -c '{SMALL_TMPFS}'"
    probe = subprocess.run([unshare, "-m", "sh", "-c", "mount -t tmpfs -o size=4M tmpfs /dev/shm"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()}")
    result = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True,
                            text=True, env=child_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "refused True toolarge",
        "left []",                    # the failed create left no name behind
        f"wrote {3 << 20}",
        "refused True nomore",
    ]


# ---- leaks: many cycles keep descriptors, names and memory flat ---------------------

@linux_only
def test_twenty_thousand_cycles_leak_nothing():
    name = new_name()

    def cycle(i: int) -> None:
        with pyshm.SharedMemory(name, create=True, size=4096) as a:
            a.write(i.to_bytes(8, "little"))
            with pyshm.SharedMemory(name, readonly=True) as b:
                view = b.buf
                assert view[:8] == i.to_bytes(8, "little")
                view.release()
                assert b.read(8) == i.to_bytes(8, "little")
            try:
                pyshm.SharedMemory(name, create=True, size=4096)
            except FileExistsError:
                pass
            a.unlink()

    assert_cycles_leak_nothing(cycle)
