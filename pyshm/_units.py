"""Sizes as people type them on the command line, and as the tools print them.

One syntax for every size pyshm's programs accept (the CLI's sizes and
offsets, the benchmark's ``--sizes`` and ``--shm-size``), so that what works
in one place works in the other.
"""

from __future__ import annotations

import argparse
import re

# A decimal or 0x-hex number, then an optional binary unit: K, M, G or T,
# each with an optional "i" and "B" (K, KB, KiB, KIB all mean 1024), or a
# lone "B".  Case does not matter; white space around and between is fine.
_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*(?:([kmgt])i?b?|b)?\s*$", re.IGNORECASE)
_SHIFTS = {None: 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(text: str) -> int:
    """'4096', '0x100', '64K', '4KiB', '1mb', '2 G' -> bytes (binary units).

    Raises argparse.ArgumentTypeError (it serves as an argparse ``type=``),
    whose text argparse prints as it is.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (e.g. 4096, 0x100, 64K, 4KiB, 1MiB)")
    number, unit = match.groups()
    # Base 16 only after "0x": a decimal with leading zeros ("007") is decimal.
    value = int(number, 16 if number[:2].lower() == "0x" else 10)
    return value << _SHIFTS[unit and unit.lower()]


def fmt_size(n: int) -> str:
    """Bytes as the largest binary unit that divides them: '4 KiB', '100 B'."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"
