#!/usr/bin/env bash
# Windows: pyshm's win_amd64 wheels, and the suite in Windows CPython under
# Wine, through tools/winbuild.py (see its --help).
#
#   1. the wheels for every Windows CPython the tool knows (3.9 to 3.13):
#      the release's, from $PYSHM_DIST (tools/release.py built them with
#      the tool and checked them); without it, built here -- each compiled
#      with mingw-w64, warnings as errors, its .pyd's DLL imports checked
#      by the tool; then check-wheel-contents on all of them
#   2. `winbuild.py test VERSION --wheel WHEEL` -- that wheel installed with
#      pip into that CPython under Wine, the whole suite run there -- for
#      the floor (3.9) and 3.13; PYSHM_WINE_ALL=1 runs it for every version
#      3.9 to 3.13
#
# Usage: bash .ci/windows.sh   (PYTHON: the host's Python 3.11+ that runs
# the tool, default python3; PYSHM_DIST: a release folder).  The Windows CPythons and the test
# dependencies are cached outside the checkout (tools/winbuild.py:
# $PYSHM_WINBUILD_CACHE, default ~/.cache/pyshm-winbuild).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}

ALL=(3.9 3.10 3.11 3.12 3.13)
if [ "${PYSHM_WINE_ALL:-}" = 1 ]; then suites=("${ALL[@]}"); else suites=(3.9 3.13); fi

# step TITLE, and a table of the steps' wall times at the end, also when
# a step fails (.ci/steps.sh).
STEP_MARK=---- STEP_LABEL="windows: "
# shellcheck source=.ci/steps.sh
. .ci/steps.sh
t0=$SECONDS
work=$(mktemp -d /tmp/pyshm-windows.XXXXXX)
trap 'rm -rf "$work"; step_times' EXIT
unset PYTHONPATH PYTHONHOME || true

dist=${PYSHM_DIST:-}
if [ -n "$dist" ]; then
    step "the release's wheels for CPython ${ALL[*]} ($dist)"
else
    step "wheels for CPython ${ALL[*]}"
    dist="$work/dist"
    for v in "${ALL[@]}"; do
        "$py" tools/winbuild.py wheel "$v" "$dist" | tail -1
    done
fi
wheels=()
for v in "${ALL[@]}"; do
    w=$(find "$dist" -maxdepth 1 -name "pyshm_ipc-*-cp${v/./}-cp${v/./}-win_amd64.whl")
    [ -n "$w" ] || { echo "windows: no win_amd64 wheel for CPython $v in $dist" >&2; exit 1; }
    wheels+=("$w")
done
"$py" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q check-wheel-contents
"$work/tools/bin/check-wheel-contents" "${wheels[@]}"

summary=()
for v in "${suites[@]}"; do
    step "the suite in Windows CPython $v under Wine"
    t=$SECONDS
    "$py" tools/winbuild.py test "$v" --wheel "$(find "$dist" -maxdepth 1 \
        -name "pyshm_ipc-*-cp${v/./}-cp${v/./}-win_amd64.whl")" -q -rs | tee "$work/log-$v"
    # pytest's summary is the last line but winbuild's own two.
    summary+=("$v: $(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$work/log-$v" | tail -1) [$((SECONDS - t)) s]")
done

step_note "passed in $((SECONDS - t0)) s"
printf '%s\n' "${summary[@]}"
