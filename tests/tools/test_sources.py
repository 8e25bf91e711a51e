"""tools/sources.py: the one reader of src/sources.txt (setup.py and
tools/winbuild.py import it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def sources(source_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyshm_tools_sources",
                                                  source_dir / "tools" / "sources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_manifest_names_files_that_exist(sources, source_dir):
    groups = sources.read_manifest(source_dir / "src" / "sources.txt", prefix="src")
    assert {"core", "binding", "posix", "linux", "fallback", "win32", "ready_posix",
            "ready_linux", "ready_fallback", "ready_win32", "headers"} <= set(groups)
    for paths in groups.values():
        for path in paths:
            assert path.startswith("src/") and (source_dir / path).is_file(), path
    listed = [path for paths in groups.values() for path in paths]
    assert sorted({p for p in listed if listed.count(p) > 1}) == [], \
        "a file in two groups: give it a group of its own that both builds take"


@pytest.mark.parametrize("text,line", [
    ("core: a.c\ncore: b.c\n", 2),          # a group twice
    ("# comment\n\nno colon here\n", 3),
    ("empty:   # nothing after the colon\n", 1),
    (": a.c\n", 1),                         # no group name
])
def test_a_malformed_manifest_names_its_line(sources, tmp_path, text, line):
    manifest = tmp_path / "sources.txt"
    manifest.write_text(text)
    with pytest.raises(sources.ManifestError, match=f"sources.txt:{line}: expected"):
        sources.read_manifest(manifest)


def test_comments_blanks_and_prefix(sources, tmp_path):
    manifest = tmp_path / "sources.txt"
    manifest.write_text("# head\n\ncore:  core/ring.c   # tail\nwin32: a.c b.c\n")
    assert sources.read_manifest(manifest, prefix="") == {"core": ["core/ring.c"],
                                                         "win32": ["a.c", "b.c"]}
    assert sources.read_manifest(manifest, prefix="x")["win32"] == ["x/a.c", "x/b.c"]
