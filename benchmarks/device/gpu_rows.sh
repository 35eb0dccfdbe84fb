#!/usr/bin/env bash
# GPU rows of benchmarks/relax_batch.py and propose_overhead.py --whole, in one call of the
# device tool (nvidia-h200 or nvidia-h100-x1; python3 there is 3.12 with torch 2.11 + CUDA).
# Needs .whl/ (wheels of pymatgen, chgnet, ase, torch-sim-atomistic, ... and perov_5/val.csv),
# made as benchmarks/device/README.md says. Results: $OUT/*.json and $OUT/log.txt.
#
# run  command (from the repo root), carry [".whl"], timeout_s 540:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && rm -f /tmp/site/pynvml.py && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/device/gpu_rows.sh
#
# (pynvml.py of the old nvidia-ml-py3 wheel, which chgnet needs for nvidia_smi, is removed so
# the machine's own nvidia-ml-py pynvml stays in use.) Each part runs under its own timeout,
# and the whole script stops starting parts after GPU_ROWS_LIMIT_S seconds (default 400).
# Dry run on a CPU machine: GPU_ROWS_DEVICE=cpu GPU_ROWS_N=4 GPU_ROWS_N2=8 GPU_ROWS_REPS=2
# GPU_ROWS_BUDGET=0 (GPU_ROWS_BUDGET: seconds of whole runs on the GPU, default 30).
set -u
: "${OUT:?OUT must be set (the device tool sets it)}"
export BENCH_RESULTS=$OUT PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
# the commit the results record: .whl/COMMIT, stamped here before the call (README), since the
# device copy's git metadata can be stale
BENCH_COMMIT=${BENCH_COMMIT:-$(cat .whl/COMMIT 2>/dev/null || echo "unknown (no .whl/COMMIT)")}
export BENCH_COMMIT
DATA=.whl/perov_5/val.csv
LIMIT=${GPU_ROWS_LIMIT_S:-400}
DEV=${GPU_ROWS_DEVICE:-cuda}
N=${GPU_ROWS_N:-64}
N2=${GPU_ROWS_N2:-256}
REPS=${GPU_ROWS_REPS:-10}
LOG=$OUT/log.txt
T0=$SECONDS

source "$(dirname "$0")/_part.sh"

nvidia-smi 2>&1 | tee -a "$LOG"
part env 60 python3 benchmarks/device/env_check.py "$OUT/env.json"

# (2) relax_batch on CUDA with the recorded CPU run's settings (n 64, --small, 5 steps,
# fmax 0.05, 1 torch thread, CHGNet batches of 8); atomate2's path is left out (it needs the
# jobflow/atomate2/maggma stack, not carried)
RELAX=(python3 benchmarks/relax_batch.py --device "$DEV" --data "$DATA" --small --steps 5
    --fmax 0.05 --threads 1 --mlip-batch 8)
part relax_n64 150 "${RELAX[@]}" --n "$N" --only ours,torchsim,ase --name relax_batch_gpu

# (3) whole SMOACS runs, engine overhead on CUDA, then the CPU row (1 thread), >= 10 runs each
WHOLE=(python3 benchmarks/propose_overhead.py --whole --predictor chgnet --n 8 --steps 20
    --threads 1 --min-reps "$REPS")
part propose_gpu 120 "${WHOLE[@]}" --device "$DEV" --budget "${GPU_ROWS_BUDGET:-30}" --name propose_overhead_gpu
part propose_cpu 180 "${WHOLE[@]}" --device cpu --budget 0 --name propose_overhead_cpu1

# (4) if time is left: 4x the structures, ours and torch-sim only
part relax_n256 120 "${RELAX[@]}" --n "$N2" --only ours,torchsim --name relax_batch_gpu_n256

echo "== done in $((SECONDS - T0)) s; files:" && ls -la "$OUT"
