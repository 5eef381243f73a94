#!/usr/bin/env bash
# One lent-GPU call per phase group, every phase under its own time limit so a slow phase cannot
# take the others' output with it; each phase's log lands in $OUT/<phase>.txt.
#
#   source benchmarks/device_setup.sh && bash benchmarks/gpu_session.sh tests|seeds1|seeds2|attention|eval
#
# tests:     every GPU test (pytest -m gpu) on the carried transformers
# seeds1/2:  benchmarks/seed_models.py at real size (random weights), each group with its Llama
# attention: SE-Attn timing regression (benchmarks/attention_profile.py rows at 32K/64K)
# eval:      benchmarks/eval_speed.py for Llama at 4K/16K (engine vs RULER's path)
set -u
OUT=${OUT:-gpu-session-out}
mkdir -p "$OUT"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

phase() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$@" > >(tee "$OUT/$name.txt") 2>&1
    echo "=== $name: exit ${?} after $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"

case "${1:-}" in
tests)
    phase gpu_tests "${2:-420}" python3 -m pytest -q -m gpu -p no:cacheprovider --durations=15 -o timeout=300 tests
    ;;
seeds1)
    phase seeds1 "${2:-500}" python3 benchmarks/seed_models.py --out "$OUT/seed1" \
        --archs llama-1b,zamba2-1.2b,sheared-llama-2.7b,mamba2-2.7b,mamba2attn-2.7b
    ;;
seeds2)
    phase seeds2 "${2:-500}" python3 benchmarks/seed_models.py --out "$OUT/seed2" \
        --archs sheared-llama-2.7b,transformerpp-2.7b,recurrentgemma-2b,rwkv6-3b
    ;;
attention)
    phase attention "${2:-300}" python3 benchmarks/attention_profile.py --out "$OUT/prof" --lengths 32768,65536 \
        --variants full,sw,se --no-plots
    ;;
eval)
    phase eval_speed "${2:-400}" python3 benchmarks/eval_speed.py --arch llama --lengths 4096 16384 --out "$OUT/eval_speed.json"
    ;;
*)
    echo "usage: gpu_session.sh tests|seeds1|seeds2|attention|eval [limit_s]" >&2
    exit 2
    ;;
esac
