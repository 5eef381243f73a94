"""Checks of the decode-attention paths against transformers' masked SDPA in float64, shared by the
CPU tests (the Triton kernel through Triton's interpreter, which must be switched on before triton
is imported, hence a subprocess: `TRITON_INTERPRET=1 python decode_checks.py cpu`) and the CUDA test.
"""

from __future__ import annotations

import sys

import torch


def reference(q, k, v, mask, scale):
    """transformers' own SDPA attention (repeat_kv + masked SDPA), in float64. q (b, h, 1, d)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    mod = torch.nn.Module()
    mod.num_key_value_groups, mod.is_causal, mod.training = q.shape[1] // k.shape[1], True, False
    m = mask if mask is None or mask.dtype == torch.bool else mask.double()
    out, _ = sdpa_attention_forward(mod, q.double(), k.double(), v.double(), m, scaling=scale)
    return out  # (b, 1, h, d)


def cases(device: str):
    # (batch, kv heads, heads per kv head, cache length, head dim, dtype, forced splits)
    small = device == "cpu"  # the interpreter runs every program in Python
    yield 3, 2, 4, 300, 64, torch.float32, None
    yield 2, 1, 1, 130, 16, torch.float32, 3  # MHA, more splits than one block each
    yield 2, 2, 5, 257, 80, torch.float32, 2  # rep and head dim not powers of two
    yield 2, 2, 8, 200, 64, torch.bfloat16, None
    yield 1, 2, 4, 190, 32, torch.float16, 4
    if not small:
        yield 4, 8, 4, 4099, 128, torch.bfloat16, None
        yield 2, 8, 4, 16500, 128, torch.bfloat16, None
        yield 3, 4, 2, 5000, 64, torch.float32, 7


def draw(b, kvh, rep, T, d, dtype, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(b, kvh * rep, 1, d, generator=g)
    k = torch.randn(b, kvh, T, d, generator=g)
    v = torch.randn(b, kvh, T, d, generator=g)
    # Left padding of different widths (row 0 longer than a split in the small cases), and the
    # unfilled tail of a static cache: what a decode step's mask looks like.
    mask = torch.ones(b, 1, 1, T, dtype=torch.bool)
    for r in range(b):
        mask[r, ..., : (37 * (r + 1) * (T // 100 + 1)) % (T // 2)] = False
        if r:
            mask[r, ..., T - 11 * r:] = False
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)] + [mask.to(device)]


def tolerance(dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 2e-2


def run_all(device: str, paths=("triton", "matmul", "sdpa")) -> None:
    from spanlab.models import gqa_decode as G

    for n, (b, kvh, rep, T, d, dtype, splits) in enumerate(cases(device)):
        q, k, v, mask = draw(b, kvh, rep, T, d, dtype, device, seed=n)
        scale = d ** -0.5
        qf = q.reshape(b, kvh, rep, d)
        additive = torch.zeros(mask.shape, device=device, dtype=torch.float32).masked_fill(~mask, float("-inf"))
        for m in (mask, additive, None):
            want = reference(q, k, v, m, scale)
            for path in paths:
                if path == "triton":
                    out = G.triton_decode(qf, k, v, m, scale, splits=splits)
                elif path == "matmul":
                    if dtype != torch.float32 and device == "cpu":
                        continue  # CPU half matmuls: slow and not what runs
                    out = G.matmul_decode(qf, k, v, m, scale)
                else:
                    if dtype != torch.float32 and device == "cpu":
                        continue
                    out = G.sdpa_decode(qf, k, v, m, scale)
                assert out.shape == (b, kvh, rep, d) and out.dtype == dtype, (path, out.shape, out.dtype)
                got = out.reshape(b, kvh * rep, 1, d).transpose(1, 2)
                assert torch.isfinite(got).all(), path
                err = float((got.double().cpu() - want.cpu()).norm() / want.norm())
                label = f"{path} b={b} kvh={kvh} rep={rep} T={T} d={d} {dtype} splits={splits} mask={None if m is None else m.dtype}"
                assert err < tolerance(dtype), f"{label}: relative error {err:.3g}"
    print("decode attention checks passed")


if __name__ == "__main__":
    run_all(sys.argv[1] if len(sys.argv) > 1 else "cpu",
            tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("triton", "matmul", "sdpa"))
