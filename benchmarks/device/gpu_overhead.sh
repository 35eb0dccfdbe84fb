#!/usr/bin/env bash
# SMOACS engine overhead on CUDA before/after the per-step overhead cuts, in one call of the
# device tool: propose_overhead --whole on cuda at n 8 (the recorded 1.503 row's settings) and
# n 64, each with this tree's engine and with the engine before the cuts (.whl/before/, a copy
# of benchmarks/ and smoacs_flows/ at the commit before them), plus a torch.profiler/cProfile
# summary of one n 8 run. Needs .whl/ as for gpu_rows.sh, with .whl/COMMIT and .whl/before/
# (benchmarks/device/README.md). Results: $OUT/*.json, $OUT/profile_n8.txt, $OUT/log.txt.
#
# run command (from the repo root), carry [".whl"], timeout_s 300:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && rm -f /tmp/site/pynvml.py && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/device/gpu_overhead.sh
#
# Each part runs under its own timeout; no part starts after GPU_OVERHEAD_LIMIT_S (default
# 170 s). Dry run on a CPU machine: GPU_OVERHEAD_DEVICE=cpu GPU_OVERHEAD_REPS=2
# GPU_OVERHEAD_N2=16 GPU_OVERHEAD_REPS2=1 GPU_OVERHEAD_STEPS=4 GPU_OVERHEAD_TSCALE=6
# GPU_OVERHEAD_LIMIT_S=1200 (TSCALE multiplies every part's timeout).
set -u
: "${OUT:?OUT must be set (the device tool sets it)}"
export BENCH_RESULTS=$OUT PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
BENCH_COMMIT=${BENCH_COMMIT:-$(cat .whl/COMMIT 2>/dev/null || echo "unknown (no .whl/COMMIT)")}
export BENCH_COMMIT
BEFORE_COMMIT=$(cat .whl/before/COMMIT 2>/dev/null || echo "unknown")
LIMIT=${GPU_OVERHEAD_LIMIT_S:-170}
DEV=${GPU_OVERHEAD_DEVICE:-cuda}
REPS=${GPU_OVERHEAD_REPS:-10}
N2=${GPU_OVERHEAD_N2:-64}
REPS2=${GPU_OVERHEAD_REPS2:-3}
STEPS=${GPU_OVERHEAD_STEPS:-20}
TSCALE=${GPU_OVERHEAD_TSCALE:-1}
LOG=$OUT/log.txt
T0=$SECONDS

source "$(dirname "$0")/_part.sh"

nvidia-smi 2>&1 | head -12 | tee -a "$LOG"
echo "commit (after): $BENCH_COMMIT; before: $BEFORE_COMMIT" | tee -a "$LOG"
part env 30 python3 benchmarks/device/env_check.py "$OUT/env.json"
python3 -c "import sys; sys.path.insert(0, '.whl/before/benchmarks'); import _common, smoacs_flows
print('before: smoacs_flows from', smoacs_flows.__file__)" 2>&1 | tee -a "$LOG"

# whole runs, >= REPS each, no time budget: after (this tree), then before (.whl/before/,
# which imports its own smoacs_flows: benchmarks/_common.py puts its tree first on sys.path)
ARGS=(--whole --predictor chgnet --steps "$STEPS" --threads 1 --device "$DEV" --budget 0)
part n8_after 40 python3 benchmarks/propose_overhead.py "${ARGS[@]}" --n 8 --min-reps "$REPS" \
    --name propose_overhead_gpu_n8
BENCH_COMMIT=$BEFORE_COMMIT part n8_before 40 python3 .whl/before/benchmarks/propose_overhead.py \
    "${ARGS[@]}" --n 8 --min-reps "$REPS" --name propose_overhead_gpu_n8_before
part profile_n8 35 python3 benchmarks/device/profile_run.py "$OUT/profile_n8" --device "$DEV" \
    --n 8 --steps "$STEPS" --threads 1
part n64_after 45 python3 benchmarks/propose_overhead.py "${ARGS[@]}" --n "$N2" \
    --min-reps "$REPS2" --name propose_overhead_gpu_n64
BENCH_COMMIT=$BEFORE_COMMIT part n64_before 45 python3 .whl/before/benchmarks/propose_overhead.py \
    "${ARGS[@]}" --n "$N2" --min-reps "$REPS2" --name propose_overhead_gpu_n64_before

echo "== done in $((SECONDS - T0)) s; files:" && ls -la "$OUT"
