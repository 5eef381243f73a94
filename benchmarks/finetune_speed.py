"""Fine-tuning throughput and peak memory per attention variant (docs/benchmarks.md, "Fine-tuning").

One optimizer step = one packed sequence of `--context` tokens (micro-batch 1, no accumulation),
bf16 autocast over fp32 master weights, gradient checkpointing, AdamW, on a random-weight
Llama-style model built from a config (~125M parameters by default, `--geometry` for the issue's
2.7B one; no downloads). Each variant runs in its own subprocess (a fresh CUDA context), so its peak
memory is its own: one process for all variants used to carry earlier models into later peaks.
The first `--warmup` steps (kernel compilation, allocator growth) are not timed, tokens/s =
context / median step time of the rest. The matmul roofline is the step's linear-layer FLOPs
(spanlab.train.flops: forward, checkpoint recompute, backward; attention's own matmuls excluded)
over median step time x `--peak-tflops`.

    python benchmarks/finetune_speed.py --variants full,sw,se --context 32768 \
        --geometry sheared-llama-2.7b --out speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEOMETRIES = {
    # Sheared-LLaMA-2.7B's shape (issue 16's table): hidden, layers, heads, kv heads, MLP, vocab.
    "sheared-llama-2.7b": dict(hidden=2560, layers=32, heads=20, kv_heads=20, intermediate=6912, vocab=32000),
}


def build_model(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.context, 8192), tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def variant_params(variant: str, args: argparse.Namespace) -> dict:
    if variant == "sw":
        return {"window": args.window}
    if variant == "s2":
        return {"group_size": args.context // 4}
    if variant.startswith("se"):
        return {"chunk_size": args.chunk_size, "block_size": args.block_size, "top_k": args.top_k}
    return {}


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    import torch

    from spanlab.finetune import apply_peft, patch_attention
    from spanlab.train import TrainConfig, train
    from spanlab.train.flops import model_step_flops, roofline_percent

    torch.manual_seed(args.seed)
    model = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    model = apply_peft(model, args.peft, rank=args.rank, alpha=2 * args.rank, verbose=False)
    if args.weights_dtype == "bf16":  # as `spanlab finetune --weights-dtype bf16`: frozen base bf16, trained tensors fp32
        model = model.to(torch.bfloat16)
        for prm in model.parameters():
            if prm.requires_grad:
                prm.data = prm.data.float()
    model = model.to(args.device)
    params = variant_params(variant, args)
    patch_attention(model, variant, **params)
    # `elementwise` keeps the layers' matmul outputs: their forward GEMMs run once, so none is counted twice.
    flops = model_step_flops(model, args.context, recompute=args.recompute == "all", chunked_head=args.loss_chunk > 0)
    g = torch.Generator().manual_seed(args.seed)
    rows = [torch.randint(0, args.vocab, (args.context,), generator=g) for _ in range(args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            out_dir=Path(tmp), max_steps=args.steps, micro_batch_size=1, grad_accum=1, lr=2e-5 if variant == "s2" else 2e-4,
            warmup_steps=0, mixed_precision="bf16", gradient_checkpointing=True, save_every=0, progress=False,
            save_final=False, seed=args.seed, resume=False, loss_chunk=args.loss_chunk,
            offload_activations=args.offload_activations, compile=args.compile, recompute=args.recompute,
        )
        t0 = time.perf_counter()
        res = train(model, rows, cfg, shuffle=False)
        wall = time.perf_counter() - t0
        steps = [json.loads(l) for l in res.log_path.read_text().splitlines()]
    timed = [s["step_s"] for s in steps[args.warmup:]]
    med = statistics.median(timed)
    out = {
        "variant": variant, **params, "context": args.context, "model_params": n_params, "peft": args.peft,
        "rank": args.rank, "steps_timed": len(timed), "median_step_s": med, "tokens_per_s": args.context / med,
        "peak_memory_gib": res.peak_memory_gb,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if args.device == "cuda" else None,
        "matmul_tflop_per_step": flops["total"] / 1e12, "lora_tflop_per_step": flops["lora"] / 1e12,
        "matmul_roofline_pct": roofline_percent(flops["total"], med, args.peak_tflops), "peak_tflops": args.peak_tflops,
        "loss_chunk": args.loss_chunk, "offload_activations": args.offload_activations,
        "compile": args.compile, "recompute": args.recompute, "weights_dtype": args.weights_dtype, "first_step_s": steps[0]["step_s"], "wall_s": wall,
        "losses": [round(s["loss"], 4) for s in steps], "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "torch": torch.__version__,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="full,sw,s2,se")
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peft", default="lora+")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--geometry", choices=sorted(GEOMETRIES), default=None,
                   help="a named model shape; overrides --hidden/--layers/--heads/--kv-heads/--intermediate/--vocab")
    p.add_argument("--loss-chunk", type=int, default=4096, help="rows per LM-head + CE chunk (spanlab finetune's "
                   "default); 0 = dense logits")
    p.add_argument("--offload-activations", action="store_true", help="saved tensors to pinned CPU memory")
    p.add_argument("--compile", action="store_true", help="torch.compile each layer's MLP and norms (spanlab finetune --compile)")
    p.add_argument("--recompute", choices=("all", "elementwise"), default="all",
                   help="what checkpointing recomputes (spanlab finetune --recompute)")
    p.add_argument("--weights-dtype", choices=("fp32", "bf16"), default="fp32", help="frozen base weights (spanlab finetune --weights-dtype)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="matmul peak for the roofline (H100/H200 bf16 dense)")
    p.add_argument("--in-process", action="store_true", help="run every variant in this process (peaks then "
                   "include earlier variants' leftovers in the allocator's reserve)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the per-variant child
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke run)")
    p.add_argument("--out", type=Path, default=None, help="append one JSON line per variant")
    args = p.parse_args(argv)
    for k, v in GEOMETRIES.get(args.geometry, {}).items():
        setattr(args, k, v)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.steps <= args.warmup:
        print("error: --steps must exceed --warmup", file=sys.stderr)
        return 2
    if args.one:
        print("RESULT " + json.dumps(run_variant(args.one, args)), flush=True)
        return 0
    results = []
    for variant in [v for v in args.variants.split(",") if v]:
        r = run_variant(variant, args) if args.in_process else _run_child(variant, argv)
        if r is None:
            print(f"error: variant {variant} failed (its output is above)", file=sys.stderr)
            continue
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(r) + "\n")
    print("\n| variant | params | tokens/s | median step (s) | peak allocated (GiB) | peak reserved (GiB) | "
          "matmul TFLOP/step | % matmul roofline | first step (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    nan = float("nan")
    for r in results:
        extra = ",".join(f"{k}={r[k]}" for k in ("window", "group_size", "chunk_size", "block_size", "top_k") if k in r)
        print(f"| {r['variant']} | {extra or '-'} | {r['tokens_per_s']:,.0f} | {r['median_step_s']:.3f} | "
              f"{r['peak_memory_gib'] or nan:.2f} | {r['peak_reserved_gib'] or nan:.2f} | "
              f"{r['matmul_tflop_per_step']:.2f} | {r['matmul_roofline_pct']:.1f} | {r['first_step_s']:.2f} |")
    return 0 if len(results) == len([v for v in args.variants.split(",") if v]) else 1


def _run_child(variant: str, argv: list[str] | None) -> dict | None:
    """One variant in a fresh interpreter; its result is the line it prints after RESULT."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv), "--one", variant]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout, file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    raise SystemExit(main())
