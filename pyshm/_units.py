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


def human_size(n: int) -> str:
    """Bytes for a person to read: exact when a binary unit divides them
    ('256 MiB', '100 B'), else three significant digits ('1.50 KiB',
    '10.2 MiB', '123 GiB').  Tables print this; --bytes and JSON the exact
    count."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            if n % (1 << shift) == 0:
                return f"{n >> shift} {unit}"
            value = n / (1 << shift)
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{n} B"


def parse_mode(text: str) -> int:
    """Permission bits in octal as chmod takes them: '640', '0640', '0o640'.

    Raises argparse.ArgumentTypeError (an argparse ``type=``)."""
    digits = text.strip().lower()
    if digits.startswith("0o"):
        digits = digits[2:]
    if not digits or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o7777:
        raise argparse.ArgumentTypeError(
            f"not a mode: {text!r} (octal permission bits, e.g. 600, 0640, 0o660)")
    return int(digits, 8)
