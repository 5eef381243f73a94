#!/usr/bin/env bash
# Multi-GPU evidence on one host (issue 3's "one 2-GPU run", issue 6's sharded eval), made with:
#   run(kind="nvidia-h200-x2", carry=[".whl"]):
#     source benchmarks/device_setup.sh && bash benchmarks/multigpu.sh /tmp/mg $OUT
# 1. DDP fine-tuning (configs/accelerate/ddp.yaml) of a 124.7M-parameter random Llama with
#    SE-Attn + LoRA+ at 8K, then the same recipe on one GPU with twice the accumulation: the loss
#    curves must agree (same global batch, same data order).
# 2. The same recipe under FSDP2 (configs/accelerate/fsdp.yaml).
# 3. `spanlab eval` sharded over 2 processes with torchrun against a single-process run of the same
#    samples: merged scores must be identical.
set -euo pipefail
W=${1:?usage: multigpu.sh WORKDIR OUTDIR}
O=${2:?usage: multigpu.sh WORKDIR OUTDIR}
mkdir -p "$W" "$O"
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
echo "GPUs: $NGPU"; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/make_base_model.py "$W/base" >/dev/null
FT=(-m spanlab finetune --model "$W/base" --data src/spanlab/data/paul_graham_essays --context 8192
    --attention se --peft lora+ --steps 12 --save-every 0 --seed 0)
t0=$(date +%s)
accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes "$NGPU" "${FT[@]}" \
  --grad-accum 2 --out "$W/ddp" 2>&1 | tee "$O/ddp.log" | tail -n 25 || echo "DDP FAILED"
t1=$(date +%s)
python3 "${FT[@]}" --grad-accum $((2 * NGPU)) --out "$W/single" 2>&1 | tee "$O/single.log" | tail -n 8 || echo "SINGLE FAILED"
t2=$(date +%s)
accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes "$NGPU" "${FT[@]}" \
  --grad-accum 2 --out "$W/fsdp" 2>&1 | tee "$O/fsdp.log" | tail -n 25 || echo "FSDP FAILED"
t3=$(date +%s)
echo "wall s: ddp $((t1 - t0)) single $((t2 - t1)) fsdp $((t3 - t2))"
for r in ddp single fsdp; do cp "$W/$r/train_log.jsonl" "$O/$r.train_log.jsonl" 2>/dev/null || true; done
python3 - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
def curve(r):
    p = w / r / "train_log.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []
runs = {r: curve(r) for r in ("ddp", "single", "fsdp")}
for r, rows in runs.items():
    if rows:
        tps = sorted(x.get("tokens_per_s", 0) for x in rows[3:]) or [0]
        print(f"{r}: steps {len(rows)} final loss {rows[-1]['loss']:.4f} median tokens/s {tps[len(tps)//2]:.0f} "
              f"peak GB {max(x.get('peak_memory_gb', 0) for x in rows):.2f}")
a, b = runs["ddp"], runs["single"]
if a and b:
    d = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    print(f"max |loss ddp - loss single| over {min(len(a), len(b))} steps: {d:.2e}")
PY
# Sharded eval: 2 processes vs 1, same samples.
python3 -m spanlab generate --tasks niah_single_1,vt --lengths 1024,2048 -n 16 --seed 3 --out "$W/samples" >/dev/null
EV=(-m spanlab eval --model "$W/base" --samples "$W/samples" --batch-size 8 --max-new-tokens 16)
torchrun --nproc_per_node "$NGPU" "${EV[@]}" --out "$W/eval2" 2>&1 | tail -n 12 || echo "SHARDED EVAL FAILED"
python3 "${EV[@]}" --out "$W/eval1" 2>&1 | tail -n 3 || echo "EVAL FAILED"
python3 - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
def scores(d):
    out = {}
    for p in sorted((w / d).glob("results*.jsonl")):
        for l in p.read_text().splitlines():
            if l.strip():
                r = json.loads(l); out[r["id"]] = (r["score"], r["prediction"])
    return out
s2, s1 = scores("eval2"), scores("eval1")
print(f"sharded eval: {len(s2)} samples over {len(list((w/'eval2').glob('results*.jsonl')))} journals; "
      f"single: {len(s1)}; identical scores and predictions: {s1 == s2}")
PY
