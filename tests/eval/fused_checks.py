"""Checks of spanlab.models.fused's kernels against transformers' eager Llama code, shared by the CPU
test (Triton's interpreter, in a subprocess: `TRITON_INTERPRET=1 python fused_checks.py cpu`) and the
CUDA test. The interpreter rounds bfloat16 wrongly, so on CPU the checks run in float16 and the
exp of silu is numpy's (the compiled kernel calls CUDA's expf, as torch's CUDA silu does).
"""

from __future__ import annotations

import sys

import torch


def run_all(device: str) -> None:
    from transformers.models.llama import modeling_llama as L

    from spanlab.models import fused

    dtypes = (torch.float16,) if device == "cpu" else (torch.bfloat16, torch.float16)
    rope_ref = getattr(L.apply_rotary_pos_emb, "__wrapped__", L.apply_rotary_pos_emb)
    for n, dt in enumerate(dtypes):
        g = torch.Generator().manual_seed(n)
        rows, hid = (37, 200) if device == "cpu" else (3000, 2048)
        x = (torch.randn(rows, hid, generator=g) * 3).to(device, dt)
        norm = L.LlamaRMSNorm(hid, eps=1e-5).to(device, dt)
        norm.weight.data = (torch.randn(hid, generator=g) * 0.3 + 1).to(device, dt)
        with torch.no_grad():
            want = norm(x)
        got = fused.rms_norm(x, norm.weight, 1e-5)
        diff = (got.float() - want.float()).abs()
        ulp = want.float().abs() * (2.0 ** -7 if dt == torch.bfloat16 else 2.0 ** -10)
        # Summation order of the mean differs from torch's: a last-bit difference now and then.
        assert bool((diff <= ulp + 1e-6).all()), f"rms {dt}: {float(diff.max())}"
        assert float((got != want).float().mean()) < 0.02, f"rms {dt}: {float((got != want).float().mean())}"

        gate = (torch.randn(5, 3, 1001, generator=g) * 4).to(device, dt)
        up = torch.randn(5, 3, 1001, generator=g).to(device, dt)
        want = torch.nn.functional.silu(gate) * up
        got = fused.silu_mul(gate, up)
        if device == "cuda":
            assert torch.equal(got, want), f"silu {dt}: {float((got != want).float().mean())}"
        else:
            assert float((got != want).float().mean()) < 0.01

        b, h, kvh, s, d = 3, 6, 2, 29, 16
        q = torch.randn(b, s, h, d, generator=g).to(device, dt).transpose(1, 2)
        k = torch.randn(b, s, kvh, d, generator=g).to(device, dt).transpose(1, 2)
        cos, sin = (torch.randn(b, s, d, generator=g).to(device, dt) for _ in range(2))
        wq, wk = rope_ref(q, k, cos, sin)
        gq, gk = fused.rotary(q, k, cos, sin)
        assert torch.equal(gq, wq) and torch.equal(gk, wk), f"rotary {dt}"
        assert gq.transpose(1, 2).is_contiguous()  # (b, s, heads, d) memory, as eager leaves it
        # cos/sin shared by the batch (no padding: position ids (1, s)) and a non-contiguous query.
        qs = torch.randn(b, h, s, d, generator=g).to(device, dt)
        wq, wk = rope_ref(qs, k, cos[:1], sin[:1])
        gq, gk = fused.rotary(qs, k, cos[:1].expand(b, -1, -1), sin[:1].expand(b, -1, -1))
        assert torch.equal(gq, wq) and torch.equal(gk, wk), f"rotary broadcast {dt}"
    print("fused kernel checks passed")


if __name__ == "__main__":
    run_all(sys.argv[1] if len(sys.argv) > 1 else "cpu")
