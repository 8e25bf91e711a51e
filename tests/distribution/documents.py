"""The documents whose examples the suite runs -- README.md and every page
of docs/ -- and the examples in them.

How a document marks its examples (an HTML comment on the line before the
fence, invisible when rendered, on GitHub and in the Sphinx site alike):

* a ```python block without a mark is one program, run as is;
* ``<!-- test: processes -->``: the block is split at its ``# process N``
  lines into programs run as separate processes (test_doc_examples.py);
* ``<!-- test: shell -->`` on a ```console block: each ``$ `` line runs in
  bash and its output must be the lines that follow it;
* ``<!-- test: native -->`` on a ```c block: a native program built with the
  command its first comment gives; the ``<!-- test: native-harness -->``
  python block after it runs next to it;
* a python block with ``def test_`` is a pytest example, run under pytest
  with the plugin; other fences (commands to type, sample output) are not
  run.

Used by test_doc_examples.py (which runs them), test_typing.py (mypy over
every Python example) and test_docs.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

# A fence and its info string: a language (python, console, c), none, or a
# MyST directive ({toctree}, {eval-rst}), which is not an example.
FENCE = re.compile(r"^(?:<!-- test: ([\w-]+) -->\n)?```([^`\n]*)\n(.*?)^```[ \t]*$",
                   re.S | re.M)
# A mark that is not followed by a fence right away: a typo would leave the
# example unrun, so it is an error.
MARK = re.compile(r"^<!-- test: ([\w-]+) -->$", re.M)
KINDS = ("python", "processes", "shell", "native", "native-harness", "pytest", "")
PYTHON_KINDS = ("python", "processes", "native-harness", "pytest")

HERE = Path(__file__).resolve().parent


@dataclass
class Example:
    kind: str       # one of KINDS ("": not run)
    lang: str       # the fence's language
    text: str
    doc: str        # the document, relative to the checkout (README.md, docs/seed.md)
    line: int       # where the fence starts in it

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ({self.kind})"


def documents(root: Path) -> List[Path]:
    """README.md and the pages of docs/, in a fixed order."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def examples_in(path: Path, root: Path) -> List[Example]:
    text = path.read_text(encoding="utf-8")
    doc = path.relative_to(root).as_posix()
    found = []
    fenced_marks = set()
    for m in FENCE.finditer(text):
        mark, lang, body = m.groups()
        lang = lang.strip()
        kind = mark or ("pytest" if lang == "python" and "def test_" in body else
                        "python" if lang == "python" else "")
        if kind not in KINDS:
            raise ValueError(f"{doc}:{text.count(chr(10), 0, m.start()) + 1}: "
                             f"unknown example kind {kind!r}")
        if mark:
            fenced_marks.add(m.start())
        found.append(Example(kind, lang, body, doc, text.count("\n", 0, m.start()) + 1))
    for m in MARK.finditer(text):
        if m.start() not in fenced_marks:
            line = text.count("\n", 0, m.start()) + 1
            raise ValueError(f"{doc}:{line}: a test mark not right before a fence")
    return found


def all_examples(root: Path) -> List[Example]:
    return [e for path in documents(root) for e in examples_in(path, root)]


def checkout() -> Optional[Path]:
    """Where the documents are, found without fixtures (for parametrizing at
    collection): PYSHM_SOURCE_DIR, else the tree these tests sit in; None
    when neither holds a README and docs/ (tests copied out of a checkout:
    the tests then ask conftest's source_dir, which skips or fails saying why)."""
    given = os.environ.get("PYSHM_SOURCE_DIR")
    root = Path(given) if given else HERE.parents[1]
    if (root / "README.md").is_file() and (root / "docs").is_dir():
        return root.resolve()
    return None
