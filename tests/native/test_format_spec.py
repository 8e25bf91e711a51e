"""docs/format.md, the specification of the channel and slot formats, held
against the code: every layout table (offset, size, field) equals the
compiler's view of that struct (tests/c/format_consts.c prints offsetof and
sizeof of every member, and the members must tile the struct), every
constant of the table "Constants" equals its definition (the program's for
the headers' constants; the #define in its .c file for the few that live
in one), every constant the program knows is in that table, and the
Windows object suffixes are the ones sync_win32.c derives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform == "win32",
    reason="the numbers are the compiler's view of src/ on the Linux host; the Windows "
           "build compiles the same headers (their static checks hold the layout)")

Row = Tuple[str, int, int]      # field, offset, size


def evaluate(text: str) -> int:
    """A number as the spec or a C #define writes it: 0x.., 2^N, 2^N - 1,
    (type)1 << N, suffixes u/ull; nothing else is accepted."""
    expr = text.strip().strip("`")
    expr = re.sub(r"\((?:off_t|u?int64_t|size_t|uint32_t)\)", "", expr)
    expr = re.sub(r"(?<=[0-9a-fA-F])[uUlL]+\b", "", expr)
    expr = expr.replace("^", "**")
    if not re.fullmatch(r"[0-9a-fA-Fx()<*\- ]+", expr):
        raise ValueError(f"not a plain number: {text!r}")
    return int(eval(expr, {"__builtins__": {}}, {}))


def tables(text: str) -> List[Tuple[str, List[List[str]]]]:
    """(the heading above it, rows of cells) for every Markdown table."""
    out: List[Tuple[str, List[List[str]]]] = []
    heading, rows = "", []
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            heading = line
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                rows.append(cells)
        elif rows:
            out.append((heading, rows))
            rows = []
    return out


@pytest.fixture(scope="module")
def spec(source_dir: Path) -> str:
    return (source_dir / "docs" / "format.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compiled(c_programs: Path):
    out = subprocess.run([str(c_programs / "format_consts")], capture_output=True, text=True,
                         check=True).stdout
    consts: Dict[str, int] = {}
    structs: Dict[str, int] = {}
    members: Dict[str, List[Row]] = {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "const":
            consts[rest[0]] = int(rest[1])
        elif kind == "struct":
            structs[rest[0]] = int(rest[1])
        else:
            members.setdefault(rest[0], []).append((rest[1], int(rest[2]), int(rest[3])))
    return consts, structs, members


def test_the_program_sees_every_member(compiled):
    _, structs, members = compiled
    assert set(structs) == {"ring_header", "slot_header", "slot_cell"}
    for name, rows in members.items():
        at = 0
        for field, offset, size in sorted(rows, key=lambda r: r[1]):
            assert offset == at, f"{name}: {field} at {offset}, the members before end at {at}"
            at += size
        assert at == structs[name], f"{name}: members end at {at}, the struct is {structs[name]}"


def test_layout_tables_match_the_structs(spec, compiled):
    _, structs, members = compiled
    seen = set()
    for heading, rows in tables(spec):
        if rows[0][:3] != ["offset", "size", "field"]:
            continue
        named = re.findall(r"`(\w+)`", heading)
        struct = next((n for n in named if n in structs), None)
        if struct is None:
            continue        # the common start and the object frame: checked elsewhere
        doc = [(r[2].strip("`"), int(r[0]), int(r[1])) for r in rows[1:]]
        assert doc == members[struct], f"docs/format.md's table of {struct} differs from the code"
        seen.add(struct)
    assert seen == set(structs), f"no layout table in docs/format.md for {set(structs) - seen}"


def test_every_header_starts_with_magic_and_version(compiled):
    _, _, members = compiled
    for struct in ("ring_header", "slot_header"):
        assert members[struct][:2] == [("magic", 0, 4), ("version", 4, 4)]


def test_constants_match_the_code(spec, compiled, source_dir):
    consts, _, _ = compiled
    table = next(rows for _, rows in tables(spec) if rows[0][:2] == ["constant", "value"])
    documented = {r[0].strip("`"): evaluate(r[1]) for r in table[1:]}
    sources = {p: p.read_text(encoding="utf-8") for p in (source_dir / "src").rglob("*.c")}
    for name, value in documented.items():
        if name in consts:
            assert value == consts[name], f"{name}: the spec says {value}, the code {consts[name]}"
            continue
        defs = [(p, m.group(1)) for p, text in sources.items()
                for m in re.finditer(rf"^#define {name}\s+(.+?)\s*(?:/\*.*)?$", text, re.M)]
        assert len(defs) == 1, f"{name}: documented, but defined {len(defs)} times in src/*.c"
        path, expr = defs[0]
        assert value == evaluate(expr), f"{name}: the spec says {value}, {path} says {expr}"
    missing = sorted(set(consts) - set(documented))
    assert missing == [], f"constants of the formats not in docs/format.md: {missing}"


def test_windows_object_suffixes(spec, source_dir):
    code = (source_dir / "src" / "platform" / "sync_win32.c").read_text(encoding="utf-8")
    in_code = set(re.findall(r'L"(#\w+)"', code))
    table = next(rows for _, rows in tables(spec) if rows[0][:2] == ["suffix", "object"])
    assert {r[0].strip("`") for r in table[1:]} == in_code
