"""Milliseconds per decode step: Mamba2 through transformers' torch fallbacks, spanlab's Triton
decode kernels, and those kernels replayed as CUDA graphs, against the Llama of the same size.

Each model is built with random bf16 weights at its real geometry and run through spanlab's HF
backend (`HFBackend(model_obj=...)`, what `spanlab eval` loads), greedy with EOS off, so every row
decodes exactly `--new` tokens. A step's cost is (T(1 + new) - T(1)) / new: generate of one token
(prefill plus the first step) is subtracted, so prefill does not count. Medians of `--repeat`.

    python benchmarks/recurrent_decode.py --out /tmp/decode.json                          # GPU
    python benchmarks/recurrent_decode.py --tiny --device cpu --batches 1 --new 4 --out /tmp/d.json   # smoke
    python benchmarks/recurrent_decode.py --models mamba2-1.3b --profile 16                # where a step's device time goes

`--profile N` also runs N decode steps of each eager path (`transformers`, `kernels`) under
torch.profiler and prints the kernels by device time per step: their sum is what the CUDA-graph
path cannot go below, so the gap between it and `kernels+graphs` is launch overhead left, and the
top rows say which kernel to fuse or speed up next.

Paths (column `path`): mamba2 `transformers` = mamba2_decode=torch, decode graphs off;
`kernels` = the Triton kernels, graphs off; `kernels+graphs` = both (the backend's default on
CUDA). Llama runs its default (spanlab_sdpa decode attention, graphs on over a static cache).
Geometries: mamba2-1.3b 2048 x 48 layers, mamba2-2.7b 2560 x 64 (state 128, 64-wide heads, vocab
50288); llama-1b 2048 x 16 (Llama-3.2-1B, vocab 128256); llama-2.7b 2560 x 32 (Sheared-LLaMA-2.7B,
vocab 32000).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

MODELS = ("llama-1b", "mamba2-1.3b", "llama-2.7b", "mamba2-2.7b")
MAMBA2_PATHS = ("transformers", "kernels", "kernels+graphs")


def config(name: str, tiny: bool):
    import transformers as T

    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if name.startswith("mamba2"):
        hidden, layers = {"mamba2-1.3b": (2048, 48), "mamba2-2.7b": (2560, 64)}[name]
        if tiny:
            hidden, layers = 64, 2
        return T.Mamba2Config(vocab_size=8192 if tiny else 50288, hidden_size=hidden, num_hidden_layers=layers,
                              state_size=16 if tiny else 128, expand=2, head_dim=16 if tiny else 64,
                              num_heads=2 * hidden // (16 if tiny else 64), n_groups=1, chunk_size=256,
                              tie_word_embeddings=True, **ids)
    hidden, inter, layers, heads, kv, vocab = {"llama-1b": (2048, 8192, 16, 32, 8, 128256),
                                               "llama-2.7b": (2560, 6912, 32, 20, 20, 32000)}[name]
    if tiny:
        hidden, inter, layers, heads, kv, vocab = 64, 128, 2, 4, 2, 8192
    return T.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768, **ids)


def backend(name: str, path: str, tiny: bool, device: str, tokenizer):
    import torch
    import transformers as T

    from spanlab import kernels
    from spanlab.models.hf import HFBackend

    kernels.configure({"mamba2_decode": "torch" if path == "transformers" else "auto"})
    torch.manual_seed(0)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        model = T.AutoModelForCausalLM.from_config(config(name, tiny), dtype=dtype)
    graphs = "off" if path in ("transformers", "kernels") else "auto"
    return HFBackend(name, model_obj=model, tokenizer_obj=tokenizer, device=device, decode_graphs=graphs)


def step_ms(b, batch: int, prompt: int, new: int, repeat: int) -> tuple[float, float]:
    """(ms per decode step, ms of generate with one new token), medians over `repeat`."""
    import torch

    from spanlab.models.prefill import chunked_generate

    ids = torch.randint(5, 500, (batch, prompt), device=b.device)
    mask = torch.ones_like(ids)

    def run(n: int) -> float:
        gc, extra = b.generation_setup(ids.shape, n, min_new_tokens=n, eos=False)
        if b.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = chunked_generate(b.model, b.prefill, ids, mask, gc, **extra)
        if b.device.startswith("cuda"):
            torch.cuda.synchronize()
        assert out.shape[1] == prompt + n, (out.shape, prompt, n)
        return (time.perf_counter() - t0) * 1e3

    run(1 + new)  # warm-up: compiles, graph capture, cuBLAS handles
    run(1)
    ones = [run(1) for _ in range(repeat)]
    fulls = [run(1 + new) for _ in range(repeat)]
    one, full = statistics.median(ones), statistics.median(fulls)
    return (full - one) / new, one


def profile_steps(b, batch: int, prompt: int, new: int, top: int = 15) -> list[dict]:
    """Device time per decode step by kernel over `new` steps (prefill, a one-token generate, is
    profiled too and subtracted)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spanlab.models.prefill import chunked_generate

    ids = torch.randint(5, 500, (batch, prompt), device=b.device)
    mask = torch.ones_like(ids)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if b.device.startswith("cuda") else [])

    def table(n: int) -> dict[str, float]:
        gc, extra = b.generation_setup(ids.shape, n, min_new_tokens=n, eos=False)
        with torch.inference_mode(), profile(activities=acts) as prof:
            chunked_generate(b.model, b.prefill, ids, mask, gc, **extra)
            if b.device.startswith("cuda"):
                torch.cuda.synchronize()
        cuda = b.device.startswith("cuda")
        out: dict[str, float] = {}
        for e in prof.key_averages():
            us = (e.self_device_time_total if cuda else e.self_cpu_time_total)
            if us > 0 and (not cuda or e.device_type == torch.autograd.DeviceType.CUDA):
                out[e.key] = out.get(e.key, 0.0) + us
        return out

    table(1 + new)  # warm-up
    one, full = table(1), table(1 + new)
    per_step = {k: (full.get(k, 0.0) - one.get(k, 0.0)) / new / 1e3 for k in full}
    rows = sorted(({"kernel": k[:90], "ms_per_step": round(v, 4)} for k, v in per_step.items() if v > 0),
                  key=lambda r: -r["ms_per_step"])
    return [{"kernel": "TOTAL", "ms_per_step": round(sum(r["ms_per_step"] for r in rows), 4)}] + rows[:top]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,16")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny widths (CPU smoke)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile N decode steps of the eager paths: device time per step by kernel")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch

    from spanlab.tasks.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    rows: list[dict] = []
    profiles: list[dict] = []
    for name in args.models.split(","):
        paths = MAMBA2_PATHS if name.startswith("mamba2") else ("default",)
        for path in paths:
            b = backend(name, path, args.tiny, args.device, tok)
            d = b.describe()
            for batch in (int(x) for x in args.batches.split(",")):
                try:
                    ms, one = step_ms(b, batch, args.prompt, args.new, args.repeat)
                except torch.cuda.OutOfMemoryError as e:
                    rows.append({"model": name, "path": path, "batch": batch, "error": str(e).splitlines()[0][:160]})
                    continue
                row = {"model": name, "path": path, "batch": batch, "prompt": args.prompt, "new": args.new,
                       "ms_per_step": round(ms, 3), "generate1_ms": round(one, 1), "params": d["parameters"],
                       "decode_graphs": d["decode_graphs"], "decode_kernels": d.get("decode_kernels"),
                       "ssd_scan": d.get("ssd_scan"), "device": torch.cuda.get_device_name() if args.device != "cpu" else "cpu"}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.profile and path in ("transformers", "kernels", "default"):
                    prof = profile_steps(b, batch, args.prompt, args.profile)
                    profiles.append({"model": name, "path": path, "batch": batch, "kernels": prof})
                    print(f"-- {name} {path} batch {batch}: device ms per decode step by kernel")
                    for k in prof:
                        print(f"   {k['ms_per_step']:8.4f}  {k['kernel']}")
            b.close()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    ref = {(r["model"].replace("mamba2-1.3b", "llama-1b").replace("mamba2-2.7b", "llama-2.7b"), r["batch"]): r["ms_per_step"]
           for r in rows if r["model"].startswith("llama") and "ms_per_step" in r}
    print(f"\n{'model':12s} {'path':15s} {'batch':>5s} {'ms/step':>8s} {'x llama':>8s} {'graphs':>7s} {'kernels':>16s}")
    for r in rows:
        if "ms_per_step" not in r:
            print(f"{r['model']:12s} {r['path']:15s} {r['batch']:5d} {r['error']}")
            continue
        key = (r["model"].replace("mamba2-1.3b", "llama-1b").replace("mamba2-2.7b", "llama-2.7b"), r["batch"])
        x = f"{r['ms_per_step'] / ref[key]:.2f}" if key in ref and ref[key] > 0 else "-"
        print(f"{r['model']:12s} {r['path']:15s} {r['batch']:5d} {r['ms_per_step']:8.2f} {x:>8s} {r['decode_graphs']:>7s} "
              f"{str(r['decode_kernels']):>16s}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "profiles": profiles} if profiles else rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
