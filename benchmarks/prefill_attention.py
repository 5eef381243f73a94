"""Prefill attention of a left-padded batch: spanlab's two paths against unmasked lower bounds.

Shapes of the 1B Llama of docs/benchmarks.md (32 query heads, 8 KV heads, head dim 64, bf16) at the
engine's batches (64 x 4K, 32 x 16K), with left padding as sorted niah batches have it (0 to
--max-pad tokens, longest prompt unpadded). Keys and values as a static cache (b, 8, q + 128, 64),
as the engine's prefill passes them, or as the projections leave them (--no-cache).

- rows: `prefill_rows`, unmasked causal SDPA per run of equal padding (the previous default).
- varlen: `prefill_varlen`, one flash-attention call over the packed batch (the default on CUDA).
- full/<backend>: one causal SDPA call over the whole padded batch, ignoring the padding. Not a
  valid result (padded keys leak in): a lower bound, per SDPA backend; "cudnn-rep" feeds cuDNN
  repeated K/V (it may refuse GQA).

TFLOP/s count the real tokens' causal attention only: 4 x (n^2 / 2) x heads x head_dim per row.
Error: relative to `prefill_rows` (bf16 SDPA) on the same inputs, over real positions.

    python benchmarks/prefill_attention.py [--shapes 64x4096 32x16384] [--max-pad 40]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from spanlab.bench import time_cuda
from spanlab.models.gqa_decode import prefill_rows, prefill_varlen


def full(q, k, v, backend: str | None, rep: bool = False):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    n = q.shape[2]
    kk, vv = k[:, :, :n], v[:, :, :n]
    if rep:
        r = q.shape[1] // k.shape[1]
        kk, vv = kk.repeat_interleave(r, 1), vv.repeat_interleave(r, 1)
    kw = {} if rep or q.shape[1] == k.shape[1] else {"enable_gqa": True}
    if backend is None:
        return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **kw)
    with sdpa_kernel(getattr(SDPBackend, backend)):
        return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **kw)


def paths(q, k, v, pads, scale):
    return {
        "rows": lambda: prefill_rows(q, k, v, pads, scale),
        "varlen": lambda: prefill_varlen(q, k, v, pads, scale),
        "full/default": lambda: full(q, k, v, None),
        "full/FLASH_ATTENTION": lambda: full(q, k, v, "FLASH_ATTENTION"),
        "full/CUDNN_ATTENTION": lambda: full(q, k, v, "CUDNN_ATTENTION"),
        "full/cudnn-rep": lambda: full(q, k, v, "CUDNN_ATTENTION", rep=True),
        "full/EFFICIENT_ATTENTION": lambda: full(q, k, v, "EFFICIENT_ATTENTION"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["64x4096", "32x16384"])
    ap.add_argument("--max-pad", type=int, default=40)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-cache", action="store_true", help="K/V in the projections' layout instead of a static cache")
    args = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    h, kvh, d = args.heads, args.kv_heads, args.head_dim
    rows = []
    for shape in args.shapes:
        b, n = map(int, shape.split("x"))
        g = torch.Generator(device="cpu").manual_seed(0)
        pads = sorted((int(x) for x in torch.randint(0, args.max_pad + 1, (b,), generator=g)), reverse=True)
        pads[-1] = 0
        q = torch.randn(b, n, h, d, generator=g).to(dev, dt).transpose(1, 2)
        if args.no_cache:
            k, v = (torch.randn(b, n, kvh, d, generator=g).to(dev, dt).transpose(1, 2) for _ in range(2))
        else:
            k, v = (torch.randn(b, kvh, n + 128, d, generator=g).to(dev, dt) for _ in range(2))
        scale = d ** -0.5
        flops = sum(4 * ((n - p) ** 2 / 2) * h * d for p in pads)
        ref = prefill_rows(q, k, v, pads, scale).float()
        variants = paths(q, k, v, pads, scale)
        for name, fn in variants.items():
            row = {"shape": shape, "variant": name, "pad_fraction": round(sum(pads) / (b * n), 4)}
            try:
                ms = time_cuda(fn, warmup=1, iters=args.reps).median_ms
                row.update(ms=round(ms, 3), tflops=round(flops / ms / 1e9, 1))
                if name in ("rows", "varlen"):
                    out = fn().float()
                    num = sum(float((out[r, p:] - ref[r, p:]).norm() ** 2) for r, p in enumerate(pads))
                    den = sum(float(ref[r, p:].norm() ** 2) for r, p in enumerate(pads))
                    row["rel_err_vs_rows"] = float(num ** 0.5 / den ** 0.5)
                    row["finite"] = bool(torch.isfinite(out).all())
            except Exception as e:  # noqa: BLE001 - a backend that refuses these inputs is a result too
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'shape':10s} {'variant':26s} {'ms':>9s} {'TFLOP/s':>8s}  note")
    for r in rows:
        note = r.get("error", "") or (f"rel err {r['rel_err_vs_rows']:.1e}" if "rel_err_vs_rows" in r else "")
        print(f"{r['shape']:10s} {r['variant']:26s} {r.get('ms', float('nan')):9.3f} {r.get('tflops', float('nan')):8.1f}  {note}")


if __name__ == "__main__":
    main()
