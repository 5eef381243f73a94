"""Checks of the Mamba2 decode-step kernels (spanlab.models.mamba2_kernels) against transformers'
torch fallbacks and a float64 evaluation, shared by the CUDA tests and the CPU-interpreter test.

Run as a script (`TRITON_INTERPRET=1 python mamba2_kernel_checks.py cpu`) it runs every check on
CPU through Triton's interpreter, which must be switched on before triton is imported: hence the
subprocess in the CPU test.
"""

from __future__ import annotations

import sys

import torch

from spanlab.models import mamba2_kernels as mk

# float32: the kernels and the fallbacks do the same float32 math. bf16: the fallbacks round
# intermediates to bf16, the kernels do not (module doc); the kernels stay closer to float64.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
# b, d (channels), width, seq, bias, activation
CONV_SHAPES = [(2, 96, 4, 1, True, "silu"), (3, 50, 4, 1, False, None), (1, 130, 3, 2, True, "silu"),
               (2, 17, 4, 3, True, "swish")]
# b, h, p, n, g, with D / z / dt_bias / softplus, expanded (transformers' call) or dense per-(h, p)
SSM_SHAPES = [(2, 8, 16, 32, 2, True, False, True, True, True), (1, 4, 64, 128, 1, True, True, True, True, True),
              (3, 6, 12, 20, 3, False, True, False, False, False), (2, 2, 8, 16, 2, True, False, True, True, False)]


def fallback(name: str, module: str = "transformers.models.mamba2.modeling_mamba2"):
    import importlib

    fn = getattr(importlib.import_module(module), name)
    return getattr(fn, "_spanlab_fallback", fn)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite output"
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def conv_inputs(b, d, w, s, bias, dtype, device, gen):
    x = torch.randn(b, d, s, generator=gen).to(device=device, dtype=dtype)
    state = torch.randn(b, d, w, generator=gen).to(device=device, dtype=dtype)
    weight = (torch.randn(d, w, generator=gen) / w**0.5).to(device=device, dtype=dtype)
    bb = torch.randn(d, generator=gen).to(device=device, dtype=dtype) if bias else None
    return x, state, weight, bb


def check_conv(device: str, dtypes=(torch.float32, torch.bfloat16)) -> None:
    ref_fn = fallback(mk.CONV)
    gen = torch.Generator().manual_seed(0)
    for dtype in dtypes:
        for b, d, w, s, bias, act in CONV_SHAPES:
            x, state, weight, bb = conv_inputs(b, d, w, s, bias, dtype, device, gen)
            # A non-contiguous x (a slice of a wider projection, as the mixers pass it).
            wide = torch.randn(b, d + 7, s, generator=gen).to(device=device, dtype=dtype)
            wide[:, 3:3 + d] = x
            x = wide[:, 3:3 + d]
            s_ref, s_64 = state.clone(), state.double().cpu()
            want = ref_fn(x.clone(), s_ref, weight, bb, activation=act)
            want64 = ref_fn(x.double().cpu(), s_64, weight.double().cpu(), None if bb is None else bb.double().cpu(),
                            activation=act)
            got = mk.conv_update_triton(x, state, weight, bb, act)
            assert got.dtype == x.dtype and got.shape == (b, d, s)
            e, e64, es = rel(got, want), rel(got, want64), rel(state, s_ref)
            assert e <= TOL[dtype], (dtype, b, d, w, s, "out vs fallback", e)
            assert e64 <= TOL[dtype], (dtype, b, d, w, s, "out vs float64", e64)
            assert es == 0.0, (dtype, b, d, w, s, "state", es)  # a shift of the inputs: exact
    print("conv ok")


def ssm_inputs(b, h, p, n, g, has_d, has_z, has_dtb, expanded, dtype, device, gen):
    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    state = torch.randn(b, h, p, n, generator=gen).to(device=device)  # the cache keeps float32 states
    x = r(b, h, p)
    Bm, Cm = r(b, g, n), r(b, g, n)
    if expanded:  # what transformers' mixer passes: per-head values expanded over head_dim / state
        dt = r(b, h, 1, scale=0.5).expand(b, h, p)
        A = (-torch.rand(h, generator=gen) * 4 - 0.1).to(device)[:, None, None].expand(h, p, n)
        D = r(h, 1).expand(h, p) if has_d else None
        dtb = r(h, 1, scale=0.5).expand(h, p) if has_dtb else None
    else:
        dt = r(b, h, p, scale=0.5)
        A = (-torch.rand(h, p, n, generator=gen) * 4 - 0.1).to(device)
        D = r(h, p) if has_d else None
        dtb = r(h, p, scale=0.5) if has_dtb else None
    z = r(b, h, p) if has_z else None
    return state, x, dt, A, Bm, Cm, D, dtb, z


def check_ssm(device: str, dtypes=(torch.float32, torch.bfloat16)) -> None:
    ref_fn = fallback(mk.SSM)
    gen = torch.Generator().manual_seed(1)
    for dtype in dtypes:
        for b, h, p, n, g, has_d, has_z, has_dtb, softplus, expanded in SSM_SHAPES:
            state, x, dt, A, Bm, Cm, D, dtb, z = ssm_inputs(b, h, p, n, g, has_d, has_z, has_dtb, expanded, dtype,
                                                            device, gen)
            s_ref, s_64 = state.clone(), state.double().cpu()

            def d64(t):
                return None if t is None else t.double().cpu()

            want = ref_fn(s_ref, x, dt, A, Bm, Cm, D, dt_bias=dtb, dt_softplus=softplus, z=z)
            want64 = ref_fn(s_64, d64(x), d64(dt), d64(A), d64(Bm), d64(Cm), d64(D), dt_bias=d64(dtb),
                            dt_softplus=softplus, z=d64(z))
            out_poison = None
            got = mk.ssm_update_triton(state, x, dt, A, Bm, Cm, D, dtb, softplus, z)
            assert got.dtype == x.dtype and got.shape == x.shape and out_poison is None
            where = (dtype, b, h, p, n, g)
            assert rel(got, want) <= TOL[dtype], (*where, "out vs fallback", rel(got, want))
            assert rel(state, s_ref) <= TOL[dtype], (*where, "state vs fallback", rel(state, s_ref))
            assert rel(got, want64) <= TOL[dtype], (*where, "out vs float64", rel(got, want64))
            # The kernel keeps the state in float32: at least as close to float64 as the fallback.
            assert rel(state, s_64) <= rel(s_ref, s_64) + 1e-6, (*where, "state vs float64")
    print("ssm ok")


def check_dispatch(device: str) -> None:
    """Installed dispatchers: CUDA tensors take the kernel, CPU tensors the original function; a
    model's decode step through them gives the fallback's logits."""
    import importlib

    names = mk.install()
    try:
        assert "transformers.models.mamba2.modeling_mamba2" in names, names
        mod = importlib.import_module("transformers.models.mamba2.modeling_mamba2")
        gen = torch.Generator().manual_seed(2)
        x, state, weight, bb = conv_inputs(2, 40, 4, 1, True, torch.float32, device, gen)
        s2 = state.clone()
        got = mod.causal_conv1d_update(x, state, weight, bb, activation="silu")
        want = fallback(mk.CONV)(x, s2, weight, bb, activation="silu")
        assert rel(got, want) <= 1e-5 and rel(state, s2) == 0.0
    finally:
        mk.uninstall()
    assert not mk.installed("transformers.models.mamba2.modeling_mamba2")
    print("dispatch ok")


CHECKS = {"conv": check_conv, "ssm": check_ssm, "dispatch": check_dispatch}


def run(device: str, which=tuple(CHECKS)) -> None:
    for name in which:
        CHECKS[name](device)


if __name__ == "__main__":
    run(sys.argv[1], tuple(sys.argv[2:]) or tuple(CHECKS))
    print("mamba2 kernel checks passed")
