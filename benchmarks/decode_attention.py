"""Decode attention micro-benchmark: one query token per sequence over a left-padded static KV cache.

Shape of a 1B Llama decode step at 16K (batch 32, 8 KV heads, 4 query heads each, head dim 128,
bf16). The floor is one read of K and V: 2 x B x H_kv x T x D x 2 bytes over the measured copy
bandwidth. Compares transformers' path (repeat_kv + masked SDPA), the folded SDPA of
`spanlab_sdpa` with each SDPA backend forced, the matmul path and the Triton split-KV kernel
(swept over block size, pipeline depth and split count); checks each against float32 math.

    python benchmarks/decode_attention.py --out decode.json
"""

from __future__ import annotations

import argparse
import json

import torch

from spanlab.bench import time_cuda


def copy_bandwidth(nbytes: int = 2 * 2**30) -> float:
    """Bytes/s of a large device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), warmup=3, iters=10).median_ms
    return 2 * nbytes / (ms / 1e3)


def sdpa_kernel_names(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if e.device_type.name == "CUDA"})
    return [n[:90] for n in names]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--length", type=int, default=16384 + 128)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from spanlab.models import gqa_decode as G

    b, kvh, rep, T, d = args.batch, args.kv_heads, args.group, args.length, args.head_dim
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(b, kvh * rep, 1, d, device=dev, dtype=torch.bfloat16, generator=g)
    k = torch.randn(b, kvh, T, d, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn(b, kvh, T, d, device=dev, dtype=torch.bfloat16, generator=g)
    # Left padding of 0..63 tokens per row (prompts of one length bucket), the last 100 cache
    # slots not yet written (static cache mid-way through decoding).
    pads = torch.randint(0, 64, (b,), device=dev, generator=g)
    pos = torch.arange(T, device=dev)
    mask = ((pos[None, :] >= pads[:, None]) & (pos[None, :] < T - 100))[:, None, None, :]
    scale = d ** -0.5
    qf = q.reshape(b, kvh, rep, d)

    # Ceilings: a large device-to-device copy (bytes read + written), the floor for this step.
    bw = copy_bandwidth()
    kv_bytes = 2 * b * kvh * T * d * 2
    floor_ms = kv_bytes / bw * 1e3
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s; K+V {kv_bytes / 2**30:.2f} GiB -> floor {floor_ms:.3f} ms per layer", flush=True)

    ref = torch.nn.functional.scaled_dot_product_attention(qf.float(), k.float(), v.float(), attn_mask=mask, scale=scale)
    mod = torch.nn.Module()
    mod.num_key_value_groups, mod.is_causal, mod.training = rep, True, False

    def err(out):
        out = out.reshape(b, kvh, rep, d) if out.shape != ref.shape else out
        return float((out.float() - ref).norm() / ref.norm())

    variants = {
        "transformers sdpa (repeat_kv)": lambda: sdpa_attention_forward(mod, q, k, v, mask, scaling=scale)[0].transpose(1, 2).reshape(b, kvh, rep, d),
        "folded sdpa (default backend)": lambda: G.sdpa_decode(qf, k, v, mask, scale),
        "matmul (bmm + fp32 softmax)": lambda: G.matmul_decode(qf, k, v, mask, scale),
    }
    for name, be in (("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH),
                     ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        def run(be=be):
            with sdpa_kernel([be]):
                return G.sdpa_decode(qf, k, v, mask, scale)
        variants[f"folded sdpa forced {name}"] = run
    # Lower bound of what SDPA can do without any mask (not a valid result here: no padding mask).
    variants["flash, no mask (not equivalent)"] = lambda: torch.nn.functional.scaled_dot_product_attention(qf, k, v, scale=scale)
    for bn in (64, 128):
        for stages in (2, 3, 4):
            for splits in (None, 1, 2, 6, 12):
                label = f"triton BN={bn} stages={stages} splits={splits or 'auto(' + str(G.num_splits(b * kvh, T, G._sm_count(0), bn)) + ')'}"
                variants[label] = (lambda bn=bn, st=stages, sp=splits:
                                   G.triton_decode(qf, k, v, mask, scale, splits=sp, block_n=bn, num_stages=st))

    rows = []
    for name, fn in variants.items():
        try:
            out = fn()
            e = err(out) if "not equivalent" not in name else float("nan")
            ms = time_cuda(fn, warmup=3, iters=20).median_ms
        except Exception as ex:  # noqa: BLE001 - a backend that refuses the inputs must not lose the others' numbers
            print(json.dumps({"variant": name, "error": repr(ex)[:200]}), flush=True)
            continue
        row = {"variant": name, "ms": round(ms, 4), "x_floor": round(ms / floor_ms, 2),
               "GB_per_s": round(kv_bytes / (ms / 1e3) / 1e9), "rel_err": e}
        rows.append(row)
        print(json.dumps(row), flush=True)
    kernels = {"folded sdpa (default backend)": sdpa_kernel_names(variants["folded sdpa (default backend)"]),
               "transformers sdpa (repeat_kv)": sdpa_kernel_names(variants["transformers sdpa (repeat_kv)"])}
    print(json.dumps({"kernels": kernels}), flush=True)
    print(f"\nB={b} H_kv={kvh} group={rep} T={T} D={d} bf16; floor {floor_ms:.3f} ms ({bw / 1e12:.2f} TB/s copy)")
    print(f"{'variant':58s} {'ms':>8s} {'x floor':>8s} {'GB/s':>6s} {'rel err':>9s}")
    for r in sorted(rows, key=lambda r: r["ms"]):
        print(f"{r['variant']:58s} {r['ms']:8.3f} {r['x_floor']:8.2f} {r['GB_per_s']:6d} {r['rel_err']:9.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"shape": vars(args), "copy_TBps": bw / 1e12, "floor_ms": floor_ms, "rows": rows, "kernels": kernels},
                      f, indent=2)


if __name__ == "__main__":
    main()
