"""Targets of the 'spawn' children in test_processes.py (importable by name)."""

import os


def answer(slot):
    """Read the slot that arrived pickled by name and publish an answer."""
    seen = slot.read()
    slot.publish(b"child %d read: " % os.getpid() + seen)
    slot.close()
