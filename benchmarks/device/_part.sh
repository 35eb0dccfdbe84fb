# Shared by gpu_rows.sh and gpu_overhead.sh (sourced): needs LIMIT, T0 and LOG set.
# part NAME TIMEOUT_S CMD...: run CMD under min(TIMEOUT_S x TSCALE, time left), log to $LOG,
# never abort; a part with under 15 s left is skipped.
part() {
    local name=$1 t=$(($2 * ${TSCALE:-1})) left rc
    shift 2
    left=$((LIMIT - (SECONDS - T0)))
    ((t > left)) && t=$left
    if ((t < 15)); then
        echo "== $name: skipped, ${left} s left of ${LIMIT}" | tee -a "$LOG"
        return
    fi
    echo "== $name (timeout ${t} s, at ${SECONDS}s): $*" | tee -a "$LOG"
    timeout -k 10 "$t" "$@" 2>&1 | grep --line-buffered -v -e SyntaxWarning -e "maxMemoryUsage = " | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    echo "== $name: rc=$rc after $((SECONDS - T0)) s" | tee -a "$LOG"
}
