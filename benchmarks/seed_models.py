"""Every seed architecture at its real size (random weights), evaluated side by side by spanlab's engine.

For each geometry: build the model with random weights in the class spanlab runs it as (what
`spanlab convert` produces for the state-spaces checkpoints, spanlab's native RWKV-6, transformers'
RecurrentGemma / Zamba2 / Llama), `save_pretrained` it with spanlab's built-in tokenizer into a
temporary folder, load it the way `spanlab eval --model FOLDER` does (`load_backend`, no remote
code), then run the eval engine (`spanlab.eval.run_eval`, the function the CLI calls) on
niah_single_2 at each length. One table: samples/s per length (load time excluded, reported
apart), each model's rate as a fraction of the Llama of the nearest size in the same run, peak GPU
memory, and how it prefilled. Markdown to stdout and OUT/seed_models.md, CSV in OUT/seed_models.csv.

    python benchmarks/seed_models.py --out /tmp/seed-bench                       # GPU, real sizes
    python benchmarks/seed_models.py --tiny --device cpu --lengths 512 --out /tmp/seed-tiny   # smoke

Geometries (d_model x layers): mamba2-2.7b 2560x64; mamba2attn-2.7b 2560x64 with attention at
[9,18,27,36,45,56] (30 heads x 128, rotary 64, q/k/v conv 4); transformerpp-2.7b 2560x32, 20 heads
x 128, rotary 64, MLP 6912; rwkv6-3b 2560x32, head 64; sheared-llama-2.7b 2560x32, MLP 6912;
recurrentgemma-2b transformers' defaults (2560x26, vocab 256K); zamba2-1.2b 2048x38 (approximate:
shared attention every 6th layer); llama-1b 2048x16 (Llama-3.2-1B trunk); llama-7b 4096x32.
Vocabularies are the real ones (the tokenizer covers a prefix of them), so heads cost what they do.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

ARCHS = ("llama-1b", "zamba2-1.2b", "sheared-llama-2.7b", "mamba2-2.7b", "mamba2attn-2.7b", "transformerpp-2.7b",
         "recurrentgemma-2b", "rwkv6-3b", "llama-7b")
# Which Llama each architecture is compared with (nearest size).
REFERENCE = {"llama-1b": "llama-1b", "zamba2-1.2b": "llama-1b", "llama-7b": "llama-7b"}


def geometry(arch: str, tiny: bool, vocab_min: int) -> Any:
    """The config spanlab runs `arch` with; `tiny` keeps the class and layer pattern, shrinks widths."""
    import transformers as T

    from spanlab.models.mamba2attn import M2AConfig
    from spanlab.models.rwkv6 import Rwkv6Config

    def vocab(real: int) -> int:
        return vocab_min if tiny else max(real, vocab_min)

    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    d = 64 if tiny else None
    if arch.startswith("llama") or arch == "sheared-llama-2.7b":
        hidden, inter, layers, heads, v = {"llama-1b": (2048, 8192, 16, 32, 128256), "llama-7b": (4096, 11008, 32, 32, 32000),
                                           "sheared-llama-2.7b": (2560, 6912, 32, 20, 32000)}[arch]
        kv = 8 if arch == "llama-1b" else heads
        if tiny:
            hidden, inter, layers, heads, kv = d, 128, 2, 4, 2
        return T.LlamaConfig(vocab_size=vocab(v), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768,
                             tie_word_embeddings=arch == "llama-1b", **ids)
    if arch == "mamba2-2.7b":
        hidden, layers, state, hd = (d, 2, 16, 16) if tiny else (2560, 64, 128, 64)
        return T.Mamba2Config(vocab_size=vocab(50288), hidden_size=hidden, num_hidden_layers=layers, state_size=state,
                              expand=2, head_dim=hd, num_heads=2 * hidden // hd, n_groups=1, chunk_size=256 if not tiny else 32,
                              tie_word_embeddings=True, **ids)
    if arch == "mamba2attn-2.7b":
        layers, attn, heads = (4, [1, 3], 4) if tiny else (64, [9, 18, 27, 36, 45, 56], 30)
        hidden, head_dim = (d, 16) if tiny else (2560, 128)
        return M2AConfig(vocab_size=vocab(50288), hidden_size=hidden, num_hidden_layers=layers, attn_layer_indices=attn,
                         intermediate_size=0, num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim,
                         rotary_dim=head_dim // 2, attn_conv_kernel=4, mamba_n_heads=2 * hidden // (16 if tiny else 64),
                         mamba_d_head=16 if tiny else 64, mamba_d_state=16 if tiny else 128,
                         mamba_chunk_size=32 if tiny else 256, max_position_embeddings=32768, **ids)
    if arch == "transformerpp-2.7b":
        # What `spanlab convert` makes of it: Bamba with attention in every layer and partial rotary.
        layers, inter, heads, hidden, head_dim = (2, 128, 4, d, 16) if tiny else (32, 6912, 20, 2560, 128)
        return T.BambaConfig(vocab_size=vocab(50288), hidden_size=hidden, num_hidden_layers=layers,
                             attn_layer_indices=list(range(layers)), intermediate_size=inter, num_attention_heads=heads,
                             num_key_value_heads=heads, head_dim=head_dim, mamba_n_heads=1, tie_word_embeddings=True,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
                             max_position_embeddings=32768, **ids)
    if arch == "rwkv6-3b":
        if tiny:
            return Rwkv6Config(vocab_size=vocab(65536), hidden_size=d, num_hidden_layers=2, head_size=16,
                               intermediate_size=128, time_mix_extra_dim=8, time_decay_extra_dim=16, **ids)
        return Rwkv6Config(vocab_size=vocab(65536), hidden_size=2560, num_hidden_layers=32, head_size=64, **ids)
    if arch == "recurrentgemma-2b":
        if tiny:
            return T.RecurrentGemmaConfig(vocab_size=vocab(256000), hidden_size=d, intermediate_size=128, num_hidden_layers=3,
                                          num_attention_heads=4, num_key_value_heads=1, head_dim=16, lru_width=d,
                                          attention_window_size=64, **ids)
        return T.RecurrentGemmaConfig(vocab_size=vocab(256000), **ids)
    if arch == "zamba2-1.2b":
        if tiny:
            return T.Zamba2Config(vocab_size=vocab(32000), hidden_size=d, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=4, mamba_d_state=16, mamba_headdim=16, n_mamba_heads=8,
                                  mamba_ngroups=1, chunk_size=32, layers_block_type=["mamba", "hybrid"], hybrid_layer_ids=[1],
                                  intermediate_size=128, attention_head_dim=16, max_position_embeddings=32768, **ids)
        layers = 38
        types = ["hybrid" if i % 6 == 5 else "mamba" for i in range(layers)]
        return T.Zamba2Config(vocab_size=vocab(32000), hidden_size=2048, num_hidden_layers=layers, num_attention_heads=32,
                              num_key_value_heads=32, mamba_d_state=128, mamba_headdim=64, n_mamba_heads=64, mamba_ngroups=1,
                              chunk_size=256, layers_block_type=types, hybrid_layer_ids=[i for i, t in enumerate(types) if t == "hybrid"],
                              intermediate_size=8192, attention_head_dim=128, max_position_embeddings=32768, **ids)
    raise SystemExit(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")


def build_folder(arch: str, root: Path, tiny: bool, device: str, dtype: str) -> tuple[Path, int]:
    import torch
    import transformers as T

    from spanlab.models.native import register_all
    from spanlab.tasks.tokenizer import load_tokenizer

    register_all()
    tok = load_tokenizer(None)
    cfg = geometry(arch, tiny, len(tok))
    torch.manual_seed(0)
    with torch.device(device):
        model = T.AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    n = sum(p.numel() for p in model.parameters())
    out = root / arch
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    gc.collect()
    return out, n


def run_one(arch: str, folder: Path, lengths: list[int], samples: int, device: str, dtype: str, out: Path) -> dict[str, Any]:
    import torch

    from spanlab.eval.config import EvalConfig
    from spanlab.eval.runner import run_eval
    from spanlab.models import load_backend

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = dict(model=str(folder), dtype=dtype, device=device, tasks=["niah_single_2"], num_samples=samples,
                progress=False, max_new_tokens=32)
    t0 = time.perf_counter()
    backend = load_backend(EvalConfig(out=str(out / "load"), lengths=lengths, **base))
    row: dict[str, Any] = {"arch": arch, "class": type(backend.model).__name__, "load_s": round(time.perf_counter() - t0, 1),
                           "prefill": backend.describe().get("prefill", {}).get("mode", "")}
    for length in lengths:
        cfg = EvalConfig(out=str(out / f"{arch}-{length}"), lengths=[length], **base)
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            recs = run_eval(cfg, backend)
            if cuda:
                torch.cuda.synchronize()
            row[f"samples_per_s@{length}"] = round(len(recs) / (time.perf_counter() - t), 4)
        except Exception as e:  # one architecture failing must not lose the others' rows
            row[f"samples_per_s@{length}"] = None
            row[f"error@{length}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None
    backend.close()
    del backend
    gc.collect()
    return row


def table(rows: list[dict[str, Any]], lengths: list[int], n_params: dict[str, int]) -> str:
    by = {r["arch"]: r for r in rows}
    head = ["arch", "class", "params (M)"] + [f"samples/s {n // 1024}K" if n >= 1024 else f"samples/s {n}" for n in lengths]
    head += [f"vs Llama {n // 1024}K" if n >= 1024 else f"vs Llama {n}" for n in lengths] + ["peak GiB", "prefill", "load s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref = by.get(REFERENCE.get(r["arch"], "sheared-llama-2.7b"))
        rates = [r.get(f"samples_per_s@{n}") for n in lengths]
        rel = []
        for n, x in zip(lengths, rates):
            y = ref.get(f"samples_per_s@{n}") if ref else None
            rel.append(f"{x / y:.2f}" if (x and y) else "–")
        cells = [r["arch"], r["class"], f"{n_params[r['arch']] / 1e6:,.0f}"] + [f"{x:.3f}" if x else "error" for x in rates]
        cells += rel + [str(r.get("peak_gib") or "–"), r["prefill"], str(r["load_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated subset of: " + ", ".join(ARCHS))
    p.add_argument("--lengths", default="4096,16384")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--tiny", action="store_true", help="tiny widths, same classes and layer patterns (CPU smoke)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="bfloat16 (default on CUDA) | float32 (default on CPU)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep-models", action="store_true", help="keep the saved random-weight folders under OUT/models")
    args = p.parse_args(argv)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        p.error(f"unknown architectures {unknown}; choose from {', '.join(ARCHS)}")
    lengths = [int(x) for x in args.lengths.split(",")]
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "models" if args.keep_models else Path(tempfile.mkdtemp(prefix="seed-models-"))
    rows, n_params = [], {}
    try:
        for arch in archs:
            folder, n_params[arch] = build_folder(arch, root, args.tiny, args.device, dtype)
            row = run_one(arch, folder, lengths, args.num_samples, args.device, dtype, args.out / "runs")
            row["params"] = n_params[arch]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep_models:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep_models:
            shutil.rmtree(root, ignore_errors=True)
    md = table(rows, lengths, n_params)
    print(md)
    (args.out / "seed_models.md").write_text(md + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(args.out / "seed_models.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
