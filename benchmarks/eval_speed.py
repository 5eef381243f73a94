"""Eval throughput: spanlab's batched engine vs RULER's HF prediction path, same model and prompts.

RULER's path (scripts/pred/model_wrappers.py, HuggingFaceModel without pipeline): tokenize a
padded batch, `model.generate(max_new_tokens=...)`, batch size 1. Ours: `spanlab.eval.run_eval`
end to end (token counting, length batching, generation, scoring, journaling).

Also measures, per length: one prefill forward at batch 1 and at the batch the engine uses (the
same left-padded prompts), in tokens/s, TFLOP/s and MFU against the dense bf16 peak (H100 SXM: 989
TFLOP/s datasheet), counting real (unpadded) tokens only; and the decode step (median ms per
generated token of the whole batch, through `model.generate` with the engine's cache, a
profile of its kernels with --profile-dir). Random weights (throughput only).

Variants: "auto" is the CUDA default (Llama: static cache + spanlab_sdpa with the split-KV Triton
decode kernel and the per-row causal prefill, fused RMSNorm/SwiGLU/rotary kernels, decode steps
replayed as CUDA graphs; Mamba2: spanlab's SSD scan, chunked prefill of 2048 tokens). Others (Llama):
"eager-decode" (no CUDA graphs), "no-fused" (transformers' RMSNorm/MLP/rotary), "varlen" (the
packed flash-attention prefill), "prev" (no graphs, no fused kernels: the defaults of commit
a8a630b, less the prefill mask it built),
"fold-sdpa" (the decode attention before the kernel: folded masked SDPA), "dynamic", "static",
"fold", "fold-static"; (Mamba2) "one-shot" (--prefill-chunk 0).

Mamba2's RULER path and batch-1 prefill run twice: with the scan transformers ships (what RULER
gets without mamba-ssm) and with spanlab's. At 16K x 32 transformers' prefill mask alone is 8.5 GB:
run with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True so fragmentation does not fail the probes.

    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
        python benchmarks/eval_speed.py --arch llama mamba2 --lengths 4096 16384 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import transformers as T

from spanlab import kernels
from spanlab.bench import time_cuda

PEAK = {"H100": 989e12, "H200": 989e12}


def build(arch: str, vocab: int, device: str, max_len: int = 32768):
    if arch == "llama":  # ~1.0B with an 8K vocab: Llama-3.2-1B's trunk
        # Positions up to the longest prompt (32K-128K for issue 16's long-context rows); RoPE theta
        # is the config default: random weights, only the shapes matter.
        cfg = T.LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=max(32768, max_len),
                            bos_token_id=0, eos_token_id=0, pad_token_id=0, attn_implementation="sdpa")
    elif arch == "mamba2":  # ~0.96B: 36 Mamba2 blocks at d_model 2048
        cfg = T.Mamba2Config(vocab_size=vocab, hidden_size=2048, num_hidden_layers=36, state_size=128, expand=2,
                             head_dim=64, num_heads=64, n_groups=1, chunk_size=256, bos_token_id=0, eos_token_id=0,
                             pad_token_id=0, tie_word_embeddings=True)
    else:
        raise SystemExit(f"unknown arch {arch}")
    torch.manual_seed(0)
    with torch.device(device):
        model = T.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    return model.eval()


def flops_per_token(model, seq: int) -> float:
    """Forward FLOPs/token: 2 x non-embedding params + causal attention (2 x 2 x L x T/2 x d)."""
    c = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    attn = 0.0
    if c.model_type == "llama":
        attn = 2 * 2 * c.num_hidden_layers * (seq / 2) * c.num_attention_heads * (c.hidden_size // c.num_attention_heads)
    return 2 * n + attn


def prefill(model, ids) -> float:
    """Median seconds of one forward (3 runs after a warm-up), CUDA events."""
    with torch.inference_mode():
        return time_cuda(lambda: model(ids, use_cache=False, logits_to_keep=1), warmup=1, iters=3).median_ms / 1e3


def padded_batch(tok, prompts, device):
    enc = tok(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def prefill_batch(model, ids, mask) -> float:
    """Seconds of one forward over a left-padded batch (what generate's prefill runs)."""
    def one():
        with torch.inference_mode():
            model(ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    return prefill_timed(one)


def prefill_timed(fn) -> float:
    """Median seconds of `fn` (3 runs after a warm-up; one when a run takes over a second), CUDA events."""
    first = time_cuda(fn, warmup=0, iters=1)  # the warm-up, timed to choose the repeats
    return time_cuda(fn, warmup=0, iters=3 if first.median_ms < 1e3 else 1).median_ms / 1e3


def loop_step_ms(backend, ids, mask, new_tokens: int) -> float | None:
    """Mean ms per decode step of spanlab's greedy loop (DecodeGraphs.continue_greedy, the engine's
    default where it applies) after generate's first two tokens; None without decode graphs. No EOS:
    every step runs, and the loop's host check every 8 steps is inside the timing."""
    from spanlab.models.prefill import chunked_generate

    graphs = getattr(backend, "graphs", None)
    if graphs is None or new_tokens <= 2:
        return None
    with torch.inference_mode():
        gc, extra = backend.generation_setup(ids.shape, new_tokens, min_new_tokens=2, eos=False)
        gc.max_new_tokens = 2
        out = chunked_generate(backend.model, backend.prefill, ids, mask, gc, **extra)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = graphs.continue_greedy(out, ids.shape[1], new_tokens, [], backend.tokenizer.pad_token_id or 0)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return dt / (out.shape[1] - ids.shape[1] - 2) * 1e3


class StepTimer:
    """A logits processor that notes the host time of every decode step (generate synchronises on
    its stopping check once per step, so host intervals are step times)."""

    def __init__(self) -> None:
        self.t: list[float] = []

    def __call__(self, input_ids, scores):
        self.t.append(time.perf_counter())
        return scores


def decode_step_ms(backend, ids, mask, new_tokens: int, profile_to: tuple[str, str] | None = None) -> float:
    """Median ms per decode step of `model.generate` as the backend runs it (its cache, graphs)."""
    from transformers import LogitsProcessorList

    from spanlab.models.prefill import chunked_generate

    timer = StepTimer()
    with torch.inference_mode():
        gc, extra = backend.generation_setup(ids.shape, new_tokens, min_new_tokens=new_tokens, eos=False)
        # As the backend generates: chunked prefill where its plan says so.
        chunked_generate(backend.model, backend.prefill, ids, mask, gc, logits_processor=LogitsProcessorList([timer]), **extra)
        if profile_to:
            from torch.profiler import ProfilerActivity, profile

            gc, extra = backend.generation_setup(ids.shape, 9, min_new_tokens=9, eos=False)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                chunked_generate(backend.model, backend.prefill, ids, mask, gc, **extra)
            write_profile(prof, profile_to[0], f"{profile_to[1]}, generate of 9 tokens (the prefill and 8 decode steps)")
    steps = [b - a for a, b in zip(timer.t[1:], timer.t[2:])]  # the first interval holds no prefill; skip it too
    return statistics.median(steps) * 1e3


def write_profile(prof, path: str, title: str) -> None:
    """Append a kernel table (GPU time per kernel) under a title: one file per model and phase."""
    with open(path, "a") as f:
        f.write(f"\n== {title}\n")
        f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90))


def profile_prefill(model, ids, mask, path: str, title: str) -> None:
    """Kernel profile of one prefill forward over the padded batch (what `prefill_batch` times)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
        torch.cuda.synchronize()
    write_profile(prof, path, title)


def engine_prefill_s(backend, ids, mask) -> float:
    """Seconds of the engine's own prefill: `generate` of one token with the backend's cache
    (the static cache's keys and values written, the prefill attention, the last position's logits)."""
    from spanlab.models.prefill import chunked_generate

    def one():
        with torch.inference_mode():
            gc, extra = backend.generation_setup(ids.shape, 1, min_new_tokens=1, eos=False)
            chunked_generate(backend.model, backend.prefill, ids, mask, gc, **extra)
    return prefill_timed(one)


def ruler_path(model, tok, prompts, max_new: int) -> float:
    """Seconds per sample, RULER's HF path at batch size 1."""
    ts = []
    for p in prompts:
        torch.cuda.synchronize()
        t = time.perf_counter()
        inputs = tok([p], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        tok.batch_decode(out, skip_special_tokens=True)
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return sum(ts[1:]) / len(ts[1:])  # first call warms up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["llama", "mamba2"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384])
    ap.add_argument("--samples", type=int, nargs="+", default=[64, 32], help="ours: samples per length")
    ap.add_argument("--ruler-samples", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-batch-tokens", type=int, default=524288)
    # transformers' own torch Mamba2 scan needed ~32 GiB per 4K prompt, so Mamba2 once had a
    # smaller budget; spanlab's SSD scan (linear memory, chunked prefill) takes the same as Llama.
    ap.add_argument("--mamba-max-batch-tokens", type=int, default=None, help="default: --max-batch-tokens")
    ap.add_argument("--task", default="niah_single_2")
    ap.add_argument("--variants", nargs="+", default=["auto"],
                    help="ours: auto (the CUDA defaults) | eager-decode | no-fused | varlen | prev | fold-sdpa | dynamic | "
                         "static | fold | fold-static (Llama); "
                         "auto | one-shot (Mamba2)")
    ap.add_argument("--decode-steps", type=int, default=32, help="decode-step timing: tokens per probe")
    ap.add_argument("--profile-dir", default=None,
                    help="kernel profiles of one engine-batch prefill and of 8 decode steps per length, variants auto "
                         "and prev: <dir>/<arch>-prefill.txt, <arch>-decode.txt")
    ap.add_argument("--skip-ruler", action="store_true", help="no RULER-path timing (probes only)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from spanlab import tasks as TK
    from spanlab.eval import EvalConfig, run_eval
    from spanlab.models.hf import HFBackend

    tok = TK.load_tokenizer(None)
    dev = "cuda"
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK.items() if k in name), 989e12)
    rows = []
    samples = {}
    for length, n in zip(args.lengths, args.samples):
        t = time.perf_counter()
        samples[length] = TK.generate(args.task, length=length, num_samples=max(n, args.ruler_samples + 1),
                                      tokenizer=tok, seed=0)
        print(f"generated {len(samples[length])} samples at {length} in {time.perf_counter() - t:.1f}s", flush=True)
    from spanlab.models import ssd

    base_rows = []
    for arch in args.arch:
        model = build(arch, len(tok), dev, max_len=max(args.lengths) + 1024)  # prompt + answer tokens
        nparams = sum(p.numel() for p in model.parameters())
        mbt = (args.mamba_max_batch_tokens or args.max_batch_tokens) if arch == "mamba2" else args.max_batch_tokens
        # RULER's path and one batch-1 prefill, the same for every variant. Mamba2 twice: with the
        # scan transformers ships (what RULER's path runs without mamba-ssm) and with spanlab's.
        ruler: dict[int, tuple[float, str]] = {}
        for scan in (["transformers", "spanlab"] if arch == "mamba2" else [None]):
            if scan:
                ssd.uninstall()
                if scan == "spanlab":
                    ssd.install()
            for length in args.lengths:
                ss = samples[length]
                ids = torch.tensor([tok(ss[0].prompt)["input_ids"]], device=dev)
                row = {"device": name, "arch": arch, "scan": scan, "length": length, "prompt_tokens": ids.shape[1],
                       "max_new_tokens": ss[0].tokens_to_generate}
                try:
                    pf = prefill(model, ids)
                    flops = flops_per_token(model, ids.shape[1]) * ids.shape[1]
                    row.update(prefill_s=round(pf, 4), prefill_tok_per_s=round(ids.shape[1] / pf),
                               prefill_tflops=round(flops / pf / 1e12, 1), prefill_mfu=round(flops / pf / peak, 3))
                    if not args.skip_ruler:
                        r = ruler_path(model, tok, [s.prompt for s in ss[: args.ruler_samples + 1]], ss[0].tokens_to_generate)
                        row["ruler_s_per_sample"] = round(r, 4)
                        ruler.setdefault(length, (r, scan or "-"))  # the first that fits: transformers' own scan
                except torch.cuda.OutOfMemoryError as e:
                    row["error"] = str(e).splitlines()[0][:200]
                torch.cuda.empty_cache()
                base_rows.append(row)
                print(json.dumps(row), flush=True)
        variants = args.variants if arch == "llama" else [v for v in args.variants if v in ("auto", "one-shot")] or ["auto"]
        for variant in variants:
            # fold-sdpa: the folded masked SDPA of the previous default
            kernels.configure({"fold-sdpa": "decode_attn=sdpa", "varlen": "prefill_attn=varlen"}.get(variant))
            plain = variant in ("auto", "fold-sdpa", "one-shot", "eager-decode", "no-fused", "varlen", "prev")
            backend = HFBackend(arch, model_obj=model, tokenizer_obj=tok, device=dev, dtype="bfloat16",
                                cache_implementation="auto" if plain else "static" if variant.endswith("static") else None,
                                attn_implementation=None if (plain or arch != "llama")
                                else "spanlab_sdpa" if variant.startswith("fold") else "sdpa",
                                prefill_chunk=0 if variant == "one-shot" else 2048,
                                decode_graphs="off" if variant in ("eager-decode", "prev") else "auto",
                                fused="off" if variant in ("no-fused", "prev") else "auto")
            for length, n in zip(args.lengths, args.samples):
                ss = samples[length]
                cfg = {"model": arch, "batch_size": args.batch_size, "max_batch_tokens": mbt, "progress": False}
                torch.cuda.reset_peak_memory_stats()
                gen_s = [0.0]
                real_generate = backend.generate

                def timed_generate(*a, real=real_generate, acc=gen_s, **k):
                    t0 = time.perf_counter()
                    try:
                        return real(*a, **k)
                    finally:
                        acc[0] += time.perf_counter() - t0
                backend.generate = timed_generate
                try:
                    with tempfile.TemporaryDirectory() as d:
                        run_eval(EvalConfig(out=d, **cfg), backend, samples=ss[:2])  # warm-up
                    gen_s[0] = 0.0
                    with tempfile.TemporaryDirectory() as d:
                        torch.cuda.synchronize()
                        t = time.perf_counter()
                        recs = run_eval(EvalConfig(out=d, **cfg), backend, samples=ss[:n])
                        torch.cuda.synchronize()
                        ours = time.perf_counter() - t
                    peak_mem = torch.cuda.max_memory_allocated() / 2**30
                except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others' numbers
                    print(json.dumps({"arch": arch, "variant": variant, "length": length, "error": repr(e)[:300]}), flush=True)
                    torch.cuda.empty_cache()
                    continue
                finally:
                    backend.generate = real_generate
                r_s, r_scan = ruler.get(length, (float("nan"), "-"))
                row = {"device": name, "arch": arch, "variant": variant, "params": nparams, "length": length,
                       "ruler_s_per_sample": round(r_s, 4), "ruler_scan": r_scan,
                       "ours_s_per_sample": round(ours / n, 4), "ours_samples_per_s": round(n / ours, 3),
                       "speedup": round(r_s / (ours / n), 2), "ours_n": n, "generate_fraction": round(gen_s[0] / ours, 3),
                       "mean_new_tokens": round(sum(x["new_tokens"] for x in recs) / len(recs), 1),
                       "peak_mem_gib": round(peak_mem, 1)}
                torch.cuda.empty_cache()
                try:
                    # Probes at the batch the engine used: prefill over the padded batch, decode steps.
                    batch = max(x["batch_size"] for x in recs)
                    ids, mask = padded_batch(tok, [x.prompt for x in ss[:batch]], dev)
                    real = int(mask.sum())
                    plan = backend.prefill
                    if plan.mode == "state":
                        from spanlab.models.prefill import prefill_state

                        def one(ids=ids, mask=mask, plan=plan, m=model):
                            with torch.inference_mode():
                                prefill_state(m, plan, ids, mask)
                        pb = prefill_timed(one)
                    else:
                        pb = prefill_batch(model, ids, mask)
                    flops = flops_per_token(model, ids.shape[1]) * real
                    if plan.mode != "state":
                        pe = engine_prefill_s(backend, ids, mask)
                        row.update(engine_prefill_s=round(pe, 4), engine_prefill_tflops=round(flops / pe / 1e12, 1))
                    profiling = args.profile_dir and variant in ("auto", "prev")
                    prof = None
                    if profiling:
                        os.makedirs(args.profile_dir, exist_ok=True)
                        label = f"{arch} {variant} {length}: batch {batch} x {ids.shape[1]}"
                        profile_prefill(model, ids, mask, os.path.join(args.profile_dir, f"{arch}-prefill.txt"),
                                        f"{label}, one prefill forward")
                        prof = (os.path.join(args.profile_dir, f"{arch}-decode.txt"), label)
                    row.update(batch=batch, prompt_tokens=ids.shape[1], batch_prefill_s=round(pb, 4),
                               batch_prefill_tok_per_s=round(real / pb), batch_prefill_tflops=round(flops / pb / 1e12, 1),
                               batch_prefill_mfu=round(flops / pb / peak, 3), pad_fraction=round(1 - real / ids.numel(), 4))
                    del ids, mask
                    torch.cuda.empty_cache()
                    ids, mask = padded_batch(tok, [x.prompt for x in ss[:batch]], dev)
                    row["decode_step_ms"] = round(decode_step_ms(backend, ids, mask, args.decode_steps, prof), 2)
                    loop_ms = loop_step_ms(backend, ids, mask, args.decode_steps)
                    if loop_ms is not None:
                        row["loop_step_ms"] = round(loop_ms, 2)  # spanlab's greedy loop (the engine's default)
                except Exception as e:  # noqa: BLE001 - the end-to-end number stands without the probes
                    row["probe_error"] = repr(e)[:300]
                rows.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
            backend.close()  # unwraps the model for the next variant
            del backend
        kernels.configure(None)
        del model
        torch.cuda.empty_cache()
    print("\narch    scan          length  prefill b=1 s  tok/s     TFLOP/s  RULER s/sample")
    for r in base_rows:
        print(f"{r['arch']:7s} {r['scan']!s:13s} {r['length']:6d}  {r.get('prefill_s', float('nan')):13.4f}  "
              f"{r.get('prefill_tok_per_s', 0):8d}  {r.get('prefill_tflops', float('nan')):7.1f}  "
              f"{r.get('ruler_s_per_sample', float('nan')):14.3f} {r.get('error', '')[:60]}")
    print("\narch    variant       length  RULER s/sample  ours s/sample  speedup  samples/s  batch  "
          "batch prefill tok/s  TFLOP/s  MFU   engine prefill TFLOP/s  decode ms/step  loop ms/step  peak GiB")
    nan = float("nan")
    for r in rows:
        print(f"{r['arch']:7s} {r['variant']:13s} {r['length']:6d}  {r['ruler_s_per_sample']:14.3f}  {r['ours_s_per_sample']:13.3f}  "
              f"{r['speedup']:7.1f}  {r['ours_samples_per_s']:9.2f}  {r.get('batch', 0):5d}  {r.get('batch_prefill_tok_per_s', 0):19d}  "
              f"{r.get('batch_prefill_tflops', nan):7.1f}  {r.get('batch_prefill_mfu', nan):.2f}  "
              f"{r.get('engine_prefill_tflops', nan):22.1f}  {r.get('decode_step_ms', nan):14.2f}  {r.get('loop_step_ms', nan):12.2f}  "
              f"{r['peak_mem_gib']:8.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"baseline": base_rows, "ours": rows}, f, indent=2)


if __name__ == "__main__":
    main()
