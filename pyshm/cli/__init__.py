"""Command line: python -m pyshm COMMAND (also installed as `pyshm`).

This module builds the parser, runs a command and turns its errors into one
line and an exit status; it also holds the helpers the commands share.  The
commands live one group to a module: ``segments`` (ls, info, create, write,
cat, rm), ``channels`` (send, recv), ``slots`` (watch), ``demo`` (demo and
its child roles);
``bench`` is :mod:`pyshm.bench`.  Each module has ``add_commands(command)``,
which declares its commands through the ``command`` function given to it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import unicodedata
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import pyshm

Handler = Callable[[argparse.Namespace], int]

# Exit statuses, for scripts (also in --help and docs/cli.md).
EXIT_OK = 0
EXIT_ERROR = 1          # what was asked failed: one line on stderr says why
EXIT_USAGE = 2          # bad command line (argparse: usage and an error line)
EXIT_TIMEOUT = 3        # a --timeout ran out (send, recv): nothing was sent or received
                        # (watch --timeout is its normal end: 0)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

EXIT_STATUS_HELP = """\
exit status:
  0    success
  1    error: one line on standard error names what failed
  2    usage error: the usage and an error line on standard error
  3    timeout: send or recv --timeout ran out (nothing sent or received)
  130  interrupted (Ctrl-C)"""


class Command(Protocol):
    """What add_commands is given: declares one command, returns its parser."""

    def __call__(self, name: str, func: Handler, help: str,
                 description: str = "") -> argparse.ArgumentParser: ...


# ---- helpers the commands share -------------------------------------------------

def _message(exc: BaseException) -> str:
    """One line for an error: an OSError's text with its name, else str(exc)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename!r}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _shown(name: str) -> str:
    """NAME as a table or message shows it: as it is when that is
    unambiguous, shell-quoted when it has spaces or quotes ('my jobs'), and
    escaped like a Python string when it has control characters or bytes
    that are not text (which would break the table)."""
    if not name.isprintable():
        return repr(name)
    if name and all(c.isalnum() or c in "._-+=:,@%^" for c in name):
        return name
    return shlex.quote(name)


def _width(text: str) -> int:
    """Columns TEXT takes on a terminal: East Asian wide and full-width
    characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _table(rows: List[Tuple[str, ...]]) -> None:
    """Print ROWS (the first is the header) in aligned columns: every cell
    padded to its column's widest, by display width."""
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell + " " * (w - _width(cell)) for cell, w in zip(row, widths)]
        print("  ".join(cells).rstrip())


def _timeout(text: str) -> Optional[float]:
    """An argparse type: seconds >= 0, or none/forever/inf for no limit."""
    if text.lower() in ("none", "forever", "inf"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:      # also refuses NaN
        raise argparse.ArgumentTypeError(f"timeout must be >= 0 seconds, not {text!r}")
    return value


def _input_bytes(data: Optional[str]) -> bytes:
    """DATA as UTF-8, or when it is absent all of standard input."""
    if data is not None:
        return data.encode()
    return sys.stdin.buffer.read()


def _output_bytes(data: bytes) -> None:
    """Raw bytes to standard output, flushed (a closed pipe raises here, in main)."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _output_for_a_person(data: bytes) -> None:
    """Raw bytes to standard output, as _output_bytes; on a terminal a newline
    follows them when they do not end with one, so that the shell's prompt
    starts a line of its own.  A pipe or a file gets exactly the bytes."""
    if data.endswith(b"\n") or not sys.stdout.isatty():
        _output_bytes(data)
    else:
        _output_bytes(data + b"\n")


# ---- entry point ----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: each command module imports the helpers
    # above from this package.
    from pyshm import bench
    from pyshm.cli import channels, demo, segments, slots

    parser = argparse.ArgumentParser(
        prog="pyshm", description="Named shared memory, channels and slots between processes.",
        epilog=EXIT_STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pyshm {pyshm.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, func: Handler, help: str,
                description: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help,
                           epilog=EXIT_STATUS_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    segments.add_commands(command)
    channels.add_commands(command)
    slots.add_commands(command)
    bench.add_arguments(command(
        "bench", bench.run, "measure pyshm against multiprocessing, sockets and the stdlib",
        "Measure, between two processes and in one run, pyshm against "
        "multiprocessing.Pipe and Queue, socketpair and the standard library's "
        "shared_memory; print every figure with its ratio."))
    demo.add_commands(command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)     # usage errors argparse cannot see: exit 2 like its own
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"pyshm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TimeoutError as exc:     # an OSError: caught before those
        print(f"pyshm {args.command}: {_message(exc)}", file=sys.stderr)
        return EXIT_TIMEOUT
    except BrokenPipeError:
        # The reader went away (e.g. `pyshm cat X | head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (OSError, ValueError, TypeError, BufferError, pyshm.ProtocolError) as exc:
        print(f"pyshm {args.command}: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
