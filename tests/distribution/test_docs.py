"""The documentation as a reader meets it: a README of a few screens whose
links lead into the site, the site itself built with warnings as errors, the
figures the README quotes backed by the bench's, and the module docstring's
example runnable again and again.  (The examples run in test_doc_examples.py.)"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import pyshm
from pyshm._subprocess import child_env

from .documents import documents

README_LINES = 300
# The guides the README's tour links to, one per subject (issue 23).
TOUR = ["seed", "channels", "objects", "loans", "native", "asyncio", "cli", "pytest"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MyST's heading anchors) give a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> List[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)     # not inside code
    return [github_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)]


def test_readme_fits_on_a_few_screens(source_dir):
    lines = (source_dir / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_LINES, f"README.md has {lines} lines: more belongs in docs/"


def test_readme_and_pages_link_to_what_exists(source_dir):
    """Every relative link of the README and of the pages names a file that
    exists, and a heading of it that exists (GitHub's anchors); the
    README's tour links to each guide."""
    for doc in documents(source_dir):
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue        # an address, not a file
            path, _, anchor = target.partition("#")
            where = (doc.parent / path).resolve() if path else doc
            assert where.exists(), f"{doc.name}: link to {target}: no such file"
            if anchor:
                assert anchor in anchors(where), f"{doc.name}: link to {target}: no such heading"
    readme = (source_dir / "README.md").read_text(encoding="utf-8")
    linked = set(LINK.findall(readme))
    for page in TOUR:
        assert f"docs/{page}.md" in linked, f"the README's tour has no link to docs/{page}.md"


def test_every_page_is_in_the_site(source_dir):
    """A page left out of index.md's tables of contents is built but never
    reached (Sphinx says so only as a warning about the page itself)."""
    index = (source_dir / "docs" / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^(\w+)$", index, re.M))
    pages = {p.stem for p in (source_dir / "docs").glob("*.md")} - {"index"}
    assert pages <= listed, f"not in docs/index.md's tables of contents: {pages - listed}"


def test_readme_setup_commands_are_what_ci_runs(source_dir):
    """The README's two set-up commands (install and run the demo; install
    with the test extras and pass the tests) are what .ci/run runs: the test
    command as its very line, each command of the demo line as a line or a
    command of .ci/run (whose install with the test extras includes
    `pip install -e .`)."""
    readme = (source_dir / "README.md").read_text(encoding="utf-8")
    commands = [b.strip() for b in re.findall(r"^```\n(pip install -e .*?)^```", readme,
                                              re.S | re.M)]
    assert commands == ['pip install -e . && python -m pyshm demo',
                        'pip install -e ".[test]" && pytest'], commands
    ci = source_dir / ".ci" / "run"
    if not ci.is_file():
        pytest.skip(f"no .ci/run in {source_dir} (an sdist does not ship it)")
    lines = [line.strip() for line in ci.read_text(encoding="utf-8").splitlines()]
    assert commands[1] in lines, f".ci/run does not run {commands[1]!r} as the README does"
    parts = {p.strip() for line in lines for p in line.split("&&")}
    for part in commands[0].split("&&"):
        part = part.strip()
        covered = part in parts or (part == "pip install -e ." and
                                    any(p.startswith('pip install -e ".[') for p in parts))
        assert covered, f".ci/run does not run {part!r} (the README's {commands[0]!r})"


def bench_ratio(performance: str, row: str) -> float:
    """The ratio the full run's output shows on ROW of the round-trip table."""
    table = performance[performance.index("round trip: round trip 64 B"):]
    m = re.search(rf"^  {re.escape(row)} .*? ([\d.]+)x \(pyshm\.Channel / this\)", table, re.M)
    assert m, f"docs/performance.md's full run has no round-trip row {row!r}"
    return float(m.group(1))


def test_readme_states_speed_as_the_benchs_ratio_to_a_pipe(source_dir):
    """Issue 23: a time (\"about 1.5 us a round trip\") depends on the machine
    (1.1 to 2.5 us measured); the README states the ratio to a pipe, and it
    is the one of the bench's run in docs/performance.md."""
    readme = (source_dir / "README.md").read_text(encoding="utf-8")
    first = " ".join(readme.split("\n## ", 1)[0].split())
    assert not re.search(r"\d\s*(µs|us|ns|ms)\b", first), \
        "the README's introduction states a time: state a ratio"
    claim = re.search(r"about (\d+)× faster than through a `multiprocessing\.Pipe`", first)
    assert claim, "the README's introduction compares a round trip with a Pipe's"
    performance = (source_dir / "docs" / "performance.md").read_text(encoding="utf-8")
    ratio = bench_ratio(performance, "multiprocessing.Pipe")
    assert int(claim.group(1)) == round(1 / ratio), (claim.group(0), ratio)
    # The page's own summary says the same.
    assert f"| {round(1 / ratio)}× faster ({ratio:.2g}×) |" in performance


def test_module_docstring_example_runs_again_and_again(pyshm_names):
    """Issue 23: `help(pyshm)`'s example is run as doctest, twice, under a
    unique name: the first run leaves nothing behind that would make the
    second raise."""
    name = pyshm_names()
    text = (pyshm.__doc__ or "").replace('"COMMUNICATION"', f'"{name}"')
    assert name in text, "the module docstring's example names its segment"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(verbose=False)
    for round_ in (1, 2):
        test = parser.get_doctest(text, {}, f"pyshm.__doc__ run {round_}", None, 0)
        assert test.examples, "the module docstring has an example"
        result = runner.run(test, clear_globs=True)
        assert result.failed == 0, f"run {round_}: {result}"
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(name)


# ---- the site ---------------------------------------------------------------------

def test_the_test_extras_build_the_site(source_dir):
    """The suite builds the site, so the test extras hold every package of
    the docs extra (named there as such: the Windows run installs the list
    from PyPI, where pyshm-ipc[docs] is not to be had)."""
    try:
        import tomllib
    except ImportError:         # Python < 3.11: pytest's own dependency
        import tomli as tomllib
    with open(source_dir / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert set(extras["docs"]) <= set(extras["test"]), (extras["docs"], extras["test"])


DOC_TOOLS = ["sphinx", "myst_parser"]


def doc_tools() -> None:
    """Skip where Sphinx or MyST-Parser is not installed; in CI, fail (the
    test extras bring them)."""
    missing = [t for t in DOC_TOOLS if importlib.util.find_spec(t) is None]
    if not missing:
        return
    reason = f"not installed: {', '.join(missing)} (pip install -e \".[docs]\")"
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def build_site(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                           "-b", "html", "-d", str(out / ".doctrees"), str(source),
                           str(out / "html")],
                          capture_output=True, text=True, env=child_env(), timeout=600)


def test_site_builds_with_warnings_as_errors(source_dir, tmp_path, under_wine):
    """docs/ built as .ci/docs.sh builds it: a warning (a broken link or
    heading, an autodoc import that fails, a docstring that is not valid
    reST) fails the build."""
    if under_wine and sys.version_info >= (3, 12):
        pytest.skip(f"Wine {under_wine} lacks CopyFile2, which shutil's copies call on "
                    f"Windows from Python 3.12 on: Sphinx copying its static files aborts")
    doc_tools()
    result = build_site(source_dir / "docs", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    html = tmp_path / "html"
    pages = {p.stem for p in html.glob("*.html")}
    assert {"index", "api", "format", *TOUR} <= pages, pages
    api = re.sub(r"<[^>]+>", "", (html / "api.html").read_text(encoding="utf-8"))
    api = " ".join(api.split())
    # The C extension's signatures carry the stubs' types.
    assert "send(data: Buffer, timeout: " in api, "untyped signatures in api.html"
    assert "mode: int = 0o600" in api, "defaults not as the stubs write them"

