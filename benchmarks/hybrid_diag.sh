#!/usr/bin/env bash
# Which kernel faults on, or changes the answers of, a shipped tiny Mamba2-family model (the hybrid:
# Bamba class, SSD chunk 64, d_head 32, d_state 64, attention head_dim 48)? One tiny eval per kernel
# choice, all in parallel on the one GPU (a fault in one process leaves the others alone), each
# launch synchronous so a traceback names the kernel that faults; then each choice's predictions
# against those of the all-torch paths (same samples, greedy): how many of the n agree.
# History: an illegal memory access at the hybrid's first eval prefill (2026-12-06) was the fused
# SSD scan compiled for 32-channel heads (benchmarks/ssd_fault_repro.py; such heads now take the
# torch scan).
#
#   MODEL=hybrid-tiny-c512 bash benchmarks/hybrid_diag.sh OUTDIR [timeout_s]
#   (MODEL defaults to hybrid-tiny-c512; EVAL_ARGS replaces the eval's task/length/sample flags)
set -u
out=${1:?usage: hybrid_diag.sh OUTDIR [timeout_s]}
limit=${2:-150}
model=${MODEL:-hybrid-tiny-c512}
read -r -a eval_args <<<"${EVAL_ARGS:---tasks niah_single_1 --lengths 2k --num-samples 8}"
mkdir -p "$out"
torch_paths="ssd=torch,mamba2_prefill=torch,mamba2_decode=torch,decode_graphs=off,decode_loop=generate"
choices=(default ssd=torch mamba2_prefill=torch fused=off decode_graphs=off mamba2_decode=torch
         "mamba2_prefill=torch,ssd=torch" "decode_graphs=off,decode_loop=generate" "$torch_paths")
for i in "${!choices[@]}"; do
    k=${choices[$i]}
    kflag=(--kernels "$k")
    [ "$k" = default ] && kflag=()  # the built-in choices: no --kernels at all
    (
        rm -rf "/tmp/hybrid-diag-$model-$i"
        CUDA_LAUNCH_BLOCKING=1 timeout "$limit" python3 -X faulthandler -m spanlab eval \
            --model "builtin:$model" "${eval_args[@]}" --no-progress \
            "${kflag[@]}" --out "/tmp/hybrid-diag-$model-$i" >"$out/diag_$i.txt" 2>&1
        echo "rc=$? kernels=$k" >>"$out/diag_$i.txt"
        cp "/tmp/hybrid-diag-$model-$i/results.jsonl" "$out/results_$i.jsonl" 2>/dev/null
    ) &
done
wait
ref=$(( ${#choices[@]} - 1 ))
for i in "${!choices[@]}"; do
    agree=$(python3 - "$out/results_$i.jsonl" "$out/results_$ref.jsonl" <<'EOF'
import json, sys
def load(p):
    try:
        return {r["id"]: r["prediction"] for r in map(json.loads, open(p))}
    except OSError:
        return {}
a, b = load(sys.argv[1]), load(sys.argv[2])
same = sum(a[k] == b.get(k) for k in a)
print(f"{same}/{len(a)} predictions as all-torch")
EOF
)
    echo "=== $model ${choices[$i]}: $(tail -1 "$out/diag_$i.txt"); $agree"
    grep -E "Error|error:|File \"/.*spanlab" "$out/diag_$i.txt" | tail -6
done
