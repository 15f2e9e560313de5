#!/usr/bin/env bash
# The tests of `make test`, on each supported stack (README, "Supported
# versions"), each in the virtualenv the Makefile makes for it:
#   py3.11-django5.2  .venv/                   the whole suite (the primary stack)
#   py3.13-django6.1  .venv-py3.13-django6.1/  the end-to-end tests (-m e2e),
#                     less the fault and benchmark modules (FAULT_MODULES)
# Both at once: the machine has two cores, and much of a run is waiting on
# processes and time passing. The primary stack's output streams; the other's
# is kept in a log, printed when both are done. The exit status is non-zero
# if either failed.
#
#   scripts/test-stacks.sh [STACK] [-- PYTEST-ARGS...]
#
# STACK runs that stack alone, in the foreground; PYTEST-ARGS are added to
# every pytest run (e.g. `-- -x` or `-- tests/test_auth.py`).
#
# Each run spreads its modules over WSSERVER_TEST_WORKERS pytest-xdist
# workers (2 unless set; 0: none), a module's tests in one worker, in order:
# most of a test's time is spent waiting on processes it started, so four
# processes on two cores finish sooner than two.
set -uo pipefail
cd "$(dirname "$0")/.."

PRIMARY=py3.11-django5.2
declare -A VENVS=([py3.11-django5.2]=.venv [py3.13-django6.1]=.venv-py3.13-django6.1)
STACKS=(py3.11-django5.2 py3.13-django6.1)

# Not run on the other stacks: slow tests of the sidecar's own I/O under
# faults (outages of throwaway servers, stalled clients, the publisher's
# failure modes, a Redis Cluster's failovers and moves) and the benchmark's; tests/test_cross_versions.py runs the
# two stacks against each other from the primary stack's run already.
FAULT_MODULES=(
    tests/test_hardening.py
    tests/test_stalls.py
    tests/test_publisher_faults.py
    tests/test_bench.py
    tests/test_cross_versions.py
    tests/test_cluster.py
)

selected=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    selected+=("$1")
    shift
done
[ "${1:-}" = "--" ] && shift
extra=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${STACKS[@]}")
for stack in "${selected[@]}"; do
    if [ -z "${VENVS[$stack]:-}" ]; then
        echo "test-stacks: unknown stack '$stack' (one of: ${STACKS[*]})" >&2
        exit 2
    fi
    if [ ! -x "${VENVS[$stack]}/bin/python" ]; then
        echo "test-stacks: no ${VENVS[$stack]}/ for $stack: run \`make stacks\`" >&2
        exit 2
    fi
done

# run STACK: pytest on the stack's virtualenv, with what that stack runs.
run() {
    local stack=$1 args=()
    local workers=${WSSERVER_TEST_WORKERS:-2}
    [ "$workers" != 0 ] && args+=(-n "$workers" --dist loadfile)
    if [ "$stack" != "$PRIMARY" ]; then
        args+=(-m e2e)
        for module in "${FAULT_MODULES[@]}"; do
            args+=("--ignore=$module")
        done
        # A cache of its own: the two runs may write theirs at once.
        args+=(-o "cache_dir=.pytest_cache/$stack")
    fi
    "${VENVS[$stack]}/bin/python" -m pytest "${args[@]}" "${extra[@]}"
}

duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

if [ ${#selected[@]} -eq 1 ]; then
    start=$SECONDS
    run "${selected[0]}"
    status=$?
    echo "test-stacks: ${selected[0]}: exit $status in $(duration $((SECONDS - start)))"
    exit $status
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/wsserver-test-stacks.XXXXXX")
declare -A pids
# Interrupted (Ctrl-C): stop the background runs too (each a subshell and its pytest).
stop_background() {
    for pid in "${pids[@]}"; do
        kill $(pgrep -P "$pid") "$pid" 2>/dev/null
    done
    exit 130
}
trap stop_background INT TERM
background=()
for stack in "${selected[@]}"; do
    [ "$stack" = "$PRIMARY" ] && continue
    background+=("$stack")
    echo "test-stacks: $stack in the background (log: $logs/$stack.log)"
    (
        start=$SECONDS
        run "$stack"
        echo $? >"$logs/$stack.status"
        echo $((SECONDS - start)) >"$logs/$stack.seconds"
    ) >"$logs/$stack.log" 2>&1 &
    pids[$stack]=$!
done

summary=()
failed=0
if [[ " ${selected[*]} " == *" $PRIMARY "* ]]; then
    echo "test-stacks: $PRIMARY"
    start=$SECONDS
    run "$PRIMARY"
    status=$?
    summary+=("$PRIMARY: exit $status in $(duration $((SECONDS - start)))")
    [ $status -eq 0 ] || failed=1
fi
for stack in "${background[@]}"; do
    wait "${pids[$stack]}"
    echo
    echo "test-stacks: ===== $stack (${VENVS[$stack]}) ====="
    cat "$logs/$stack.log"
    status=$(cat "$logs/$stack.status" 2>/dev/null || echo 1)
    seconds=$(cat "$logs/$stack.seconds" 2>/dev/null || echo 0)
    summary+=("$stack: exit $status in $(duration "$seconds")")
    [ "$status" -eq 0 ] || failed=1
done
echo
printf 'test-stacks: %s\n' "${summary[@]}"
rm -rf "$logs"
exit $failed
