#!/usr/bin/env bash
# Which kernel faults on the shipped tiny hybrid (Bamba class, SSD chunk 64, d_head 32, d_state 64,
# attention head_dim 48)? An illegal memory access was seen on 2026-12-06 at its first eval prefill
# under the default kernels, and not with mamba2_prefill=torch,ssd=torch. One tiny eval per kernel
# choice, all in parallel on the one GPU (a fault in one process leaves the others alone), each
# launch synchronous so the traceback names the kernel that faults.
#
#   bash benchmarks/hybrid_diag.sh OUTDIR [timeout_s]
set -u
out=${1:?usage: hybrid_diag.sh OUTDIR [timeout_s]}
limit=${2:-150}
mkdir -p "$out"
choices=(auto ssd=torch mamba2_prefill=torch fused=off decode_graphs=off mamba2_decode=torch
         "mamba2_prefill=torch,ssd=torch" "decode_graphs=off,decode_loop=generate")
for i in "${!choices[@]}"; do
    k=${choices[$i]}
    (
        CUDA_LAUNCH_BLOCKING=1 timeout "$limit" python3 -X faulthandler -m spanlab eval \
            --model builtin:hybrid-tiny-c512 --tasks niah_single_1 --lengths 2k --num-samples 8 --no-progress \
            --kernels "$k" --out "/tmp/hybrid-diag-$i" >"$out/diag_$i.txt" 2>&1
        echo "rc=$? kernels=$k" >>"$out/diag_$i.txt"
    ) &
done
wait
for i in "${!choices[@]}"; do
    echo "=== ${choices[$i]}: $(tail -1 "$out/diag_$i.txt")"
    grep -E "Error|error:|File \"/.*spanlab|n=8" "$out/diag_$i.txt" | tail -8
done
