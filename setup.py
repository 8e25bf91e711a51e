"""Build description of the C extension pyshm._pyshm, and of the C API files.

Metadata lives in pyproject.toml; this file only says which C sources make
the extension on this platform, with which macros and libraries.  The
sources themselves are listed once, by group, in src/sources.txt (read
by tools/sources.py, which tools/winbuild.py shares); this file picks the
groups for the platform.

Every run also writes pyshm/include/pyshm.h and pyshm/include/pyshm.c, the
C API for native programs (pyshm.get_include()), generated from src/ by
tools/amalgamate.py; the wheel and the sdist carry them as package data,
and an editable install finds them in the checkout.

Environment switches:
  PYSHM_WERROR=1                  compile with warnings as errors (CI does)
  PYSHM_SANITIZE=address,undefined  build with these sanitizers (compile + link)
  PYSHM_DEBUG=1                   -O0 -g, asserts kept (otherwise the extension
                                  is built without debug information: -g0,
                                  and stripped on Linux)
  PYSHM_COVERAGE=1                gcc --coverage at -O0 -g: every process that
                                  loads the extension adds its line counts
                                  (.gcda) at exit, next to the objects, which
                                  then stay in build/coverage/ of this folder
                                  unless --build-temp says otherwise (see the
                                  README, Development, for the report)
  PYSHM_WAIT=fallback             POSIX: use the portable sleep-backoff waits and
                                  pid-word locks (group "fallback":
                                  src/platform/sync_fallback.c) even where
                                  futexes exist; the tests build this on Linux
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class build_ext_always(build_ext):
    """Recompile every time.  setuptools skips an extension that is newer
    than its sources, even if the flags changed: a switch to PYSHM_SANITIZE
    or PYSHM_WAIT in a tree with an earlier build/ would then ship the old,
    uninstrumented extension.  The extension is small; a full compile takes
    seconds.

    Set in finalize_options, not initialize_options: distutils'
    Command.__init__ resets force to None right after initialize_options,
    and finalize_options then copies the build command's (false) value."""

    def finalize_options(self):
        if coverage and self.build_temp is None:
            # The objects hold the coverage notes (.gcno) and receive the
            # counts (.gcda) at run time, at the path they were compiled to:
            # a place that outlives the build (pip's editable build would
            # otherwise use a temporary folder) and that a report can find.
            # One folder per interpreter ABI, so that two builds never
            # share (and corrupt) one set of counters.
            self.build_temp = os.path.join(
                HERE, "build", "coverage", sys.implementation.cache_tag + sys.abiflags)
        super().finalize_options()
        self.force = True

    def run(self):
        if coverage:
            # Counts of the objects about to be rebuilt no longer match
            # them (libgcov would overwrite them with a complaint): a new
            # build starts from none.
            for folder, _, files in os.walk(self.build_temp):
                for name in files:
                    if name.endswith(".gcda"):
                        os.remove(os.path.join(folder, name))
        super().run()


HERE = os.path.dirname(os.path.abspath(__file__))
SRC = "src"
SOURCES_TXT = f"{SRC}/sources.txt"


def _load_tool(name):
    """tools/NAME.py (sources.py, the manifest reader shared with
    tools/winbuild.py; amalgamate.py, the C API generator), loaded by path
    (tools/ is no package and is not on sys.path)."""
    spec = importlib.util.spec_from_file_location(
        f"pyshm_tools_{name}", os.path.join(HERE, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sources = _load_tool("sources")
try:
    groups = _sources.read_manifest(SOURCES_TXT, prefix=SRC)
except _sources.ManifestError as exc:
    sys.exit(f"setup.py: {exc}")

# The C API: generated before setuptools collects the package data, for
# every command (a wheel, an sdist, an editable install).  Only changed
# files are written.
_amalgamate = _load_tool("amalgamate")
try:
    _amalgamate.write(_amalgamate.ROOT / "pyshm" / "include", root=_amalgamate.ROOT)
except (_amalgamate.GenerateError, _sources.ManifestError) as exc:
    sys.exit(f"setup.py: the C API files: {exc}")

wait = os.environ.get("PYSHM_WAIT", "").strip().lower()
if wait not in ("", "native", "fallback"):
    sys.exit(f"setup.py: PYSHM_WAIT must be 'native' or 'fallback', not {wait!r}")

define_macros = []
libraries = []
extra_compile_args = []
extra_link_args = []

if sys.platform == "win32":
    platform_groups = ["win32", "ready_win32"]
    define_macros += [("WIN32_LEAN_AND_MEAN", None), ("UNICODE", None), ("_UNICODE", None)]
    libraries += ["ws2_32"]  # readiness: a socket pair for select() (platform/ready_win32.c)
else:
    # Channel waits and locks: futex + robust mutexes on Linux, the portable
    # fallback elsewhere (or when asked for).  The Linux settings are
    # tools/sources.py's, which tools/release.py builds the manylinux
    # wheels with.
    native_sync = sys.platform.startswith("linux") and wait != "fallback"
    platform_groups = [g for g in (_sources.LINUX_GROUPS if native_sync
                                   else _sources.FALLBACK_GROUPS)
                       if g not in ("binding", "core")]
    if sys.platform.startswith("linux"):
        define_macros += list(_sources.LINUX_MACROS)
        libraries += list(_sources.LINUX_LIBRARIES)
    extra_compile_args += list(_sources.POSIX_CFLAGS)

if os.environ.get("PYSHM_WERROR") == "1":
    extra_compile_args += ["/WX"] if sys.platform == "win32" else ["-Werror"]

sanitize = os.environ.get("PYSHM_SANITIZE", "").strip()
if sanitize:
    flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    extra_compile_args += flags + ["-O1", "-g"]
    extra_link_args += flags

if os.environ.get("PYSHM_DEBUG") == "1":
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]

coverage = os.environ.get("PYSHM_COVERAGE") == "1"
if coverage:
    if sys.platform == "win32":
        sys.exit("setup.py: PYSHM_COVERAGE is for gcc builds on POSIX")
    # -O0: a line counted is a line of the source, none merged or moved.
    # Atomic counters: threads run the same lines at once, and plain
    # increments that race lose counts and leave gcov inconsistent ones
    # (negative branch counts).  Absolute source paths in the notes.
    # PYSHM_COVERAGE lets C code write the counts where a process ends
    # without exit() (module.c: a fork child's os._exit).
    extra_compile_args += ["--coverage", "-fprofile-update=atomic", "-fprofile-abs-path",
                           "-O0", "-g"]
    extra_link_args += ["--coverage"]
    define_macros += [("PYSHM_COVERAGE", "1")]

if sys.platform != "win32" and not (sanitize or coverage or os.environ.get("PYSHM_DEBUG") == "1"):
    # No debug information in what is installed: the interpreter's own
    # CFLAGS often carry -g (pyenv's, Debian's), which made the extension
    # three times its size.  -g0 comes after them and wins; on Linux the
    # linker also drops the symbol table (-s: the dynamic symbols stay).
    # PYSHM_DEBUG=1 is the debug build, and the sanitizer and coverage
    # builds keep theirs.
    extra_compile_args += ["-g0"]
    if sys.platform.startswith("linux"):
        extra_link_args += ["-s"]

setup(
    cmdclass={"build_ext": build_ext_always},
    ext_modules=[
        Extension(
            "pyshm._pyshm",
            # The binding (module + one file per Python type), the channel
            # core, and the platform files of this OS.
            sources=[f for g in ["binding", "core", *platform_groups] for f in groups[g]],
            depends=groups["headers"] + [SOURCES_TXT],
            include_dirs=[SRC],
            define_macros=define_macros,
            libraries=libraries,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
)
