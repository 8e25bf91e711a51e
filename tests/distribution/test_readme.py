"""The README is true when followed: its examples run as written.

How the README marks its examples (an HTML comment on the line before the
fence, invisible when rendered):

* a ```python block without a mark is one program, run as is;
* ``<!-- readme-test: processes -->``: the block is split at its
  ``# process N`` lines into programs run as separate processes: process 1
  first, until it waits in ``input()`` (its prompt appears), then each other
  one to its end, then process 1 gets its Enter and finishes.  These run
  twice in a row and must leave no name behind;
* ``<!-- readme-test: shell -->`` on a ```console block: each ``$ `` line
  runs in bash (``pyshm`` and ``python`` are this interpreter), and its
  output (stdout and stderr) must be the lines that follow it;
* ``<!-- readme-test: native -->`` on a ```c block: a native program,
  built from ``pyshm.get_include()`` with the command its first comment
  gives (``/* NAME.c:  cc NAME.c ... -o NAME */``); the
  ``<!-- readme-test: native-harness -->`` python block after it runs in the
  folder where the program was built (POSIX: no compiler runs inside
  Windows, where examples/ covers the native end);
* a python block with ``def test_`` is the pytest example, run by
  tests/tools/test_plugin.py; other fences (commands to type, sample output)
  are not run.

Every ``# prints X`` comment must match a line the program printed.  The
segment names in the examples are swapped for this session's unique names.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

import pyshm
from pyshm._subprocess import child_env

DEADLINE = 60.0

FENCE = re.compile(r"^(?:<!-- readme-test: ([\w-]+) -->\n)?```(\w*)\n(.*?)^```[ \t]*$",
                   re.S | re.M)
PRINTS = re.compile(r"#\s*prints (.+?)\s*$", re.M)
PROCESS = re.compile(r"^# process (\d+)", re.M)
PROMPT = re.compile(r"""input\((["'])(.*?)\1\)""")
# Where the examples name segments: the first argument of the constructors,
# and the NAME of a command.
PY_NAME = re.compile(r"""(?:SharedMemory|Channel|Slot)\(\s*(["'])([^"']+)\1""")
# The first comment of a native example: its file and its build command.
NATIVE_BUILD = re.compile(r"^/\* (\w+)\.c:\s+(cc \1\.c .*?) \*/$", re.M)
SHELL_NAME = re.compile(r"\bpyshm (?:create|send|recv|info|rm|write|cat) ([^\s;|&]+)")


@dataclass
class Example:
    kind: str       # "python", "processes", "shell", "native", "native-harness",
                    # "pytest", "" (not run)
    text: str
    line: int       # where it starts in the README

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind})"


def examples(readme: Path) -> List[Example]:
    text = readme.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        mark, lang, body = m.groups()
        kind = mark or ("pytest" if lang == "python" and "def test_" in body else
                        "python" if lang == "python" else "")
        assert kind in ("python", "processes", "shell", "native", "native-harness", "pytest",
                        ""), kind
        found.append(Example(kind, body, text.count("\n", 0, m.start()) + 1))
    return found


@pytest.fixture(scope="module")
def readme_examples(source_dir: Path) -> List[Example]:
    return examples(source_dir / "README.md")


def renamed(text: str, names: Dict[str, str], shell: bool) -> str:
    """TEXT with each README name replaced by its unique stand-in: as a whole
    word in shell lines, as a quoted string (or shown repr) in Python."""
    for old, new in names.items():
        if shell:
            text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
        else:
            text = text.replace(f'"{old}"', f'"{new}"').replace(f"'{old}'", f"'{new}'")
    return text


def unique_names(example: Example, pyshm_names) -> Dict[str, str]:
    pattern = SHELL_NAME if example.kind == "shell" else PY_NAME
    found = [m.group(m.lastindex or 0) for m in pattern.finditer(example.text)]
    return {name: pyshm_names() for name in dict.fromkeys(found)}


def check_prints(program: str, out: str, where: str) -> None:
    lines = [line.rstrip() for line in out.splitlines()]
    for expected in PRINTS.findall(program):
        assert expected in lines, f"{where}: expected a line {expected!r}; it printed:\n{out}"


def run_program(program: str, where: str, cwd: "Path | None" = None) -> str:
    # From a file, as a reader would save and run it: multiprocessing's
    # 'spawn' children import the main module by its path.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.py"
        path.write_text(program, encoding="utf-8")
        result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                env=child_env(), timeout=DEADLINE, cwd=cwd)
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
    check_prints(program, result.stdout, where)
    return result.stdout


class Waiting:
    """Process 1 of an example: runs until it prints its input() prompt (no
    newline follows it), then waits for Enter."""

    def __init__(self, program: str, where: str) -> None:
        self.program, self.where = program, where
        self.proc = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=child_env(PYTHONUNBUFFERED="1"))
        self.out = bytearray()
        self.prompt = ""
        self.seen = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 4096)
            with self.seen:
                if chunk:
                    self.out += chunk
                self.seen.notify_all()
            if not chunk:
                return

    def wait_for(self, text: str) -> None:
        self.prompt = text
        end = time.monotonic() + DEADLINE
        with self.seen:
            while text.encode() not in self.out:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    self.kill()
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    pytest.fail(f"{self.where}: no prompt {text!r}; it printed "
                                f"{bytes(self.out)!r}; stderr:\n{err}")
                self.seen.wait(min(left, 0.5))

    def finish(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        self.proc.wait(DEADLINE)
        self.reader.join(DEADLINE)
        # On a terminal the Enter would end the prompt's line.
        out = self.out.decode().replace(self.prompt, self.prompt + "\n", 1)
        assert self.proc.returncode == 0, f"{self.where} failed:\n{err}"
        check_prints(self.program, out, self.where)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_processes(text: str, where: str) -> None:
    parts = PROCESS.split(text)
    programs = [(int(n), body) for n, body in zip(parts[1::2], parts[2::2])]
    assert [n for n, _ in programs] == list(range(1, len(programs) + 1)), where
    first = f"# process 1{programs[0][1]}"
    prompt = PROMPT.search(first)
    assert prompt, f"{where}: process 1 waits in input() for the others"
    waiting = Waiting(first, f"{where} process 1")
    try:
        waiting.wait_for(prompt.group(2))
        for n, body in programs[1:]:
            run_program(f"# process {n}{body}", f"{where} process {n}")
        waiting.finish()
    finally:
        waiting.kill()


def test_readme_has_the_examples_it_promises(readme_examples):
    kinds = [e.kind for e in readme_examples]
    assert kinds.count("processes") >= PROCESS_EXAMPLES and kinds.count("shell") >= 1
    assert kinds.count("pytest") == 2       # the plugin section: a reader, a late publisher
    assert kinds.count("native") >= 1 and kinds.count("native") == kinds.count("native-harness")
    for e in readme_examples:
        if e.kind in ("python", "processes", "native-harness"):
            assert PRINTS.search(e.text), f"{e}: shows what it prints"
        if e.kind == "native":
            assert NATIVE_BUILD.search(e.text), f"{e}: its first comment gives its build command"


HAVE_NUMPY = importlib.util.find_spec("numpy") is not None
NO_NUMPY = "NumPy is not installed (under Wine it never is: NumPy 2.x aborts there)"


def uses_numpy(example: Example) -> bool:
    return re.search(r"^\s*(import|from) numpy\b", example.text, re.M) is not None


def test_python_examples_run(readme_examples, pyshm_names):
    for example in readme_examples:
        if example.kind == "python" and (HAVE_NUMPY or not uses_numpy(example)):
            names = unique_names(example, pyshm_names)
            run_program(renamed(example.text, names, shell=False), str(example))


def _processes_examples(readme: Path) -> List[Example]:
    return [e for e in examples(readme) if e.kind == "processes"]


PROCESS_EXAMPLES = 5


@pytest.mark.parametrize("index", range(PROCESS_EXAMPLES))
def test_two_process_examples_run_twice_and_leave_nothing(readme_examples, pyshm_names,
                                                          index):
    example = [e for e in readme_examples if e.kind == "processes"][index]
    if not HAVE_NUMPY and uses_numpy(example):
        pytest.skip(NO_NUMPY)
    names = unique_names(example, pyshm_names)
    assert names, f"{example}: names a segment"
    program = renamed(example.text, names, shell=False)
    for round_ in (1, 2):       # the second run finds no leftover of the first
        run_processes(program, f"{example} run {round_}")
        for name in names.values():
            with pytest.raises(FileNotFoundError):
                pyshm.SharedMemory(name)


def run_shell(text: str, where: str) -> None:
    prelude = ('pyshm() { "$PYSHM_PYTHON" -m pyshm "$@"; }\n'
               'python() { "$PYSHM_PYTHON" "$@"; }\n')
    env = child_env(PYSHM_PYTHON=sys.executable)
    commands: List[List[str]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append([line[2:]])
        else:
            assert commands, f"{where}: output before the first $ line"
            commands[-1].append(line)
    for command, *expected in commands:
        result = subprocess.run(["bash", "-c", prelude + command], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env,
                                timeout=DEADLINE)
        got = [line.rstrip() for line in result.stdout.splitlines()]
        assert got == [line.rstrip() for line in expected], \
            f"{where}: `{command}` printed:\n{result.stdout}"


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_command_line_session_runs(readme_examples, pyshm_names):
    for example in readme_examples:
        if example.kind == "shell":
            names = unique_names(example, pyshm_names)
            run_shell(renamed(example.text, names, shell=True), str(example))
            for name in names.values():
                with pytest.raises(FileNotFoundError):
                    pyshm.SharedMemory(name)


def _native_pairs(readme_examples: List[Example]) -> List["tuple[Example, Example]"]:
    """Each native example and the harness right after it."""
    pairs = []
    for i, e in enumerate(readme_examples):
        if e.kind == "native":
            harness = readme_examples[i + 1] if i + 1 < len(readme_examples) else None
            assert harness is not None and harness.kind == "native-harness", \
                f"{e}: a native-harness block follows it"
            pairs.append((e, harness))
    return pairs


@pytest.mark.skipif(sys.platform == "win32",
                    reason="no compiler runs inside Windows (examples/ runs a native "
                           "program there, cross-built on the host)")
def test_native_examples_build_and_run(readme_examples, pyshm_names, tmp_path):
    """The C program built with the command its comment gives, from
    pyshm.get_include() (warnings as errors), then its harness run next to
    it; it leaves no name behind."""
    import shutil

    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        if os.environ.get("CI"):
            pytest.fail(f"required in CI: a C compiler ({cc})")
        pytest.skip(f"no C compiler ({cc})")
    inc = pyshm.get_include()
    for native, harness in _native_pairs(readme_examples):
        found = NATIVE_BUILD.search(native.text)
        assert found, f"{native}: no build command"
        source, command = f"{found.group(1)}.c", found.group(2)
        (tmp_path / source).write_text(native.text, encoding="utf-8")
        flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
        if pyshm.CHANNEL_WAIT == "fallback":
            flags.append("-DPYSHM_WAIT_FALLBACK")
        argv = [cc, *flags, *command.split()[1:]]
        argv = [a.replace('"$INC/pyshm.c"', os.path.join(inc, "pyshm.c"))
                .replace('"$INC"', inc) for a in argv]
        built = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
        assert built.returncode == 0, f"{native}: {' '.join(argv)}:\n{built.stderr}"
        names = unique_names(harness, pyshm_names)
        run_program(renamed(harness.text, names, shell=False), str(harness), cwd=tmp_path)
        for name in names.values():
            with pytest.raises(FileNotFoundError):
                pyshm.SharedMemory(name)
