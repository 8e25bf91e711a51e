#!/usr/bin/env bash
# aarch64: the release's aarch64 wheels installed and tested in Debian arm64
# chroots under qemu-user.  binfmt_misc hands every aarch64 program to
# qemu-aarch64-static (Debian's qemu-user-static; registered here with its
# own line, flag F, when the machine has none), so inside a chroot the
# interpreter, pip, pytest and every child process run as aarch64 code,
# translated instruction by instruction on this x86_64 machine.
#
#   bookworm (arm64)   CPython 3.11     by default (CI)
#   forky (arm64)      CPython 3.14, 3.15  by default (CI)
#   bullseye (arm64)   CPython 3.9      when asked for: bash .ci/qemu.sh 3.9
#   trixie (arm64)     CPython 3.13     when asked for: bash .ci/qemu.sh 3.13
#
# (The release's other aarch64 wheels, 3.9 and 3.13, run only when asked
# for: on a fresh machine each chroot costs 4-7 minutes of debootstrap
# under emulation -- dpkg byte-compiles the standard library -- which CI's
# budget does not hold.  There are no aarch64 wheels for 3.10 and 3.12:
# see tools/release.py.)
#
# The chroots are made by debootstrap --arch arm64 on first use and cached
# in $PYSHM_CHROOT_CACHE (default /var/cache/pyshm-ci), as .ci/versions.sh
# caches its own; /proc is mounted and a tmpfs of its own is /dev/shm for a
# run, undone at the end.  Each version gets a fresh venv (the chroot's
# python3.X -m venv) with the release wheel and the test dependencies, from
# aarch64 wheels for that CPython that the host's pip installs into it
# (--target; nothing runs pip under emulation, nothing fetches inside).  The tests are the
# release sdist's, run from a folder that holds no pyshm package.
#
# What runs is a subset, because emulation costs about ten times the
# native time: the SELECT list below, and why each part is left out.  What
# emulation cannot show: x86_64 orders memory more strongly than ARM cores,
# and qemu-user runs the aarch64 code on the host's cores with the host's
# ordering, so a missing barrier that a real ARM core would expose passes
# here; io_uring and futex_waitv are not emulated by this qemu (ENOSYS), so
# the readiness engine is the thread engine and many-object waits take the
# fallback path -- the same paths a kernel without them takes.
#
# Usage: bash .ci/qemu.sh [VERSION...]   (as root; PYSHM_DIST: the release
# folder, else tools/release.py makes the aarch64 wheels it needs first).
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A SUITE=([3.9]=bullseye [3.11]=bookworm [3.13]=trixie [3.14]=forky [3.15]=forky)
# (debootstrap resolves dependencies only roughly, and never through virtual
# packages: bookworm's python3.11-venv needs python3.11-distutils, which
# python3-distutils provides, named.)
declare -A PACKAGES=(
    [bullseye]=python3.9,python3.9-venv,python3-distutils
    [bookworm]=python3.11,python3.11-venv,python3-distutils
    [trixie]=python3.13,python3.13-venv
    [forky]=python3.14,python3.14-venv,python3.15,python3.15-venv
)
wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then wanted=(3.11 3.14 3.15); fi
MIRROR=${PYSHM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The test dependencies that run here: the "test" extra without NumPy and
# mypy (the parts that need them are left out below).
DEPS=(pytest hypothesis anyio typing_extensions)

# The subset, and what is left out:
#   run: tests/segments, tests/named, and of tests/slots and tests/channels
#   the API, the error table, processes, threads, objects, loans and
#   readiness files -- messages and slots between processes and threads,
#   the engines as the kernel seen through qemu offers them;
#   left out as files: the load and stress files (test_load, the fault
#   campaigns of test_faults, the fuzzers of test_hostile_memory: minutes
#   natively, an hour here), test_asyncio (each event loop, thousands of
#   round trips), test_fallback (another build of the same binding),
#   tests/native, tests/capi, tests/examples, tests/windows, tests/c (C
#   programs compiled for the host: the chroots have no compiler),
#   tests/tools and tests/distribution (the command line, the bench, the
#   release tools: Python code the x86_64 passes run; the typing checks need
#   mypy);
#   left out because qemu-user does not do what the kernel does (each seen:
#   the x86_64 wheel, which passes them natively, fails the same tests when
#   its interpreter runs under qemu-x86_64): the leak counts
#   (segments/test_leaks: the emulator's own memory grows with every
#   mapping), the loans' private copies at fork and at close (mremap of a
#   shared mapping, which qemu-user does not emulate as Linux does: the
#   fork and refused-loan tests of channels/test_loans and slots, and the
#   thread stress tests that fork inside loans); and, with reasons of their
#   own, /proc/PID/syscall (it shows the emulator's x86_64 system call, not
#   the aarch64 one the test looks for), a seccomp filter (not applied to
#   the emulated program) and futex_waitv (not emulated: ENOSYS).
SELECT=(tests/segments tests/named
        tests/slots/test_api.py tests/slots/test_bad_input.py
        tests/slots/test_processes.py tests/slots/test_threads.py
        tests/channels/test_api.py tests/channels/test_bad_input.py
        tests/channels/test_processes.py tests/channels/test_threads.py
        tests/channels/test_objects.py tests/channels/test_loans.py
        tests/channels/test_readiness.py
        --ignore=tests/segments/test_leaks.py
        --deselect=tests/slots/test_api.py::test_a_refused_reserve_ends_at_close
        --deselect=tests/slots/test_threads.py::test_eight_threads_share_one_slot
        --deselect=tests/slots/test_threads.py::test_fork_inside_a_block_leaves_the_parents_value_alone
        --deselect=tests/channels/test_loans.py::test_close_ends_a_refused_loan
        --deselect=tests/channels/test_loans.py::test_fork_inside_reserve_publishes_nothing_in_the_child
        --deselect=tests/channels/test_loans.py::test_fork_inside_recv_view_consumes_nothing_in_the_child
        --deselect=tests/channels/test_loans.py::test_close_in_the_child_inside_an_inherited_loan
        --deselect=tests/channels/test_loans.py::test_two_threads_forking_at_once_inside_a_loan
        --deselect=tests/channels/test_loans.py::test_loan_of_an_ended_thread_with_a_live_export_ends_at_close
        --deselect=tests/channels/test_threads.py::test_eight_threads_share_one_channel
        --deselect=tests/segments/test_processes.py::test_open_waits_for_the_creator_to_size_it
        --deselect=tests/channels/test_readiness.py::test_io_uring_refused_falls_back_to_the_thread_engine
        --deselect=tests/channels/test_readiness.py::test_thread_engine_sleeps_in_the_kernel_beyond_127_watches)

# The emulated CPU: a Neoverse N1 (Armv8.2, the cores of AWS Graviton2 and
# Ampere Altra), not qemu's default "max".  With "max", forky's glibc
# picks its SVE string functions, which qemu 7.2 emulates about ten times
# slower than NEON: a 1 GiB exchange between two processes took 27.7 s
# against 2.6 s, and the subset could not run on 3.14 and 3.15 within CI's
# budget.  Every version runs SELECT.
QEMU_CPU=neoverse-n1

# step TITLE, and a table of the steps' wall times at the end, also when
# a step fails (.ci/steps.sh).
STEP_MARK=---- STEP_LABEL="qemu: "
# shellcheck source=.ci/steps.sh
. .ci/steps.sh
t0=$SECONDS
work=$(mktemp -d /tmp/pyshm-qemu.XXXXXX)
mounts=()
cleanup() {
    local m
    for m in "${mounts[@]}"; do umount "$m" || umount -l "$m" || true; done
    rm -rf "$work"
    step_times
}
trap cleanup EXIT
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV || true

step "binfmt_misc: aarch64 programs to qemu-aarch64-static"
command -v qemu-aarch64-static >/dev/null || { echo "qemu: qemu-user-static is not installed" >&2; exit 1; }
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then mount -t binfmt_misc binfmt_misc "$binfmt"; fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    # Debian's registration line (flags OPF: F opens the interpreter now, so
    # that it works inside any chroot without a copy there).
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$binfmt/register"
fi
grep -q '^enabled' "$binfmt/qemu-aarch64" || { echo "qemu: binfmt entry qemu-aarch64 is disabled" >&2; exit 1; }

dist=${PYSHM_DIST:-}
if [ -z "$dist" ]; then
    step "tools/release.py: the aarch64 wheels for CPython ${wanted[*]}"
    dist="$work/dist"
    python3 tools/release.py "$dist" --python "$(IFS=,; echo "${wanted[*]}")" --arch aarch64 \
        --no-windows
fi
sdist=$(find "$dist" -maxdepth 1 -name 'pyshm_ipc-*.tar.gz')
[ -n "$sdist" ] || { echo "qemu: no sdist in $dist" >&2; exit 1; }
mkdir -p "$work/sdist"
tar -xzf "$sdist" -C "$work/sdist" --strip-components=1

chroot_dir() {   # chroot_dir SUITE
    local cache=${PYSHM_CHROOT_CACHE:-/var/cache/pyshm-ci} key
    key=$(printf '%s %s %s' "${PACKAGES[$1]}" "$MIRROR" arm64 | sha256sum | cut -c1-12)
    echo "$cache/$1-arm64-$key"
}

make_chroot() {   # make_chroot SUITE DIR
    local suite=$1 dir=$2 script=()
    if [ -f "$dir/.pyshm-ready" ]; then return; fi
    command -v debootstrap >/dev/null || { echo "qemu: debootstrap is not installed" >&2; exit 1; }
    step "debootstrap --arch arm64 Debian $suite into $dir"
    # bookworm's debootstrap has no forky script; sid's works.
    if [ "$suite" = forky ]; then script=(/usr/share/debootstrap/scripts/sid); fi
    rm -rf "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    debootstrap --arch=arm64 --variant=minbase --include="${PACKAGES[$suite]}" "$suite" \
        "$dir.tmp" "$MIRROR" "${script[@]}" >"$work/debootstrap-$suite.log" 2>&1 \
        || { tail -20 "$work/debootstrap-$suite.log"; echo "qemu: debootstrap failed" >&2; exit 1; }
    touch "$dir.tmp/.pyshm-ready"
    mv "$dir.tmp" "$dir"
}

summary=()
show='import platform, sys, pyshm
print("CPython", sys.version.split()[0], "on", platform.machine(), "pyshm from", pyshm.__file__)
assert platform.machine() == "aarch64", platform.machine()
assert "/site-packages/" in pyshm.__file__, pyshm.__file__'

for v in "${wanted[@]}"; do
    suite=${SUITE[$v]:-}
    [ -n "$suite" ] || { echo "qemu: no arm64 chroot with CPython $v" >&2; exit 1; }
    t=$SECONDS
    wheel=$(find "$dist" -maxdepth 1 -name "pyshm_ipc-*-cp${v/./}-cp${v/./}-*manylinux*_aarch64*.whl")
    [ -n "$wheel" ] || { echo "qemu: no aarch64 wheel for CPython $v in $dist" >&2; exit 1; }
    dir=$(chroot_dir "$suite")
    make_chroot "$suite" "$dir"
    tests=("${SELECT[@]}")
    step "CPython $v (Debian $suite arm64, qemu-user, -cpu $QEMU_CPU): $(basename "$wheel")"
    rm -rf "$dir/work" && mkdir -p "$dir/work/run"
    cp -r "$work/sdist" "$dir/work/src"
    cp -r "$dir/work/src/tests" "$dir/work/src/pyproject.toml" "$dir/work/run/"
    mkdir -p "$dir/proc" "$dir/dev/shm"
    mount -t proc proc "$dir/proc" && mounts+=("$dir/proc")
    mount -t tmpfs -o mode=1777 tmpfs "$dir/dev/shm" && mounts+=("$dir/dev/shm")
    # A venv without pip (ensurepip under emulation costs minutes); the
    # host's pip installs the wheel and the test dependencies into it, as
    # aarch64 wheels for this CPython (all of them pure Python but pyshm's).
    chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        QEMU_CPU="$QEMU_CPU" \
        "python$v" -m venv --without-pip "/work/venv-$v"
    # (Resolved by `pip download`, which honours each package's
    # Requires-Python for the target version; `pip install --target` with
    # --python-version took pytest 9 for CPython 3.9.  Then installed as
    # those files, nothing resolved again.)
    # pip evaluates environment markers with the host's Python (3.11), not
    # the target's: what pytest, anyio and hypothesis need only before 3.11
    # is named here.
    deps=("${DEPS[@]}")
    case $v in 3.9|3.10) deps+=(exceptiongroup tomli) ;; esac
    rm -rf "$work/wheels-$v"
    python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
        --platform manylinux2014_aarch64 --python-version "$v" --implementation cp \
        -d "$work/wheels-$v" "$wheel" "${deps[@]}"
    python3 -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --platform manylinux2014_aarch64 --python-version "$v" --implementation cp \
        --target "$dir/work/venv-$v/lib/python$v/site-packages" "$work/wheels-$v"/*.whl
    chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        QEMU_CPU="$QEMU_CPU" \
        V="$v" SHOW="$show" \
        bash -c 'set -euo pipefail
                 (cd / && "/work/venv-$V/bin/python" -c "$SHOW")
                 cd /work/run
                 PYSHM_SOURCE_DIR=/work/src exec "/work/venv-$V/bin/python" -m pytest -q -rs \
                     -p no:cacheprovider --durations=5 "$@"' bash "${tests[@]}" \
        | tee "$work/log-$v"
    summary+=("$v: $(tail -1 "$work/log-$v") [$((SECONDS - t)) s]")
    umount "$dir/dev/shm" "$dir/proc"
    mounts=()
    rm -rf "$dir/work"
done

step_note "passed in $((SECONDS - t0)) s"
printf '%s\n' "${summary[@]}"
