"""spanlab's SSD scan with its large contractions in bf16 (float32 accumulation; what it does on
CUDA for bf16 models): within bf16 rounding of the all-float32 path and of a float64 recurrence,
on CPU (bf16 matmul runs there) and on CUDA; float32 stays the default on CPU and an option."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from spanlab.errors import SpanlabError  # noqa: E402
from spanlab.models import ssd  # noqa: E402

# bf16 operands in four products: per-element rounding 2^-8 (~4e-3), accumulated over a chunk.
BF16_TOL = 1e-2  # measured ~3e-3 on these shapes (CPU, 2026-12-04)


def draw(b, L, h, p, g, n, *, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=torch.bfloat16)

    return {"x": r(b, L, h, p), "dt": r(b, L, h), "A": -(torch.rand(h, generator=gen) * 3 + 0.1).to(device),
            "B": r(b, L, g, n, scale=0.5), "C": r(b, L, g, n, scale=0.5), "D": r(h), "dt_bias": r(h),
            "s0": torch.randn(b, h, p, n, generator=gen).to(device)}


def scan(t, chunk, mm):
    return ssd.ssd_chunk_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=chunk, D=t["D"], dt_bias=t["dt_bias"],
                              initial_states=t["s0"], dt_softplus=True, return_final_states=True, matmul_dtype=mm)


def recurrence(t):
    f = {k: v.double().cpu() for k, v in t.items()}
    b, L, h, p = f["x"].shape
    g = f["B"].shape[2]
    # dt in the input dtype up to the softplus, as the scan (and transformers) computes it.
    dt = torch.nn.functional.softplus(t["dt"] + t["dt_bias"]).double().cpu()
    Bh, Ch = f["B"].repeat_interleave(h // g, dim=2), f["C"].repeat_interleave(h // g, dim=2)
    state, ys = f["s0"].clone(), []
    for i in range(L):
        state = state * torch.exp(dt[:, i] * f["A"])[..., None, None] + (dt[:, i, :, None] * f["x"][:, i])[..., None] * Bh[:, i, :, None, :]
        ys.append((state * Ch[:, i, :, None, :]).sum(-1) + f["D"][:, None] * f["x"][:, i])
    return torch.stack(ys, dim=1), state


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(2, 100, 8, 16, 2, 16, 32), (1, 77, 4, 32, 1, 64, 16), (2, 40, 6, 8, 3, 8, 64)])
def test_bf16_contractions_are_within_bf16_rounding(shape):
    b, L, h, p, g, n, chunk = shape
    t = draw(b, L, h, p, g, n, seed=sum(shape))
    lo, lo_state = scan(t, chunk, torch.bfloat16)
    hi, hi_state = scan(t, chunk, torch.float32)
    ref, ref_state = recurrence(t)
    assert lo.dtype == torch.float32 and lo_state.dtype == torch.float32  # outputs and states stay float32
    assert rel(hi, ref) < 1e-5 and rel(hi_state, ref_state) < 1e-5
    assert rel(lo, hi) < BF16_TOL and rel(lo_state, hi_state) < BF16_TOL
    assert rel(lo, ref) < BF16_TOL
    assert rel(lo, hi) > 1e-6  # the bf16 path really ran


def test_cpu_and_float32_inputs_keep_float32_and_the_option_is_checked(kernel_choices):
    x = torch.zeros(1, 4, 2, 2, dtype=torch.bfloat16)
    assert ssd.contraction_dtype(x) == torch.float32  # CPU: float32 whatever the input
    assert ssd.contraction_dtype(x.float()) == torch.float32
    with pytest.raises(SpanlabError, match="ssd_matmul"):
        kernel_choices("ssd_matmul=bf16")


@pytest.mark.gpu
def test_cuda_bf16_default_is_within_bf16_rounding(kernel_choices):
    t = draw(2, 1000, 8, 64, 1, 128, seed=4, device="cuda")
    assert ssd.contraction_dtype(t["x"]) == torch.bfloat16
    lo, lo_state = scan(t, 256, None)
    kernel_choices("ssd_matmul=float32")
    hi, hi_state = scan(t, 256, None)
    assert rel(lo, hi) < BF16_TOL and rel(lo_state, hi_state) < BF16_TOL
    assert rel(lo, hi) > 1e-6
