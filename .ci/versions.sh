#!/usr/bin/env bash
# The release's x86_64 wheels, each installed into a fresh venv of its
# CPython and tested there, for every CPython that pyproject.toml claims
# besides the one .ci/package.sh tests (its venv's, 3.11):
#
#   3.9 3.10 3.12 3.13   pyenv's, from the machine image (~/.pyenv/versions);
#                        a missing one fails the run, it is never skipped
#   3.14 3.15            Debian forky's, in a debootstrap chroot cached in
#                        $PYSHM_CHROOT_CACHE (default /var/cache/pyshm-ci),
#                        made on first use (~2 min); /proc mounted and
#                        /dev/shm and /dev/pts bound in for the run, undone
#                        at the end
#
# The wheels are those of tools/release.py in $PYSHM_DIST (.ci/run's
# release step; without it this script makes the x86_64 wheels it needs
# with release.py first): nothing is compiled here for pyshm itself, the
# wheel users get is what runs.  Each version gets a fresh venv with the
# wheel and its test extras (pip install "WHEEL[test]"); the tests are the
# release sdist's, run from a folder that holds no pyshm package (as
# .ci/package.sh does), so the tests and their child processes import the
# installed pyshm; PYSHM_SOURCE_DIR names the unpacked sdist for the tests
# that compile C peers or read the README.  Left out, because they do not
# depend on the Python version and the main pass runs them: tests/native
# (the C programs alone, valgrind), the C API's programs under valgrind
# (tests/capi/test_memory.py) and its header compiled as C++
# (test_header_works_from_cplusplus; the chroot has neither valgrind nor a
# C++ compiler), tests/windows/test_wine.py (the C programs under Wine),
# tests/channels/test_fallback.py (the same binding over another C wait
# scheme), tests/tools/test_winbuild.py (the host's cross-build tool) and
# tests/distribution/test_release.py (the release tool's checks).
#
# Usage: bash .ci/versions.sh [VERSION...]   (default: all six; as root for
# the chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PYENV_VERSIONS=(3.9 3.10 3.12 3.13)
CHROOT_VERSIONS=(3.14 3.15)
wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then wanted=("${PYENV_VERSIONS[@]}" "${CHROOT_VERSIONS[@]}"); fi
select=(-p no:cacheprovider --ignore=tests/native --ignore=tests/windows/test_wine.py
        --ignore=tests/channels/test_fallback.py --ignore=tests/tools/test_winbuild.py
        --ignore=tests/distribution/test_release.py --ignore=tests/capi/test_memory.py
        --deselect=tests/capi/test_files.py::test_header_works_from_cplusplus)

# Debian forky has python3.14 and python3.15; bookworm's debootstrap has no
# forky script, sid's works.  The package list names the cache entry.
CHROOT_PACKAGES=python3.14-dev,python3.14-venv,python3.15-dev,python3.15-venv,gcc,libc6-dev,make,strace
MIRROR=${PYSHM_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# step TITLE, and a table of the steps' wall times at the end, also when
# a step fails (.ci/steps.sh).
STEP_MARK=---- STEP_LABEL="versions: "
# shellcheck source=.ci/steps.sh
. .ci/steps.sh
t0=$SECONDS
work=$(mktemp -d /tmp/pyshm-versions.XXXXXX)
mounts=()
cleanup() {
    local m
    for m in "${mounts[@]}"; do umount "$m" || umount -l "$m" || true; done
    rm -rf "$work"
    step_times
}
trap cleanup EXIT
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV || true
export CI=${CI:-true} PYSHM_WERROR=1

# The release: its x86_64 wheels and its sdist (the tests, the C sources).
dist=${PYSHM_DIST:-}
if [ -z "$dist" ]; then
    step "tools/release.py: the x86_64 wheels for CPython ${wanted[*]}"
    dist="$work/dist"
    python3 tools/release.py "$dist" --python "$(IFS=,; echo "${wanted[*]}")" --arch x86_64 \
        --no-windows
fi
sdist=$(find "$dist" -maxdepth 1 -name 'pyshm_ipc-*.tar.gz')
[ -n "$sdist" ] || { echo "versions: no sdist in $dist" >&2; exit 1; }
mkdir -p "$work/sdist"
tar -xzf "$sdist" -C "$work/sdist" --strip-components=1

wheel_for() {   # wheel_for 3.X: the release's x86_64 wheel for that CPython
    local tag found
    tag=cp${1/./}
    found=$(find "$dist" -maxdepth 1 -name "pyshm_ipc-*-$tag-$tag-*manylinux*_x86_64*.whl")
    if [ -z "$found" ] || [ "$(printf '%s\n' "$found" | wc -l)" -ne 1 ]; then
        echo "versions: not one x86_64 wheel for CPython $1 in $dist: ${found:-none}" >&2
        exit 1
    fi
    printf '%s\n' "$found"
}

summary=()
# Which Python and which pyshm a venv has (run from /, where no pyshm is).
show='import sys, pyshm; print("CPython", sys.version.split()[0], "pyshm from", pyshm.__file__)'

run_pyenv() {   # run_pyenv 3.X
    local v=$1 pyroot py wheel t
    t=$SECONDS
    pyroot=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    py=$(find "$pyroot/versions" -maxdepth 1 -name "$v.*" 2>/dev/null | sort -V | tail -1)
    if [ -z "$py" ] || [ ! -x "$py/bin/python$v" ]; then
        echo "versions: no CPython $v under $pyroot/versions: the machine image must provide it" >&2
        exit 1
    fi
    wheel=$(wheel_for "$v")
    step "CPython $v ($py): $(basename "$wheel")"
    mkdir -p "$work/run-$v"
    cp -r "$work/sdist/tests" "$work/sdist/pyproject.toml" "$work/run-$v/"
    "$py/bin/python$v" -m venv "$work/venv-$v"
    "$work/venv-$v/bin/python" -m pip install -q --upgrade pip
    # setuptools: tests/distribution/test_build.py builds from source.
    "$work/venv-$v/bin/python" -m pip install -q --prefer-binary setuptools "$wheel[test]"
    # The installed pyshm, not a source tree's (from /, where no pyshm is).
    (cd / && "$work/venv-$v/bin/python" -c "$show")
    (cd "$work/run-$v" && PYSHM_SOURCE_DIR="$work/sdist" "$work/venv-$v/bin/pytest" -q --durations=8 "${select[@]}") \
        | tee "$work/log-$v"
    summary+=("$v: $(tail -1 "$work/log-$v") [$((SECONDS - t)) s]")
}

chroot_dir() {
    local cache=${PYSHM_CHROOT_CACHE:-/var/cache/pyshm-ci}
    local key
    key=$(printf '%s %s' "$CHROOT_PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
    echo "$cache/forky-$key"
}

make_chroot() {
    local dir=$1
    if [ -f "$dir/.pyshm-ready" ]; then return; fi
    command -v debootstrap >/dev/null || { echo "versions: debootstrap is not installed" >&2; exit 1; }
    step "debootstrap Debian forky into $dir"
    rm -rf "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    debootstrap --variant=minbase --include="$CHROOT_PACKAGES" forky "$dir.tmp" "$MIRROR" \
        /usr/share/debootstrap/scripts/sid >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; echo "versions: debootstrap failed" >&2; exit 1; }
    touch "$dir.tmp/.pyshm-ready"
    mv "$dir.tmp" "$dir"
}

run_chroot() {   # run_chroot 3.X
    local v=$1 dir wheel t
    t=$SECONDS
    dir=$(chroot_dir)
    make_chroot "$dir"
    if [ ${#mounts[@]} -eq 0 ]; then
        mount -t proc proc "$dir/proc" && mounts+=("$dir/proc")
        mount --bind /dev/shm "$dir/dev/shm" && mounts+=("$dir/dev/shm")
        # Terminals (pty.openpty): the CLI's tests run commands on one.
        mkdir -p "$dir/dev/pts"
        mount --bind /dev/pts "$dir/dev/pts" && mounts+=("$dir/dev/pts")
        # Name resolution and the host's CA bundle for pip (a proxy's CA may be in it).
        cp /etc/resolv.conf "$dir/etc/resolv.conf"
        cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/pyshm-host-ca.crt"
    fi
    wheel=$(wheel_for "$v")
    step "CPython $v (Debian forky chroot $dir): $(basename "$wheel")"
    rm -rf "$dir/work" && mkdir -p "$dir/work/run" "$dir/work/dist"
    cp -r "$work/sdist" "$dir/work/src"
    cp "$wheel" "$dir/work/dist/"
    cp -r "$dir/work/src/tests" "$dir/work/src/pyproject.toml" "$dir/work/run/"
    chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        CI="$CI" PYSHM_WERROR=1 PIP_CERT=/etc/ssl/certs/pyshm-host-ca.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 V="$v" SHOW="$show" WHEEL="/work/dist/$(basename "$wheel")" \
        bash -c 'set -euo pipefail
                 "python$V" -m venv "/work/venv-$V"
                 "/work/venv-$V/bin/python" -m pip install -q --prefer-binary setuptools "$WHEEL[test]"
                 (cd / && "/work/venv-$V/bin/python" -c "$SHOW")
                 cd /work/run
                 PYSHM_SOURCE_DIR=/work/src exec "/work/venv-$V/bin/pytest" -q "$@"' \
        bash "${select[@]}" \
        | tee "$work/log-$v"
    summary+=("$v: $(tail -1 "$work/log-$v") [$((SECONDS - t)) s]")
    rm -rf "$dir/work"
}

for v in "${wanted[@]}"; do
    case " ${PYENV_VERSIONS[*]} " in
        *" $v "*) run_pyenv "$v"; continue ;;
    esac
    case " ${CHROOT_VERSIONS[*]} " in
        *" $v "*) run_chroot "$v"; continue ;;
    esac
    echo "versions: no way to run CPython $v here" >&2
    exit 1
done

step_note "passed in $((SECONDS - t0)) s"
printf '%s\n' "${summary[@]}"
