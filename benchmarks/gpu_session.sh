#!/usr/bin/env bash
# One lent-GPU call per phase group, every phase under its own time limit so a slow phase cannot
# take the others' output with it; each phase's log lands in $OUT/<phase>.txt.
#
#   source benchmarks/device_setup.sh && bash benchmarks/gpu_session.sh tests|seeds1|seeds2|attention|eval|mamba2fast|mamba2fast-seeds
#
# tests:     every GPU test (pytest -m gpu) on the carried transformers
# seeds1/2:  benchmarks/seed_models.py at real size (random weights), each group with its Llama
# attention: SE-Attn timing regression (benchmarks/attention_profile.py rows at 32K/64K)
# eval:      benchmarks/eval_speed.py for Llama at 4K/16K (engine vs RULER's path)
# mamba2fast: GPU tests of the Mamba2 decode kernels / recurrent graphs / bf16 SSD, then
#            benchmarks/recurrent_decode.py (ms per step, Mamba2 1.3B/2.7B vs Llama, batch 1 and 16)
#            and benchmarks/ssd_speed.py prefill (TFLOP/s-equivalent, bf16 vs float32 contractions)
# mamba2fast-seeds: benchmarks/seed_models.py at 16K for the Mamba2 family and their Llamas
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
mamba2fast)
    phase mamba2fast_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o timeout=120 \
        tests/models/test_mamba2_kernels.py tests/models/test_mamba2_kernels_ssd.py tests/models/test_recurrent_graph.py \
        tests/eval/test_ssd.py tests/eval/test_decode_graph.py
    phase recurrent_decode 240 python3 benchmarks/recurrent_decode.py --out "$OUT/recurrent_decode.json"
    phase ssd_prefill 180 python3 benchmarks/ssd_speed.py --parts prefill --scans spanlab spanlab-f32 \
        --out "$OUT/ssd_speed.json"
    ;;
mamba2fast-seeds)
    phase seeds_16k "${2:-560}" python3 benchmarks/seed_models.py --out "$OUT/seed_16k" --lengths 16384 \
        --archs llama-1b,zamba2-1.2b,sheared-llama-2.7b,mamba2-2.7b,mamba2attn-2.7b
    ;;
*)
    echo "usage: gpu_session.sh tests|seeds1|seeds2|attention|eval|mamba2fast|mamba2fast-seeds [limit_s]" >&2
    exit 2
    ;;
esac
