"""valgrind memcheck over the C programs in tests/c (platform layer without Python)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

# The native programs that are not self-checking: peers the tests above drive,
# and format_consts (it only prints the formats' numbers, for
# test_format_spec.py; no pyshm code runs in it).
PEERS = {"shmpeer", "format_consts"}

pytestmark = pytest.mark.skipif(
    sys.platform == "win32",
    reason="valgrind runs native Linux programs; the Windows programs run under Wine on "
           "the host (tests/windows/test_wine.py)")


@pytest.fixture(scope="module")
def valgrind(request, under_asan):
    if under_asan:
        pytest.skip("valgrind and a preloaded ASan runtime exclude each other; "
                    "memcheck runs in the normal pass")
    tool = shutil.which("valgrind")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is required in CI")
        pytest.skip("valgrind is not installed")
    request.getfixturevalue("c_programs")      # built after the checks above
    return [tool, "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--track-fds=no"]


def test_shmpeer_serve_and_read_are_clean(pyshm_child, pyshm_name, valgrind, c_programs):
    peer = str(c_programs / "shmpeer")
    server = pyshm_child.command(*valgrind, peer, "serve", pyshm_name, "4096",
                                 "under valgrind")
    server.expect("ready")
    reader = pyshm_child.command(*valgrind, peer, "read", pyshm_name, "reply")
    assert reader.finish(timeout=120) == "under valgrind\n"
    server.send_line("")
    server.finish(timeout=120)


def test_shmpeer_error_paths_are_clean(pyshm_child, pyshm_name, valgrind, c_programs):
    peer = str(c_programs / "shmpeer")
    missing = pyshm_child.command(*valgrind, peer, "read", pyshm_name)
    missing.communicate(timeout=120)
    assert missing.returncode == 1          # reported, not a memcheck error (99)
    usage = pyshm_child.command(*valgrind, peer, "serve", pyshm_name, "0", "x")
    usage.communicate(timeout=120)
    assert usage.returncode == 2


def test_every_self_checking_program_is_clean(valgrind, c_programs, source_dir, pyshm_name):
    """Every self-checking native program under memcheck: the Makefile's list
    (`make print-checks`), and every program it builds is in that list or is
    a peer driven by the tests above, so that none is left out by its name
    (chan_test_fallback once was, by a glob)."""
    checks = subprocess.run(["make", "-s", "-C", str(c_programs.parent), "print-checks",
                             f"SRC={source_dir / 'src'}"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert {"chan_test", "chan_test_fallback", "sync_linux_test", "slot_test",
            "slot_test_fallback"} <= set(checks), checks
    built = {p.name for p in c_programs.iterdir()
             if p.is_file() and os.access(p, os.X_OK)}
    assert built == set(checks) | PEERS, (
        f"not run under memcheck: {sorted(built - set(checks) - PEERS)} (a new program goes in "
        f"the Makefile's CHECKS or here in PEERS; a stale one: make -C tests/c clean)")
    for name in checks:
        result = subprocess.run([*valgrind, str(c_programs / name)], capture_output=True,
                                text=True, timeout=900,
                                env=dict(os.environ, PYSHM_TEST_PREFIX=pyshm_name))
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
        assert result.stdout.rstrip().endswith("all passed"), f"{name}:\n{result.stdout}"
