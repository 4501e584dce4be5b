#!/usr/bin/env bash
# Every GPU measurement of bench/ in one command, on one GPU, within 8 minutes:
#
#   bench/gpu.sh          # writes bench/results/gpu-throughput.json, gpu-packing.json, gpu-divergence.json
#   bench/gpu.sh --dry    # the same three steps on the CPU at tiny sizes, into a temporary folder
#                         # (or $OUT): a check that they run, no figures (tests/test_gpu_script.py)
#
# 1. throughput: GPT-2-124M, bf16 autocast, torch.compile, fused AdamW: tokens/s and MFU
#    (bench/throughput.py --no-cpu);
# 2. packing: the tiny GPT and CNN grids of 64 points unpacked (K = 1) and packed at K = 8 and
#    64, from the CLI, 3 interleaved repeats (bench/packing.py --device cuda);
# 3. divergence: fp32 vs bf16 autocast at the divergence settings (LR 1e-3), a short run
#    (bench/divergence.py).
# Each step has its own time limit (they add up to 8 minutes); a step that runs out is reported
# and the next one runs; what a step finished is in its JSON (packing writes after every case).
# Exit status: 0 when every step finished, 1 when one failed or ran out of time, 2 on bad use.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

case "${1:-}" in
    "") DRY=""; OUT=${OUT:-bench/results}
        if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
            echo "error: no CUDA device here; bench/gpu.sh --dry runs the same steps on the CPU at tiny sizes" >&2
            exit 2
        fi ;;
    --dry) DRY="--dry"; OUT=${OUT:-$(mktemp -d -t gpu-dry-XXXXXX)} ;;
    *) echo "error: unknown argument '$1'; usage: bench/gpu.sh [--dry]" >&2; exit 2 ;;
esac
mkdir -p "$OUT"

status=0
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "gpu.sh: $name (at most ${limit} s)"
    local start=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    local rc=$?
    if [ "$rc" -eq 124 ]; then
        echo "gpu.sh: $name ran out of its ${limit} s"
    else
        echo "gpu.sh: $name exited $rc after $((SECONDS - start)) s"
    fi
    [ "$rc" -eq 0 ] || status=1
}

if [ -n "$DRY" ]; then
    # a check, not a measurement: limits generous enough for a slow shared CPU
    step throughput 300 "$PYTHON" bench/throughput.py --no-cpu --dry --out "$OUT/gpu-throughput.json"
    step packing 600 "$PYTHON" bench/packing.py --dry --device cpu --grids 16 --ks 4 16 --repeats 1 --profile 0 \
        --out "$OUT/gpu-packing.json"
    step divergence 300 "$PYTHON" bench/divergence.py --dry --out "$OUT/gpu-divergence.json"
else
    step throughput 120 "$PYTHON" bench/throughput.py --no-cpu --out "$OUT/gpu-throughput.json"
    step packing 240 "$PYTHON" bench/packing.py --quick --device cuda --presets chinchilla-tiny ushape-tiny \
        --grids 64 --ks 8 64 --repeats 3 --profile 0 --out "$OUT/gpu-packing.json"
    step divergence 120 "$PYTHON" bench/divergence.py --out "$OUT/gpu-divergence.json"
fi
echo "gpu.sh: results in $OUT"
exit "$status"
