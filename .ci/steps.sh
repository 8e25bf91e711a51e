# .ci/steps.sh -- sourced by .ci/run, .ci/package.sh, .ci/versions.sh and
# .ci/windows.sh: their steps, and how long each took.
#
#   step TITLE    ends the step before, prints TITLE as a header
#                 (STEP_MARK on both sides, after STEP_LABEL) and starts timing
#   step_note TEXT  the same header, timing nothing ("passed in 95 s")
#   step_times    a table of each step's wall time and the total; the
#                 scripts call it from their EXIT trap, so a run that fails
#                 shows where its time went too
#
# A step's time runs until the next step starts (or the script ends).
# Set STEP_MARK and STEP_LABEL before sourcing to change the header.
STEP_MARK=${STEP_MARK:-====}
STEP_LABEL=${STEP_LABEL:-}
_step_names=()
_step_starts=()
_steps_t0=$SECONDS

step() {
    _step_names+=("$*")
    _step_starts+=("$SECONDS")
    printf '\n%s %s%s %s\n' "$STEP_MARK" "$STEP_LABEL" "$*" "$STEP_MARK"
}

step_note() {
    printf '\n%s %s%s %s\n' "$STEP_MARK" "$STEP_LABEL" "$*" "$STEP_MARK"
}

_mmss() { printf '%4d:%02d' $(($1 / 60)) $(($1 % 60)); }

step_times() {
    local n=${#_step_names[@]} i end
    [ "$n" -gt 0 ] || return 0
    printf '\n%s %sstep times (wall, m:ss) %s\n' "$STEP_MARK" "$STEP_LABEL" "$STEP_MARK"
    for ((i = 0; i < n; i++)); do
        if [ $((i + 1)) -lt "$n" ]; then end=${_step_starts[i + 1]}; else end=$SECONDS; fi
        printf '%s  %s\n' "$(_mmss $((end - _step_starts[i])))" "${_step_names[i]}"
    done
    printf '%s  total\n' "$(_mmss $((SECONDS - _steps_t0)))"
}
