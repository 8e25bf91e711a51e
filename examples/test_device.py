"""A Python test harness for a native program: examples/device.c.

The device publishes its state -- a C struct -- through a pyshm.Slot and
answers commands on two pyshm.Channel objects.  This harness starts it,
reads the struct into a ctypes.Structure of the same layout
(Slot.readinto), and checks what each command does.  Every read returns one
whole state as the device published it, never a mix of two, so the checks
may compare its fields with each other.

Run it (examples/README.md):

    pytest examples/test_device.py

It looks for the program in DEVICE_PROGRAM, else next to this file
(device, or device.exe on Windows), and skips when it is not built.  The
names, the child process and their clean-up come from pyshm's pytest
plugin (pyshm_name, pyshm_child).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

import pyshm

DEADLINE = 60.0     # seconds: generous, for a loaded machine (never a measure)
PERIOD_MS = 5       # the device's step


class DeviceState(ctypes.Structure):
    """struct device_state of device.c, field for field."""

    _fields_ = [
        ("step", ctypes.c_uint64),
        ("commands", ctypes.c_uint64),
        ("position", ctypes.c_double),
        ("target", ctypes.c_double),
        ("speed", ctypes.c_double),
        ("moving", ctypes.c_int32),
        ("error", ctypes.c_int32),
        ("label", ctypes.c_char * 16),
    ]


# device.c: enum { ERR_UNKNOWN = 1, ERR_NUMBER, ERR_SPEED, ERR_LABEL }
ERR_UNKNOWN, ERR_NUMBER, ERR_SPEED, ERR_LABEL = 1, 2, 3, 4


def program() -> str:
    """The built device, or a skip that says how to build it."""
    given = os.environ.get("DEVICE_PROGRAM")
    if given:
        return given
    here = Path(__file__).resolve().parent
    built = here / ("device.exe" if sys.platform == "win32" else "device")
    if not built.is_file():
        pytest.skip(f"build the device first (examples/README.md): no {built}")
    return str(built)


class Device:
    """The running device, as the harness sees it."""

    def __init__(self, proc, slot: pyshm.Slot, commands: pyshm.Channel,
                 answers: pyshm.Channel) -> None:
        self.proc = proc
        self.slot, self.commands, self.answers = slot, commands, answers

    def state(self) -> DeviceState:
        """The newest state: one whole struct."""
        st = DeviceState()
        assert self.slot.readinto(st) == ctypes.sizeof(st)
        check(st)
        return st

    def command(self, text: str) -> str:
        """Send one command, return the device's answer to it."""
        self.commands.send(text.encode(), timeout=DEADLINE)
        return self.answers.recv(timeout=DEADLINE).decode()

    def states_until(self, done, what: str) -> Iterator[DeviceState]:
        """Each new state (sleeping in Slot.wait in between) until DONE(state)."""
        end = time.monotonic() + DEADLINE
        while True:
            seen = self.slot.generation     # before the read: no publish is missed
            st = self.state()
            yield st
            if done(st):
                return
            assert time.monotonic() < end, f"{what}: not within {DEADLINE} s"
            self.slot.wait(seen, timeout=DEADLINE)


def check(st: DeviceState) -> None:
    """What holds in every state the device publishes: a torn read (half of
    one state, half of another) would break it sooner or later."""
    assert st.moving == (st.position != st.target), (st.position, st.target, st.moving)
    assert st.speed > 0


@pytest.fixture
def device(pyshm_name: str, pyshm_child) -> Iterator[Device]:
    """The device running under a fresh name, and the harness's ends of its
    slot and channels; afterwards the device is stopped (killed if it does
    not quit) and every name it made is removed."""
    proc = pyshm_child.command(program(), pyshm_name, PERIOD_MS)
    try:
        # The device makes its names when it starts: wait= sleeps until
        # each exists (instead of a polling loop around FileNotFoundError).
        with pyshm.Slot(pyshm_name, wait=DEADLINE) as slot, \
                pyshm.Channel(f"{pyshm_name}-cmd", wait=DEADLINE) as commands, \
                pyshm.Channel(f"{pyshm_name}-reply", wait=DEADLINE) as answers:
            slot.wait(0, timeout=DEADLINE)      # its first state
            yield Device(proc, slot, commands, answers)
    finally:
        proc.reap()
        for suffix in ("", "-cmd", "-reply"):
            try:
                pyshm.unlink(pyshm_name + suffix)
            except FileNotFoundError:
                pass


def test_layout_matches_the_c_struct():
    assert ctypes.sizeof(DeviceState) == 64     # device.c checks the same at compile time


def test_publishes_its_state(device):
    first = device.state()
    assert first.label == b"axis" and first.speed == 1.0 and first.commands == 0
    assert first.position == first.target == 0.0
    # A step every PERIOD_MS, each published: wait() returns a newer one.
    gen = device.slot.generation
    assert device.slot.wait(gen, timeout=DEADLINE) > gen
    assert device.state().step > first.step


def test_moves_to_the_target_at_its_speed(device):
    assert device.command("speed 0.5") == "ok"
    assert device.command("move 3") == "ok"
    # Published before the answer: the command's effect is there now.
    st = device.state()
    assert st.commands == 2 and st.speed == 0.5 and st.target == 3.0
    last = st
    for st in device.states_until(lambda s: not s.moving, "reaching 3.0"):
        # Never backwards, never more than a step's worth per step.
        assert last.position <= st.position <= 3.0
        assert st.position - last.position <= 0.5 * (st.step - last.step)
        last = st
    assert st.position == 3.0 and st.moving == 0


def test_stop_holds_the_position(device):
    assert device.command("speed 0.001") == "ok"
    assert device.command("move 1000") == "ok"
    assert device.command("stop") == "ok"
    st = device.state()
    assert st.moving == 0 and st.target == st.position < 1000


def test_label(device):
    assert device.command("label X-1") == "ok"
    assert device.state().label == b"X-1"


@pytest.mark.parametrize("command, answer, error", [
    ("fly", "error unknown command: fly", ERR_UNKNOWN),
    ("move north", "error not a number: north", ERR_NUMBER),
    ("move nan", "error not a number: nan", ERR_NUMBER),
    ("speed -1", "error speed must be positive", ERR_SPEED),
    ("label " + "x" * 16, "error label longer than 15 bytes", ERR_LABEL),
])
def test_refuses_bad_commands(device, command, answer, error):
    before = device.state()
    assert device.command(command) == answer
    st = device.state()
    assert st.error == error and st.commands == before.commands + 1
    assert (st.target, st.speed, st.label) == (before.target, before.speed, before.label)


def test_quit(device, pyshm_name):
    assert device.command("quit") == "bye"
    assert device.state().commands == 1
    assert device.proc.wait(DEADLINE) == 0
    if sys.platform != "win32":
        # It removed its names (a Windows name goes with its last handle:
        # this harness still holds them).
        with pytest.raises(FileNotFoundError):
            pyshm.Slot(pyshm_name)
