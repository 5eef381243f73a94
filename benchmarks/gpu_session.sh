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
# ftmem:     issue 16: finetune_speed at 8K/32K (2.7B geometry, full/sw/se, one process per variant),
#            finetune_memory for full and se at 32K, then SE/SW/full at 64K and 128K (chunked loss +
#            activation offload); the whole phase needs ~25 min: give it its own call(s) via ftmem1/ftmem2
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
ftmem|ftmem1)
    G="--geometry sheared-llama-2.7b --steps 6 --warmup 2"
    phase ftmem_speed_8k "${2:-420}" python3 benchmarks/finetune_speed.py $G --variants full,sw,se --context 8192 \
        --window 4096 --chunk-size 2048 --out "$OUT/ftmem_speed.jsonl"
    phase ftmem_speed_32k "${2:-540}" python3 benchmarks/finetune_speed.py $G --variants full,sw,se --context 32768 \
        --window 4096 --chunk-size 2048 --out "$OUT/ftmem_speed.jsonl"
    phase ftmem_speed_32k_dense_loss "${2:-540}" python3 benchmarks/finetune_speed.py $G --variants full,se \
        --context 32768 --chunk-size 2048 --loss-chunk 0 --out "$OUT/ftmem_speed.jsonl"
    [ "${1}" = ftmem1 ] && exit 0
    ;&
ftmem2)
    for v in full se; do
        phase "ftmem_memory_32k_$v" "${2:-300}" python3 benchmarks/finetune_memory.py --geometry sheared-llama-2.7b \
            --variant "$v" --context 32768 --chunk-size 2048 --out "$OUT/ftmem_memory"
    done
    for ctx in 65536 131072; do
        phase "ftmem_long_$ctx" "${2:-540}" python3 benchmarks/finetune_speed.py --geometry sheared-llama-2.7b \
            --steps 4 --warmup 2 --variants se,sw,full --context "$ctx" --window 4096 --chunk-size 2048 \
            --loss-chunk 4096 --offload-activations --out "$OUT/ftmem_long.jsonl"
    done
    ;;
*)
    echo "usage: gpu_session.sh tests|seeds1|seeds2|attention|eval|ftmem|ftmem1|ftmem2 [limit_s]" >&2
    exit 2
    ;;
esac
