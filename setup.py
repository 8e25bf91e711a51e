"""Build description of the C extension pyshm._pyshm.

Metadata lives in pyproject.toml; this file only says which C sources make
the extension on this platform, with which macros and libraries.

Environment switches:
  PYSHM_WERROR=1                  compile with warnings as errors (CI does)
  PYSHM_SANITIZE=address,undefined  build with these sanitizers (compile + link)
  PYSHM_DEBUG=1                   -O0 -g, asserts kept
"""

import os
import sys

from setuptools import Extension, setup

SRC = "src"


def src(*names):
    return [os.path.join(SRC, n) for n in names]


# The binding: one file per Python type plus the module.
binding = src("module.c", "sharedmemory.c")
headers = src("pyshm.h", "shm.h")

define_macros = []
libraries = []
extra_compile_args = []
extra_link_args = []

if sys.platform == "win32":
    platform = src("shm_win32.c")
    define_macros += [("WIN32_LEAN_AND_MEAN", None), ("UNICODE", None), ("_UNICODE", None)]
else:
    platform = src("shm_posix.c")
    if sys.platform.startswith("linux"):
        # posix_fallocate reserves tmpfs pages at create time (no SIGBUS later).
        define_macros += [("_GNU_SOURCE", None), ("PYSHM_HAVE_POSIX_FALLOCATE", None)]
        libraries += ["rt"]  # shm_open lives in librt on older glibc
    extra_compile_args += ["-std=c11", "-Wall", "-Wextra", "-Wshadow",
                           "-Wno-missing-field-initializers", "-Wno-cast-function-type"]

if os.environ.get("PYSHM_WERROR") == "1":
    extra_compile_args += ["/WX"] if sys.platform == "win32" else ["-Werror"]

sanitize = os.environ.get("PYSHM_SANITIZE", "").strip()
if sanitize:
    flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    extra_compile_args += flags + ["-O1", "-g"]
    extra_link_args += flags

if os.environ.get("PYSHM_DEBUG") == "1":
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]

setup(
    ext_modules=[
        Extension(
            "pyshm._pyshm",
            sources=binding + platform,
            depends=headers,
            include_dirs=[SRC],
            define_macros=define_macros,
            libraries=libraries,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
)
