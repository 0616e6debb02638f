# shellcheck shell=bash
# Loud failure for Baton's shell scripts. Sourced by deploy/{bootstrap,demo,test} and deploy/lab.
#
# `set -e` alone ends a script without a word when a command fails (the demo once stopped
# silently after its checks). report_failures installs an ERR trap that says which step failed,
# the command, where, its exit code and what to do, then exits with that code. `step` names the
# step the script is in and the advice to print if it fails.
#
# With errtrace (-E) the trap also runs inside functions, where `set -e` would otherwise exit
# without a word. Inside subshells (command substitutions, pipelines) it does nothing: there
# `set -e` keeps its usual meaning, and the command that carried the subshell is reported by
# the main shell when its failure ends the script.

FAIL_SCRIPT=${FAIL_SCRIPT:-$(basename "$0")}
FAIL_STEP=""
FAIL_HINT=""

# report_failures NAME [DEFAULT_HINT]
report_failures() {
    FAIL_SCRIPT=$1
    FAIL_DEFAULT_HINT=${2:-}
    set -Eeuo pipefail
    trap 'fail_report $? "$BASH_COMMAND" "${BASH_SOURCE[0]}" "$LINENO" "${FUNCNAME[0]:-main}"' ERR
}

# step TITLE [HINT]: print a step header and remember both for the failure report.
step() {
    FAIL_STEP=$1
    FAIL_HINT=${2:-}
    printf '\n\033[1m== %s\033[0m\n' "$1"
}

fail_report() {
    local rc=$1 cmd=$2 file=$3 line=$4 func=$5 hint
    ((BASH_SUBSHELL == 0)) || return 0
    trap - ERR
    {
        printf '\n%s: FAILED' "$FAIL_SCRIPT"
        [[ -n $FAIL_STEP ]] && printf ' in step "%s"' "$FAIL_STEP"
        printf ' (exit %d)\n  command: %s\n  at:      %s:%s (%s)\n' "$rc" "$cmd" "${file#"$PWD"/}" "$line" "$func"
        hint=${FAIL_HINT:-${FAIL_DEFAULT_HINT:-}}
        if [[ -n $hint ]]; then printf '  what to do: %s\n' "$hint"; fi
    } >&2
    exit "$rc"
}
