"""Checks of the fused Triton SSD scan (spanlab.models.ssd_triton) against the float64 per-position
recurrence and spanlab's torch scan, shared by the CUDA tests and the CPU-interpreter test.

Run as a script (`TRITON_INTERPRET=1 python ssd_triton_checks.py cpu`) it runs every check on CPU
through Triton's interpreter, which must be on before triton is imported: hence the subprocess in
the CPU test. Every check draws fresh random inputs and poisons the kernels' outputs with NaN
(an element nothing wrote fails the finite check).
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F
from test_ssd import recurrence, rel

from spanlab import kernels
from spanlab.models import ssd, ssd_triton

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
# b, L, h, p, g, n, chunk: padded last chunks, one partial chunk, p and n below one tile and not
# powers of two, groups shared by several heads, chunks of one and of several row tiles.
SHAPES = [(2, 37, 4, 16, 2, 16, 16), (1, 64, 2, 32, 1, 32, 32), (2, 48, 6, 8, 3, 24, 16), (1, 100, 2, 16, 1, 16, 64),
          (1, 96, 2, 20, 2, 40, 48)]


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty returns NaN-filled tensors while active: unwritten outputs cannot pass."""
    orig = torch.empty

    def empty(*args, **kwargs):
        t = orig(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    torch.empty = empty
    try:
        yield
    finally:
        torch.empty = orig


def inputs(b, L, h, p, g, n, *, dtype, device, gen, init=True):
    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    # x and B/C as slices of wider tensors (the mixers pass views of the conv output).
    xw = r(b, L, h, p + 3)
    bcw = r(b, L, g, 2 * n + 1, scale=0.5)
    t = {"x": xw[..., 1:p + 1], "dt": r(b, L, h), "A": -(torch.rand(h, generator=gen) * 3 + 0.1), "B": bcw[..., :n],
         "C": bcw[..., n + 1:], "D": r(h), "dt_bias": r(h), "s0": torch.randn(b, h, p, n, generator=gen) if init else None}
    return {k: (v.to(device) if v is not None else None) for k, v in t.items()}


def processed_dt(t):
    return F.softplus(t["dt"].float() + t["dt_bias"].float())


def check_kernel(device: str) -> None:
    """The kernels' function itself, float32 (to rounding) and bf16 (to bf16 rounding), against the
    float64 recurrence, with and without an initial state and D."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for shape in SHAPES:
            for init in (True, False):
                t = inputs(*shape[:6], dtype=dtype, device=device, gen=gen, init=init)
                with poisoned_empty():
                    y, final = ssd_triton.chunk_scan(t["x"], processed_dt(t), t["A"], t["B"], t["C"], shape[6], D=t["D"],
                                                     initial_states=t["s0"])
                cpu = {k: (v.cpu() if v is not None else None) for k, v in t.items()}
                want_y, want_final = recurrence(cpu)
                assert y.dtype == torch.float32 and y.is_contiguous() and y.shape == t["x"].shape
                ey, ef = rel(y.cpu(), want_y), rel(final.cpu(), want_final)
                assert torch.isfinite(y).all() and torch.isfinite(final).all(), (shape, dtype)
                assert ey <= TOL[dtype] and ef <= TOL[dtype], (shape, dtype, init, ey, ef)
    print("kernel ok")


def check_dispatch(device: str) -> None:
    """`ssd.ssd_chunk_scan` routes half-precision inputs without gradients to the kernels (and not
    with `ssd=torch`, with gradients, or for float32), with the same result as the torch scan."""
    gen = torch.Generator().manual_seed(1)
    calls = []
    orig = ssd_triton.chunk_scan

    def counted(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    ssd_triton.chunk_scan = counted
    try:
        # 64-channel heads: on CUDA smaller ones take the torch scan (ssd_triton.supports).
        t = inputs(2, 40, 4, 64, 2, 16, dtype=torch.bfloat16, device=device, gen=gen)

        def scan():
            return ssd.ssd_chunk_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=16, D=t["D"], dt_bias=t["dt_bias"],
                                      initial_states=t["s0"], dt_softplus=True, return_final_states=True)

        with torch.no_grad():
            got = scan()
            assert len(calls) == 1
            with kernels.use("ssd=torch"):
                want = scan()
            assert len(calls) == 1
        assert rel(got[0].cpu(), want[0].cpu()) <= TOL[torch.bfloat16] and rel(got[1].cpu(), want[1].cpu()) <= TOL[torch.bfloat16]
        t["x"] = t["x"].detach().requires_grad_(True)
        scan()[0].sum().backward()  # the torch scan, which keeps autograd
        assert len(calls) == 1 and t["x"].grad is not None
        t = {k: (v.float() if v is not None else None) for k, v in t.items()}
        with torch.no_grad():
            scan()
        assert len(calls) == 1
        if not ssd_triton.interpreting():
            # Compiled for the GPU, 32-channel heads were wrong (benchmarks/ssd_fault_repro.py).
            t = inputs(2, 40, 4, 32, 2, 16, dtype=torch.bfloat16, device=device, gen=gen)
            with torch.no_grad():
                scan()
            assert len(calls) == 1
    finally:
        ssd_triton.chunk_scan = orig
    print("dispatch ok")


def check_model(device: str) -> None:
    """A tiny bf16 Mamba2 gives the torch scan's logits (to bf16 rounding) through the kernels."""
    import transformers as T

    torch.manual_seed(0)
    # Heads of 64 channels, which the compiled kernels take (ssd_triton.head_supported).
    cfg = T.Mamba2Config(hidden_size=64, num_hidden_layers=2, state_size=16, expand=2, head_dim=64, num_heads=2,
                         n_groups=2, chunk_size=16, vocab_size=120, initializer_range=0.1)
    model = T.Mamba2ForCausalLM(cfg).to(device=device, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 120, (2, 45), device=device)
    calls = []
    orig = ssd_triton.chunk_scan

    def counted(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    ssd.install()
    ssd_triton.chunk_scan = counted
    try:
        with torch.no_grad():
            got = model(ids).logits.float()
            with kernels.use("ssd=torch"):
                want = model(ids).logits.float()
    finally:
        ssd_triton.chunk_scan = orig
        ssd.uninstall()
    assert len(calls) == 2, calls  # one scan per layer, through the kernels
    e = rel(got.cpu(), want.cpu())
    assert e <= 2e-2, e
    print(f"model ok (rel {e:.1e})")


def check_real_size(device: str) -> None:
    """A 1B Mamba2 layer's scan (64 heads x 64, state 128, 1 group, chunk 256) at 4K tokens with a
    partial last chunk, bf16 kernels against the float32 torch scan."""
    gen = torch.Generator().manual_seed(3)
    t = inputs(1, 4000, 64, 64, 1, 128, dtype=torch.bfloat16, device=device, gen=gen)
    dt = processed_dt(t)
    y, final = ssd_triton.chunk_scan(t["x"], dt, t["A"], t["B"], t["C"], 256, D=t["D"], initial_states=t["s0"])
    with kernels.use("ssd=torch,ssd_matmul=float32"):
        want_y, want_final = ssd.ssd_chunk_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=256, D=t["D"],
                                                dt_bias=t["dt_bias"], initial_states=t["s0"], dt_softplus=True,
                                                return_final_states=True)
    ey, ef = rel(y, want_y), rel(final, want_final)
    assert ey <= TOL[torch.bfloat16] and ef <= TOL[torch.bfloat16], (ey, ef)
    print(f"real size ok (rel {ey:.1e} / {ef:.1e})")


CHECKS = {"kernel": check_kernel, "dispatch": check_dispatch, "model": check_model, "real": check_real_size}


def run(device: str, which=("kernel", "dispatch", "model")) -> None:
    for name in which:
        CHECKS[name](device)


if __name__ == "__main__":
    run(sys.argv[1], tuple(sys.argv[2:]) or ("kernel", "dispatch", "model"))
    print("ssd triton checks passed")
