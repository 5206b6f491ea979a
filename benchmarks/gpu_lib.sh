# Shared set-up of the GPU scripts (gpu_checks.sh, gpu_acceptance.sh); source it after `set -u`.
# Sets DEST (${OUT:-benchmarks/results}/gpu), PY (${PYTHON:-python}) and LIMIT (${STEP_LIMIT_S:-$1}),
# puts the checkout on PYTHONPATH and defines `step NAME COMMAND...`: the command runs with a time limit,
# its output goes to $DEST/NAME.log, one summary line is printed (plus the log's tail when TAIL > 0),
# and the command's status is returned.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
DEST=${OUT:-benchmarks/results}/gpu
mkdir -p "$DEST"
PY=${PYTHON:-python}
LIMIT=${STEP_LIMIT_S:-${1:-120}}
TAIL=${TAIL:-0}

step() {
    local name=$1; shift
    local start=$SECONDS
    timeout "$LIMIT" "$@" >"$DEST/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc, $((SECONDS - start)) s (log: $DEST/$name.log)"
    [ "$TAIL" -gt 0 ] && tail -n "$TAIL" "$DEST/$name.log"
    return $rc
}
