#!/usr/bin/env bash
# Pre-train the tiny zoo models that ship in src/spanlab/data/models/ (docs/zoo.md, docs/benchmarks.md).
#
#   bash benchmarks/pretrain_zoo.sh OUTDIR [TOKENS=100M] [CONTEXT=512]
#
# Environment (defaults in brackets):
#   ARCHS ["transformer mamba2 hybrid"]  architectures, trained concurrently on one GPU
#   TASK_FRACTION [0.9]  share of rows that are RULER-format task samples (the rest: essay text)
#   LOSS [answers]       task rows train on their answer (+EOS) only; essay rows on every token
#   BATCH [64]  LR [2e-3]  WARMUP [0.05]
#   TIME_BUDGET [unset]  seconds for the training phase: a short probe (PROBE_TOKENS essay tokens, all ARCHS at
#                        once) measures each architecture's tokens/s, and TOKENS is lowered so the
#                        slowest one finishes within the budget (every model still gets the same tokens)
#   SHIP_TAR [unset]     folder: also pack each exported model as SHIP_TAR/<arch>.tar
#   PROBE_AFTER [unset]  architectures (e.g. "griffin rwkv") whose throughput is probed after training
#   HELDOUT_N [50]       held-out samples per task, length and seed (lower only for smoke tests)
#   PROBE_TOKENS [1M]    tokens of each probe run
# CONTEXT must be at least 512: every held-out task must fit the shortest length.
#
# 1. Evaluation samples the shipped models may ever be scored on (NIAH/VT/CWE/FWE, depth and format
#    suites, lengths C..8C, seeds 0 and 42, 50 samples each) are generated first; their needles
#    form the held-out set that `spanlab train --heldout` rewrites out of the training stream.
# 2. The token stream is built once (every core) into OUTDIR/data; every architecture reads it.
# 3. The architectures train concurrently on one GPU (tiny models leave it mostly idle).
# 4. Each final model is exported with bf16 weights (spanlab.zoo.shipped.export_run).
set -euo pipefail
OUT=${1:?usage: pretrain_zoo.sh OUTDIR [TOKENS] [CONTEXT]}
TOKENS=${2:-100M}
CTX=${3:-512}
if [ "$CTX" -lt 512 ]; then echo "CONTEXT must be >= 512 (niah_single_3 and the suites need it)" >&2; exit 2; fi
N=${HELDOUT_N:-50}
ARCHS=${ARCHS:-"transformer mamba2 hybrid"}
TF=${TASK_FRACTION:-0.9}
LOSS=${LOSS:-answers}
BATCH=${BATCH:-64}
LR=${LR:-2e-3}
WARMUP=${WARMUP:-0.05}
SP="python3 -m spanlab"
mkdir -p "$OUT/heldout" "$OUT/runs" "$OUT/models"
t0=$(date +%s)
stamp() { echo "$(date -u +%T) [+$(( $(date +%s) - t0 ))s] $*"; }

L="$CTX,$((2 * CTX)),$((4 * CTX)),$((8 * CTX))"
NIAH=niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3,niah_multivalue,niah_multiquery
pids=()
for seed in 0 42; do
  $SP generate --tasks "$NIAH" --lengths "$L" -n "$N" --seed $seed --out "$OUT/heldout/s$seed/ruler" >/dev/null & pids+=($!)
  $SP generate --suite niah-depth --lengths "$L" -n "$N" --seed $seed --out "$OUT/heldout/s$seed/depth" >/dev/null & pids+=($!)
  $SP generate --suite niah-format --lengths "$L" -n "$N" --seed $seed --out "$OUT/heldout/s$seed/format" >/dev/null & pids+=($!)
  long=$(python3 -c "print(','.join(str(x) for x in [$CTX,2*$CTX,4*$CTX,8*$CTX] if x>=1024))")
  if [ -n "$long" ]; then
    $SP generate --tasks vt,cwe,fwe --lengths "$long" -n "$N" --seed $seed --out "$OUT/heldout/s$seed/long" >/dev/null & pids+=($!)
  fi
done

probe() {  # probe DIR ARCH...: concurrent short essay-only runs; prints the slowest tokens/s
  local dir=$1; shift
  local ps=()
  for a in "$@"; do
    $SP train --arch "$a" --size tiny --context "$CTX" --tokens "${PROBE_TOKENS:-1M}" --batch-size "$BATCH" --task-fraction 0 \
      --save-every 0 --no-progress --workers 2 --out "$dir/$a" >"$dir.$a.log" 2>&1 & ps+=($!)
  done
  for p in "${ps[@]}"; do wait "$p"; done
  python3 - "$dir" "$@" <<'EOF'
import json, sys
d, archs = sys.argv[1], sys.argv[2:]
rates = {a: json.load(open(f"{d}/{a}/pretrain.json"))["tokens_per_s"] for a in archs}
print(" ".join(f"{a}={r:.0f}" for a, r in rates.items()), file=sys.stderr)
print(int(min(rates.values())))
EOF
}

if [ -n "${TIME_BUDGET:-}" ]; then
  # The probe runs while the held-out samples are generated (CPU), so its rates are lower bounds.
  mkdir -p "$OUT/probe"
  slowest=$(probe "$OUT/probe/main" $ARCHS)
  want=$(python3 -c "from spanlab.pretrain.run import parse_count; print(parse_count('$TOKENS'))")
  fit=$(( slowest * TIME_BUDGET ))
  step=$(( BATCH * CTX ))
  TOKENS=$(( (want < fit ? want : fit) / step * step ))
  stamp "probe: slowest $slowest tokens/s; TOKENS = $TOKENS (asked $want, budget ${TIME_BUDGET}s)"
fi
for p in "${pids[@]}"; do wait "$p"; done
stamp "held-out samples: $(cat $(find "$OUT/heldout" -name '*.jsonl') | wc -l)"

COMMON=(--size tiny --context "$CTX" --tokens "$TOKENS" --batch-size "$BATCH" --lr "$LR" --warmup-fraction "$WARMUP"
        --task-fraction "$TF" --loss "$LOSS" --heldout "$OUT/heldout" --data-dir "$OUT/data")
set -- $ARCHS
$SP train --arch "$1" "${COMMON[@]}" --out "$OUT/runs/$1" --no-progress --data-only >/dev/null
stamp "data stream built: $(ls "$OUT/data")"

stamp "training: $ARCHS, $TOKENS tokens each"
pids=()
for a in $ARCHS; do
  (
    $SP train --arch "$a" "${COMMON[@]}" --save-every 0 --no-progress --out "$OUT/runs/$a" >"$OUT/$a.log" 2>&1
    python3 -c "from spanlab.zoo.shipped import export_run; export_run('$OUT/runs/$a', '$OUT/models/$a-tiny-c$CTX')"
    if [ -n "${SHIP_TAR:-}" ]; then tar cf "$SHIP_TAR/$a.tar" -C "$OUT/models" "$a-tiny-c$CTX"; fi
    stamp "$a: $(python3 -c "import json; d = json.load(open('$OUT/runs/$a/pretrain.json')); print(f\"{d['tokens']:,} tokens, {d['tokens_per_s']:,.0f} tokens/s, {d['wall_s']:.1f} s, final loss {d['final_loss']:.3f}, peak {d['peak_memory_gb'] or 0:.1f} GB\")")"
  ) & pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
if [ -n "${PROBE_AFTER:-}" ]; then
  mkdir -p "$OUT/probe"
  stamp "probe after training: $(probe "$OUT/probe/after" $PROBE_AFTER 2>&1 | head -n 1)"
fi
exit $status
