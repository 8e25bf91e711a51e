"""The documentation is true when followed: every example of README.md and
of the pages in docs/ runs as written.

How the documents mark their examples is in documents.py.  Here:

* a python block is one program, run from a file;
* a ``processes`` block is split at its ``# process N`` lines into programs
  run as separate processes: process 1 first, until it waits in ``input()``
  (its prompt appears), then each other one to its end, then process 1 gets
  its Enter and finishes.  These run twice in a row and must leave no name
  behind;
* a ``shell`` block: each ``$ `` line runs in bash (``pyshm`` and ``python``
  are this interpreter), and its output (stdout and stderr) must be the
  lines that follow it;
* a ``native`` block is built from ``pyshm.get_include()`` with the command
  its first comment gives (``/* NAME.c:  cc NAME.c ... -o NAME */``); the
  ``native-harness`` python block after it runs in the folder where the
  program was built (POSIX: no compiler runs inside Windows, where
  examples/ covers the native end);
* ``pytest`` blocks (``def test_``) run under pytest with the plugin, and
  annotate the plugin's fixtures with the plugin's own types.

Every ``# prints X`` comment must match a line the program printed.  The
segment names in the examples are swapped for this session's unique names.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import pyshm
from pyshm._subprocess import child_env

from .documents import PYTHON_KINDS, Example, all_examples, checkout, examples_in

pytest_plugins = ["pytester"]

DEADLINE = 60.0

PRINTS = re.compile(r"#\s*prints (.+?)\s*$", re.M)
PROCESS = re.compile(r"^# process (\d+)", re.M)
PROMPT = re.compile(r"""input\((["'])(.*?)\1\)""")
# Where the examples name segments: the first argument of the constructors,
# and the NAME of a command.
PY_NAME = re.compile(r"""(?:SharedMemory|Channel|Slot)\(\s*(["'])([^"']+)\1""")
# The first comment of a native example: its file and its build command.
NATIVE_BUILD = re.compile(r"^/\* (\w+)\.c:\s+(cc \1\.c .*?) \*/$", re.M)
SHELL_NAME = re.compile(r"\bpyshm (?:create|send|recv|info|rm|write|cat) ([^\s;|&]+)")


@pytest.fixture(scope="module")
def doc_examples(source_dir: Path) -> List[Example]:
    return all_examples(source_dir)


def of_kind(kind: str) -> List[Optional[Example]]:
    """The examples of KIND, for parametrizing at collection; [None] when the
    documents are not where the tests sit (the test then asks source_dir,
    which skips or fails saying why)."""
    root = checkout()
    if root is None:
        return [None]
    return [e for e in all_examples(root) if e.kind == kind]


def found(example: Optional[Example], source_dir: Path) -> Example:
    """EXAMPLE, once source_dir (a fixture of the test) has said the
    documents are there."""
    assert example is not None, f"the documents of {source_dir} were not found at collection"
    return example


def renamed(text: str, names: Dict[str, str], shell: bool) -> str:
    """TEXT with each name of the example replaced by its unique stand-in: as a whole
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


def test_documents_have_the_examples_they_promise(doc_examples, source_dir):
    readme = examples_in(source_dir / "README.md", source_dir)
    # The quick start and the seed scenario, as two real processes each.
    assert [e.kind for e in readme].count("processes") >= 2
    kinds = [e.kind for e in doc_examples]
    assert kinds.count("processes") >= 7 and kinds.count("shell") >= 1
    assert kinds.count("python") >= 5
    assert kinds.count("pytest") == 2       # the plugin's page: a reader, a late publisher
    assert kinds.count("native") >= 1 and kinds.count("native") == kinds.count("native-harness")
    for e in doc_examples:
        if e.kind in ("python", "processes", "native-harness"):
            assert PRINTS.search(e.text), f"{e}: shows what it prints"
        if e.kind == "native":
            assert NATIVE_BUILD.search(e.text), f"{e}: its first comment gives its build command"
        if e.lang == "python":
            assert e.kind in PYTHON_KINDS, f"{e}: a python block that is not run"


HAVE_NUMPY = importlib.util.find_spec("numpy") is not None
NO_NUMPY = "NumPy is not installed (under Wine it never is: NumPy 2.x aborts there)"


def uses_numpy(example: Example) -> bool:
    return re.search(r"^\s*(import|from) numpy\b", example.text, re.M) is not None


def runnable(example: Example, source_dir: Path) -> Example:
    """EXAMPLE as the document now has it; skips where it needs NumPy and
    there is none."""
    example = found(example, source_dir)
    if not HAVE_NUMPY and uses_numpy(example):
        pytest.skip(NO_NUMPY)
    return example


@pytest.mark.parametrize("example", of_kind("python"), ids=str)
def test_python_examples_run(example, source_dir, pyshm_names):
    example = runnable(example, source_dir)
    names = unique_names(example, pyshm_names)
    run_program(renamed(example.text, names, shell=False), str(example))
    for name in names.values():
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(name)


@pytest.mark.parametrize("example", of_kind("processes"), ids=str)
def test_two_process_examples_run_twice_and_leave_nothing(example, source_dir, pyshm_names):
    example = runnable(example, source_dir)
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
@pytest.mark.parametrize("example", of_kind("shell"), ids=str)
def test_command_line_sessions_run(example, source_dir, pyshm_names):
    example = found(example, source_dir)
    names = unique_names(example, pyshm_names)
    run_shell(renamed(example.text, names, shell=True), str(example))
    for name in names.values():
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(name)


def _native_pairs(doc_examples: List[Example]) -> List["tuple[Example, Example]"]:
    """Each native example and the harness right after it."""
    pairs = []
    for i, e in enumerate(doc_examples):
        if e.kind == "native":
            harness = doc_examples[i + 1] if i + 1 < len(doc_examples) else None
            assert harness is not None and harness.kind == "native-harness", \
                f"{e}: a native-harness block follows it"
            pairs.append((e, harness))
    return pairs


@pytest.mark.skipif(sys.platform == "win32",
                    reason="no compiler runs inside Windows (examples/ runs a native "
                           "program there, cross-built on the host)")
def test_native_examples_build_and_run(doc_examples, pyshm_names, native_compiler, tmp_path):
    """The C program built with the command its comment gives, from
    pyshm.get_include() (warnings as errors), then its harness run next to
    it; it leaves no name behind."""
    cc = native_compiler.cc
    inc = pyshm.get_include()
    for native, harness in _native_pairs(doc_examples):
        found = NATIVE_BUILD.search(native.text)
        assert found, f"{native}: no build command"
        source, command = f"{found.group(1)}.c", found.group(2)
        (tmp_path / source).write_text(native.text, encoding="utf-8")
        flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *native_compiler.wait_flags]
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


# ---- the pytest examples -----------------------------------------------------------

def test_pytest_examples_pass(pytester, doc_examples):
    """Every example test (the plugin's page: a child that reads, a publisher
    that starts late) passes as written, with the plugin as installed."""
    blocks = [e.text for e in doc_examples if e.kind == "pytest"]
    assert len(blocks) >= 2, "the documents show example tests"
    pytester.makepyfile(**{f"test_doc_example_{i}": b for i, b in enumerate(blocks)})
    result = pytester.runpytest_subprocess("-p", "pyshm")
    result.assert_outcomes(passed=len(blocks))


def _fixture_types() -> Dict[str, str]:
    """What each fixture of the plugin gives, as the plugin itself types it:
    the X of its ``-> Iterator[X]`` (or ``-> X``)."""
    import pyshm.pytest_plugin as plugin

    source = Path(plugin.__file__).read_text(encoding="utf-8")
    types = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in plugin.__all__ and \
                node.name.startswith("pyshm_") and node.returns is not None:
            given = node.returns
            if isinstance(given, ast.Subscript) and ast.unparse(given.value) == "Iterator":
                given = given.slice
            types[node.name] = _spelled(given)
    return types


def _spelled(annotation: ast.expr) -> str:
    """An annotation as one text, whichever way it is written: quoted parts
    unquoted, the plugin's module prefix dropped."""
    class Unquote(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.AST:
            if isinstance(node.value, str):
                return ast.parse(node.value, mode="eval").body
            return node

    text = ast.unparse(Unquote().visit(annotation))
    return text.replace("pyshm.pytest_plugin.", "")


def test_pytest_examples_type_the_fixtures_as_the_plugin_does(doc_examples):
    """A fixture annotated with another type hides what the plugin gives:
    ``Callable[..., Popen]`` for pyshm_child hid Child's expect() and
    finish() from a type checker (issue 23)."""
    plugin_types = _fixture_types()
    assert plugin_types["pyshm_child"] == "ChildFactory", plugin_types
    for example in (e for e in doc_examples if e.kind == "pytest"):
        for node in ast.walk(ast.parse(example.text)):
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            for arg in node.args.args:
                if arg.arg in plugin_types:
                    assert arg.annotation is not None, f"{example}: {arg.arg} is typed"
                    assert _spelled(arg.annotation) == plugin_types[arg.arg], \
                        f"{example}: {arg.arg}: {ast.unparse(arg.annotation)}, but the " \
                        f"plugin gives {plugin_types[arg.arg]}"
