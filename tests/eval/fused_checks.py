"""Checks of spanlab.models.fused's kernels against transformers' eager Llama code, shared by the CPU
test (Triton's interpreter, in a subprocess: `TRITON_INTERPRET=1 python fused_checks.py cpu`) and the
CUDA test (`python fused_checks.py cuda` also prints how many elements differ from eager). The
interpreter rounds bfloat16 wrongly, so on CPU the checks run in float16 and the exp of silu is
numpy's (the compiled kernel calls CUDA's expf, as torch's CUDA silu does).
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
        eps = 2.0 ** -7 if dt == torch.bfloat16 else 2.0 ** -10  # relative spacing of the dtype
        diff = (got.float() - want.float()).abs()
        # Summation order of the mean differs from torch's: the normalised value moves by its last bit
        # now and then, which the weight's product can carry to two or so of the output's.
        rms_off = float((got != want).float().mean())
        assert bool((diff <= 4 * eps * want.float().abs() + 1e-6).all()), f"rms {dt}: {float(diff.max())}"
        assert rms_off < 0.01, f"rms {dt}: {rms_off:.2e} of the elements differ"

        gate = (torch.randn(5, 3, 1001, generator=g) * 4).to(device, dt)
        up = torch.randn(5, 3, 1001, generator=g).to(device, dt)
        want = torch.nn.functional.silu(gate) * up
        got = fused.silu_mul(gate, up)
        silu_off = float((got != want).float().mean())
        assert silu_off == 0 if device == "cuda" else silu_off < 0.01, f"silu {dt}: {silu_off:.2e} of the elements differ"

        b, h, kvh, s, d = 3, 6, 2, 29, 16
        q = torch.randn(b, s, h, d, generator=g).to(device, dt).transpose(1, 2)
        k = torch.randn(b, s, kvh, d, generator=g).to(device, dt).transpose(1, 2)
        cos, sin = (torch.randn(b, s, d, generator=g).to(device, dt) for _ in range(2))
        wq, wk = rope_ref(q, k, cos, sin)
        gq, gk = fused.rotary(q, k, cos, sin)
        rope_off = _check_rotary(device, dt, eps, (q, k), cos, sin, (wq, wk), (gq, gk))
        assert gq.transpose(1, 2).is_contiguous()  # (b, s, heads, d) memory, as eager leaves it
        # cos/sin shared by the batch (no padding: position ids (1, s)) and a non-contiguous query.
        qs = torch.randn(b, h, s, d, generator=g).to(device, dt)
        cb, sb = cos[:1].expand(b, -1, -1), sin[:1].expand(b, -1, -1)
        _check_rotary(device, dt, eps, (qs, k), cb, sb, rope_ref(qs, k, cos[:1], sin[:1]), fused.rotary(qs, k, cb, sb))
        print(f"{device} {dt}: elements differing from eager: rms_norm {rms_off:.2e}, silu_mul {silu_off:.2e}, "
              f"rotary {rope_off:.2e}")
    print("fused kernel checks passed")


def _check_rotary(device, dt, eps, xs, cos, sin, want, got) -> float:
    """Identical to eager (the kernel rounds where eager rounds). Were a product left unrounded (an
    FMA), the difference would stay within one rounding of the products: checked first, so that a
    failure says which of the two it is."""
    off = []
    for x, w, g in zip(xs, want, got):
        assert g.shape == w.shape and g.dtype == w.dtype
        c, s = cos[:, None].float(), sin[:, None].float()
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1).float()
        scale = (x.float() * c).abs() + (rot * s).abs() + w.float().abs()
        diff = (g.float() - w.float()).abs()
        assert bool((diff <= eps * scale + 1e-6).all()), f"rotary {dt}: {float((diff / scale).max()):.2e} of scale"
        off.append(float((g != w).float().mean()))
        assert off[-1] == 0, f"rotary {dt}: {off[-1]:.2e} of the elements differ from eager (by a rounding)"
    return max(off)

if __name__ == "__main__":
    run_all(sys.argv[1] if len(sys.argv) > 1 else "cpu")
