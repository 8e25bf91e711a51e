#!/usr/bin/env bash
# Packaging check: the release's sdist and this interpreter's manylinux
# wheel as a user gets them, inspected, and tested as installed rather than
# as the source folder.
#
#   1. the release: tools/release.py's folder $PYSHM_DIST (.ci/run's release
#      step, which built every wheel from the sdist, so a file missing from
#      the sdist already broke the build); without it, this script makes the
#      part it needs (the sdist and this interpreter's x86_64 wheel) first
#   2. the wheel: check-wheel-contents, then .ci/check_dist.py wheel (its
#      tags fit this interpreter and platform -- a manylinux2014 wheel on
#      this machine's glibc; the package with its stubs and py.typed when
#      the source has them, and the extension; no sources, tests or
#      leftovers)
#   3. the sdist: .ci/check_dist.py sdist (every file under src/, tests/ and
#      pyshm/, README, LICENSE, CHANGELOG, build files; no build output)
#   4. a fresh venv with the wheel and its test extras; the sdist's tests/ run
#      from a folder outside the checkout, so `import pyshm` is the installed
#      one (asserted first); C peers are compiled from the unpacked sdist
#      (PYSHM_SOURCE_DIR)
#   5. another fresh venv with the sdist alone (compiled on install, with
#      this machine's compiler); from a neutral folder: the installed package
#      checked, `pyshm --version`, `python -m pyshm demo`
#
# Usage: bash .ci/package.sh   (PYTHON=python3.X to pick the interpreter;
# PYSHM_DIST=DIR a release folder; PYSHM_PKG_KEEP=1 keeps the work folder).
# C warnings are errors when the caller exports PYSHM_WERROR=1, as .ci/run
# does.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python3}
check_dist="$root/.ci/check_dist.py"

# step TITLE, and a table of the steps' wall times at the end, also when
# a step fails (.ci/steps.sh).
STEP_MARK=---- STEP_LABEL="package: "
# shellcheck source=.ci/steps.sh
. .ci/steps.sh
t0=$SECONDS

work=$(mktemp -d /tmp/pyshm-pkg.XXXXXX)
cleanup() {
    if [ "${PYSHM_PKG_KEEP:-}" = 1 ]; then echo "package: kept $work"; else rm -rf "$work"; fi
    step_times
}
trap cleanup EXIT
# Nothing from the caller's environment may put a source tree on the path.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP || true

step "clean copy of the checkout"
checkout="$work/checkout"
mkdir -p "$checkout"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and new files, not ignored ones (build output, egg-info, .so),
    # not files deleted in the working tree.
    git -C "$root" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do
              if [ -f "$root/$f" ]; then printf '%s\0' "$f"; fi
          done \
        | (cd "$root" && xargs -0 cp --parents -t "$checkout")
else
    cp -a "$root/." "$checkout"
fi
echo "$(find "$checkout" -type f | wc -l) files in $checkout"

step "build tools"
"$py" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q check-wheel-contents packaging

step "the release's sdist and wheel"
dist=${PYSHM_DIST:-}
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
tag=cp${version/./}
if [ -z "$dist" ]; then
    dist="$work/dist"
    # release.py needs Python 3.11+ (tomllib): the machine's python3.
    python3 "$root/tools/release.py" "$dist" --python "$version" --arch "$(uname -m)" --no-windows
fi
shopt -s nullglob
wheels=("$dist"/pyshm_ipc-*-"$tag-$tag"-*manylinux*_"$(uname -m)"*.whl)
sdists=("$dist"/pyshm_ipc-*.tar.gz)
shopt -u nullglob
if [ ${#wheels[@]} -ne 1 ] || [ ${#sdists[@]} -ne 1 ]; then
    echo "package: expected one $tag $(uname -m) wheel and one sdist in $dist:" >&2
    ls -l "$dist" >&2
    exit 1
fi
wheel=${wheels[0]}
sdist=${sdists[0]}
ls -l "$wheel" "$sdist"

step "inspect the wheel"
"$work/tools/bin/check-wheel-contents" "$wheel"
"$work/tools/bin/python" "$check_dist" wheel "$wheel" "$checkout"

step "inspect the sdist"
"$work/tools/bin/python" "$check_dist" sdist "$sdist" "$checkout"
unpacked="$work/sdist"
mkdir -p "$unpacked"
tar -xzf "$sdist" -C "$unpacked" --strip-components=1

step "test suite against the installed wheel"
"$py" -m venv "$work/venv-wheel"
"$work/venv-wheel/bin/python" -m pip install -q "${wheel}[test]"
# The tests as shipped in the sdist, with the pytest settings of
# pyproject.toml, in a folder that holds no pyshm package.
run="$work/run-tests"
mkdir -p "$run"
cp -r "$unpacked/tests" "$unpacked/pyproject.toml" "$run/"
(
    cd "$run"
    "$work/venv-wheel/bin/python" "$check_dist" installed "$checkout"
    PYSHM_SOURCE_DIR="$unpacked" "$work/venv-wheel/bin/python" -m pytest -p no:cacheprovider
)

step "install from the sdist alone"
"$py" -m venv "$work/venv-sdist"
"$work/venv-sdist/bin/python" -m pip install -q "$sdist"
neutral="$work/neutral"
mkdir -p "$neutral"
(
    cd "$neutral"
    "$work/venv-sdist/bin/python" "$check_dist" installed "$checkout"
    version=$("$work/venv-sdist/bin/python" -c 'import pyshm; print(pyshm.__version__)')
    said=$("$work/venv-sdist/bin/pyshm" --version)
    if [ "$said" != "pyshm $version" ]; then
        echo "package: pyshm --version said '$said', expected 'pyshm $version'" >&2
        exit 1
    fi
    echo "$said"
    "$work/venv-sdist/bin/python" -m pyshm demo
)

step_note "passed in $((SECONDS - t0)) s"
