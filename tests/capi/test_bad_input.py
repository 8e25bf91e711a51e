"""Every bad input of the C API returns an error code with a message, never a
crash: the peer's own checks (NULL pointers, bad names and sizes, too-small
buffers, too-large data, timeouts), and what only Python can set up -- a
channel opened as a slot and the reverse, a raw segment, another format
version -- each refused by its kind, naming what it found."""

from __future__ import annotations

import os
import struct
import subprocess

import pytest

import pyshm

from .peer import EINVAL, EPROTOCOL, capi_peer, error_of  # noqa: F401 (capi_peer: a fixture)

# The first words of both headers (docs/format.md): magic, version.
MAGIC_AND_VERSION = struct.Struct("<II")


def run(peer, *args) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([str(peer), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_every_bad_input_is_an_error_code_with_a_message(capi_peer, pyshm_name):
    proc = subprocess.run([str(capi_peer), "checks"], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYSHM_TEST_PREFIX=pyshm_name))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[-1] == "all passed", proc.stdout + proc.stderr
    assert not [line for line in lines if line.startswith("FAIL")]
    assert len([line for line in lines if line.startswith("ok ")]) >= 60


def test_a_python_channel_opened_as_a_slot(capi_peer, pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=4096):
        proc = run(capi_peer, "open", "slot", "open", pyshm_name, 0)
        code, message = error_of(proc.stdout.strip())
        assert proc.returncode == 1 and code == EPROTOCOL
        assert message == f"{pyshm_name}: the segment is a channel, not a slot (open it as a Channel)"
        # The channel is untouched: still a channel to Python and to C.
        assert run(capi_peer, "open", "channel", "open", pyshm_name, 0).stdout == "opened 4096\n"


def test_a_native_slot_opened_as_a_channel(capi_peer, pyshm_name):
    """A slot made by the native side, refused by Python's Channel and by the
    C API's channel call, each naming the kind it found."""
    writer = subprocess.Popen([str(capi_peer), "publish", pyshm_name, "256", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        with pytest.raises(pyshm.ProtocolError, match="the segment is a slot, not a channel"):
            pyshm.Channel(pyshm_name)
        code, message = error_of(run(capi_peer, "open", "channel", "open", pyshm_name, 0).stdout)
        assert code == EPROTOCOL and "is a slot, not a channel" in message
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()


@pytest.mark.parametrize("kind", ["slot", "channel"])
def test_a_raw_segment_is_neither(capi_peer, pyshm_name, kind):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8192):
        code, message = error_of(run(capi_peer, "open", kind, "open", pyshm_name, 0).stdout)
        assert code == EPROTOCOL
        assert message.startswith(f"{pyshm_name}: not a pyshm {kind}: its header has no magic")


@pytest.mark.parametrize("version", [2, 4, 99])
def test_a_channel_of_another_version_names_both(capi_peer, pyshm_name, version):
    with pyshm.Channel(pyshm_name, create=True, capacity=1024), \
            pyshm.SharedMemory(pyshm_name) as raw:
        magic, ours = MAGIC_AND_VERSION.unpack(raw.read(8))
        raw.write(MAGIC_AND_VERSION.pack(magic, version))
        code, message = error_of(run(capi_peer, "open", "channel", "open", pyshm_name, 0).stdout)
        assert code == EPROTOCOL
        assert message == (f"{pyshm_name}: a pyshm channel of format version {version}; this "
                           f"library (pyshm {pyshm.__version__}) speaks version {ours}")
        raw.write(MAGIC_AND_VERSION.pack(magic, ours))
        assert run(capi_peer, "open", "channel", "open", pyshm_name, 0).returncode == 0


def test_a_slot_of_another_version_names_both(capi_peer, pyshm_name):
    writer = subprocess.Popen([str(capi_peer), "publish", pyshm_name, "64", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        with pyshm.SharedMemory(pyshm_name) as raw:
            magic, ours = MAGIC_AND_VERSION.unpack(raw.read(8))
            raw.write(MAGIC_AND_VERSION.pack(magic, ours + 1))
            code, message = error_of(run(capi_peer, "open", "slot", "open", pyshm_name,
                                         0).stdout)
            assert code == EPROTOCOL
            assert message == (f"{pyshm_name}: a pyshm slot of format version {ours + 1}; this "
                               f"library (pyshm {pyshm.__version__}) speaks version {ours}")
            raw.write(MAGIC_AND_VERSION.pack(magic, ours))
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()


def test_missing_names_and_sizes(capi_peer, pyshm_name):
    code, message = error_of(run(capi_peer, "open", "slot", "open", pyshm_name, 0).stdout)
    assert code == 2 and message.startswith(f"{pyshm_name}: ")     # ENOENT / ERROR_FILE_NOT_FOUND
    code, message = error_of(run(capi_peer, "open", "slot", "create", pyshm_name, 0).stdout)
    assert code == EINVAL and "size must be positive" in message
    code, message = error_of(run(capi_peer, "open", "channel", "create", pyshm_name, 8).stdout)
    assert code == EINVAL and "capacity is too small" in message
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)      # nothing half-made was left behind


def test_an_existing_channel_smaller_than_asked(capi_peer, pyshm_name):
    with pyshm.Channel(pyshm_name, create=True, capacity=1024):
        code, message = error_of(run(capi_peer, "open", "channel", "either", pyshm_name,
                                     2048).stdout)
        assert code == EINVAL and "capacity of 1024 bytes, less than the 2048" in message
        assert run(capi_peer, "open", "channel", "either", pyshm_name, 1024).stdout == \
            "opened 1024\n"
