"""Triton kernels for one Mamba2 decode step: the conv-state update and the SSM-state update.

Without mamba-ssm / causal-conv1d, transformers runs a Mamba2-family decode step through two
module-level pure-torch fallbacks per layer, `causal_conv1d_update` and
`mamba2_selective_state_update` (every Mamba2 modeling module has its own copy: Mamba2, Bamba,
Zamba2, FalconH1, NemotronH, GraniteMoeHybrid). They launch a dozen small kernels each (cat,
copy, conv1d, softplus, exp, expand+contiguous copies of B and C, bmm, ...), so at 1B a decode step
was 39-53 ms where Llama's is 3.5-5.2 ms (docs/benchmarks.md): the GPU waits for the host.

Here each is one Triton launch with the same signature and semantics as the fallback it replaces:

- `causal_conv1d_update(hidden_states (b, d, s), conv_state (b, d, w), weight (d, w), bias, activation)`:
  the depthwise causal conv over [conv_state, hidden_states], bias, optional SiLU; conv_state
  becomes the last w inputs, in place. Returns (b, d, s) in hidden_states' dtype.
- `selective_state_update(state (b, h, p, n), x (b, h, p), dt (b, h, p), A (h, p, n), B, C (b, g, n),
  D (h, p), z (b, h, p), dt_bias (h, p), dt_softplus)`: dt + bias, softplus, dA = exp(dt·A),
  state = state·dA + dt·B⊗x (in place), y = state·C + D·x, y·silu(z). Heads share B/C groups
  (`h // g` heads each). Any strides, including the stride-0 expansions transformers passes
  (dt, A, D and dt_bias expanded over head_dim, A over the state).

All arithmetic is float32 in registers (what mamba-ssm's kernels do). With float32 inputs the
results equal the fallbacks' to rounding (tests: ≤ 1e-5 relative). With bf16 inputs the fallbacks
round intermediate products to bf16 (dt·B, dB·x, the state before C, the conv output before the
SiLU) and these kernels do not, so the two differ by bf16 rounding, ≤ 2e-2 relative on random
inputs (tests), and the kernels are the closer of the two to a float64 evaluation.

`install()` puts a dispatcher in place of both globals in every modeling module the architecture
profiles list (`decode_kernels` modules of `spanlab.models.arch`): CUDA tensors go to the kernel,
anything else (CPU, unsupported arguments) to the function that was there, so CPU runs are
unchanged. A global that is already a real kernel (mamba-ssm / causal-conv1d installed, or a hub
kernel) is left alone. `uninstall()` restores what was there. The HF backend installs them when it
loads such a model unless `SPANLAB_KERNELS=mamba2_decode=torch`; the manifest records `decode_kernels`.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from spanlab import kernels
from spanlab.models.arch import ARCHS
from spanlab.models.hf_compat import is_torch_fallback
from spanlab.triton_support import available, interpreting, load, next_pow2

CONV = "causal_conv1d_update"
SSM = "mamba2_selective_state_update"
GLOBALS = (CONV, SSM)
# dict.fromkeys: Mamba2-Attn and the hybrids share BambaMixer's module; installed once.
MODULES = tuple(dict.fromkeys(m for p in ARCHS.values() for m in p.decode_kernels))
_ACTIVATIONS = {None: False, "silu": True, "swish": True}

# (module, global name) -> what install() replaced
_saved: dict[tuple[str, str], Any] = {}


def enabled() -> bool:
    """False when the kernel choices (spanlab.kernels, `mamba2_decode=torch`) keep transformers' functions."""
    return kernels.current().mamba2_decode != "torch"


@functools.cache
def _kernels():
    """(conv kernel, ssm kernel), jitted on first use: under TRITON_INTERPRET=1 `triton.jit` must
    run after the variable is set, so the CPU tests run the interpreter in a subprocess."""
    triton, tl = load()

    @triton.jit
    def conv_kernel(
        X, S, W, BIAS, OUT,
        sxb, sxd, sxs,
        ssb, ssd, ssw,
        swd, sww,
        sob, sod, sos,
        D,
        WIDTH: tl.constexpr, SEQ: tl.constexpr, BC: tl.constexpr, BW: tl.constexpr,
        BLOCK_D: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    ):
        b = tl.program_id(0)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        dm = d < D
        wdt = W.dtype.element_ty
        # The window [conv_state, x] as one (BLOCK_D, WIDTH + SEQ) tile, in the weight's dtype
        # first (the fallback concatenates and casts to it), then float32.
        cols = tl.arange(0, BC)
        in_state = cols < WIDTH
        in_x = (cols >= WIDTH) & (cols < WIDTH + SEQ)
        sv = tl.load(S + b * ssb + d[:, None] * ssd + cols[None, :] * ssw, mask=dm[:, None] & in_state[None, :], other=0.0)
        xv = tl.load(X + b * sxb + d[:, None] * sxd + (cols - WIDTH)[None, :] * sxs, mask=dm[:, None] & in_x[None, :],
                     other=0.0)
        window = tl.where(in_state[None, :], sv.to(wdt).to(tl.float32), xv.to(wdt).to(tl.float32))
        # The new state (the last WIDTH columns of the window) is read before anything is written.
        k = tl.arange(0, BW)
        src = k + SEQ
        km = k < WIDTH
        ns_s = tl.load(S + b * ssb + d[:, None] * ssd + src[None, :] * ssw,
                       mask=dm[:, None] & (km & (src < WIDTH))[None, :], other=0.0)
        ns_x = tl.load(X + b * sxb + d[:, None] * sxd + (src - WIDTH)[None, :] * sxs,
                       mask=dm[:, None] & (km & (src >= WIDTH))[None, :], other=0.0)
        new_state = tl.where((src < WIDTH)[None, :], ns_s.to(wdt), ns_x.to(wdt))
        if HAS_BIAS:
            bias = tl.load(BIAS + d, mask=dm, other=0.0).to(tl.float32)
        for t in tl.static_range(SEQ):
            # out_t = sum_k W[:, k] * window[:, t + 1 + k]: the weight loaded shifted onto the window.
            kk = cols - t - 1
            wmask = (kk >= 0) & (kk < WIDTH)
            wv = tl.load(W + d[:, None] * swd + kk[None, :] * sww, mask=dm[:, None] & wmask[None, :], other=0.0)
            acc = tl.sum(wv.to(tl.float32) * window, axis=1)
            if HAS_BIAS:
                acc += bias
            if SILU:
                acc = acc * tl.sigmoid(acc)
            tl.store(OUT + b * sob + d * sod + t * sos, acc.to(OUT.dtype.element_ty), mask=dm)
        tl.store(S + b * ssb + d[:, None] * ssd + k[None, :] * ssw, new_state.to(S.dtype.element_ty),
                 mask=dm[:, None] & km[None, :])

    @triton.jit
    def ssm_kernel(
        ST, X, DT, A, B, C, DD, Z, DTB, OUT,
        s_b, s_h, s_p, s_n,
        x_b, x_h, x_p,
        dt_b, dt_h, dt_p,
        a_h, a_p, a_n,
        b_b, b_g, b_n,
        c_b, c_g, c_n,
        d_h, d_p,
        z_b, z_h, z_p,
        dtb_h, dtb_p,
        o_b, o_h, o_p,
        P, N, HEADS_PER_GROUP,
        BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DTB: tl.constexpr, SOFTPLUS: tl.constexpr,
    ):
        b = tl.program_id(0)
        h = tl.program_id(1)
        g = h // HEADS_PER_GROUP
        p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
        n = tl.arange(0, BLOCK_N)
        pm = p < P
        nm = n < N
        m2 = pm[:, None] & nm[None, :]
        dt = tl.load(DT + b * dt_b + h * dt_h + p * dt_p, mask=pm, other=0.0).to(tl.float32)
        if HAS_DTB:
            dt += tl.load(DTB + h * dtb_h + p * dtb_p, mask=pm, other=0.0).to(tl.float32)
        if SOFTPLUS:
            # torch's softplus (threshold 20): linear above it, log(1 + e^x) below.
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0))))
        a = tl.load(A + h * a_h + p[:, None] * a_p + n[None, :] * a_n, mask=m2, other=0.0).to(tl.float32)
        x = tl.load(X + b * x_b + h * x_h + p * x_p, mask=pm, other=0.0).to(tl.float32)
        bv = tl.load(B + b * b_b + g * b_g + n * b_n, mask=nm, other=0.0).to(tl.float32)
        cv = tl.load(C + b * c_b + g * c_g + n * c_n, mask=nm, other=0.0).to(tl.float32)
        sptr = ST + b * s_b + h * s_h + p[:, None] * s_p + n[None, :] * s_n
        state = tl.load(sptr, mask=m2, other=0.0).to(tl.float32)
        state = state * tl.exp(dt[:, None] * a) + (dt * x)[:, None] * bv[None, :]
        tl.store(sptr, state.to(ST.dtype.element_ty), mask=m2)
        y = tl.sum(state * cv[None, :], axis=1)
        if HAS_D:
            y += x * tl.load(DD + h * d_h + p * d_p, mask=pm, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(Z + b * z_b + h * z_h + p * z_p, mask=pm, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(OUT + b * o_b + h * o_h + p * o_p, y.to(OUT.dtype.element_ty), mask=pm)

    return conv_kernel, ssm_kernel


def conv_update_triton(hidden_states, conv_state, weight, bias=None, activation=None):
    """`causal_conv1d_update` as one Triton launch (see the module doc); conv_state is updated in place."""
    import torch

    b, d, s = hidden_states.shape
    w = weight.shape[-1]
    out = torch.empty((b, d, s), device=hidden_states.device, dtype=hidden_states.dtype)
    conv_kernel, _ = _kernels()
    block_d = 64 if d >= 64 else next_pow2(d)
    grid = (b, -(-d // block_d))
    conv_kernel[grid](
        hidden_states, conv_state, weight, bias if bias is not None else weight, out,
        *hidden_states.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
        d, WIDTH=w, SEQ=s, BC=next_pow2(w + s), BW=next_pow2(w), BLOCK_D=block_d,
        HAS_BIAS=bias is not None, SILU=_ACTIVATIONS[activation],
    )
    return out


def ssm_update_triton(state, hidden_states, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, z=None):
    """`mamba2_selective_state_update` as one Triton launch (see the module doc); state is updated in place."""
    import torch

    b, h, p = hidden_states.shape
    g, n = B.shape[1], B.shape[2]
    out = torch.empty((b, h, p), device=hidden_states.device, dtype=hidden_states.dtype)
    _, ssm_kernel = _kernels()
    block_n = next_pow2(n)
    # Keep a (BLOCK_P, BLOCK_N) float32 tile near 4K elements: registers, not local memory.
    block_p = max(1, min(next_pow2(p), 4096 // block_n))
    dummy = hidden_states
    Dv = D if D is not None else dummy
    zv = z if z is not None else dummy
    dtb = dt_bias if dt_bias is not None else dummy

    def s2(t, present):
        return (*t.stride(),) if present else (0, 0)

    grid = (b, h, -(-p // block_p))
    ssm_kernel[grid](
        state, hidden_states, dt, A, B, C, Dv, zv, dtb, out,
        *state.stride(), *hidden_states.stride(), *dt.stride(), *A.stride(), *B.stride(), *C.stride(),
        *s2(Dv, D is not None), *((*zv.stride(),) if z is not None else (0, 0, 0)), *s2(dtb, dt_bias is not None),
        *out.stride(),
        p, n, h // g,
        BLOCK_P=block_p, BLOCK_N=block_n,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DTB=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
    )
    return out


def _conv_ok(hidden_states, conv_state, weight, bias, activation) -> bool:
    return (activation in _ACTIVATIONS and hidden_states.dim() == 3 and conv_state.dim() == 3 and weight.dim() == 2
            and conv_state.shape[-1] == weight.shape[-1] and hidden_states.shape[-1] <= 16
            and conv_state.shape[:2] == hidden_states.shape[:2] and weight.shape[0] == hidden_states.shape[1]
            and (bias is None or bias.dim() == 1))


def _ssm_ok(state, x, dt, A, B, C, D, dt_bias, z) -> bool:
    if state.dim() != 4 or x.dim() != 3 or dt.dim() != 3 or A.dim() != 3 or B.dim() != 3 or C.dim() != 3:
        return False  # mamba-ssm also takes un-expanded (b, h) dt / (h,) A; transformers never passes those
    b, h, p = x.shape
    n = B.shape[-1]
    return (tuple(state.shape) == (b, h, p, n) and tuple(dt.shape) == (b, h, p) and tuple(A.shape) == (h, p, n)
            and B.shape == C.shape and B.shape[0] == b and h % B.shape[1] == 0 and n <= 256
            and (D is None or tuple(D.shape) == (h, p)) and (dt_bias is None or tuple(dt_bias.shape) == (h, p))
            and (z is None or tuple(z.shape) == (b, h, p)))


def on_device(*tensors) -> bool:
    """Where the Mamba2 kernels (these and `mamba2_prefill_kernels`') run: CUDA tensors, or CPU ones
    under Triton's interpreter (the CPU tests, e.g. tests/models/test_kernel_bounds.py); None
    entries are absent arguments."""
    ts = [t for t in tensors if t is not None]
    if all(getattr(t, "is_cuda", False) for t in ts):
        return True
    return all(getattr(getattr(t, "device", None), "type", None) == "cpu" for t in ts) and interpreting()


def make_conv_update(fallback):
    """A `causal_conv1d_update` that runs the kernel on CUDA tensors and `fallback` otherwise."""

    @functools.wraps(fallback)
    def causal_conv1d_update(hidden_states, conv_state, weight, bias=None, activation=None):
        if on_device(hidden_states, conv_state, weight, bias) and available() and _conv_ok(
                hidden_states, conv_state, weight, bias, activation):
            return conv_update_triton(hidden_states, conv_state, weight, bias, activation)
        return fallback(hidden_states, conv_state, weight, bias, activation=activation)

    causal_conv1d_update._spanlab_fallback = fallback
    return causal_conv1d_update


def make_ssm_update(fallback):
    """A `mamba2_selective_state_update` that runs the kernel on CUDA tensors and `fallback` otherwise."""

    @functools.wraps(fallback)
    def mamba2_selective_state_update(state, hidden_states, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False,
                                      z=None, **kwargs):
        # Other keywords (mamba-ssm's state_batch_indices, ...) are ignored by the fallback too.
        if on_device(state, hidden_states, dt, A, B, C, D, dt_bias, z) and available() and _ssm_ok(
                state, hidden_states, dt, A, B, C, D, dt_bias, z):
            return ssm_update_triton(state, hidden_states, dt, A, B, C, D, dt_bias, dt_softplus, z)
        return fallback(state, hidden_states, dt, A, B, C, D, dt_bias=dt_bias, dt_softplus=dt_softplus, z=z, **kwargs)

    mamba2_selective_state_update._spanlab_fallback = fallback
    return mamba2_selective_state_update


_MAKERS = {CONV: make_conv_update, SSM: make_ssm_update}


def installed_here(fn: Any) -> bool:
    return hasattr(fn, "_spanlab_fallback")


def install() -> list[str]:
    """Put the dispatchers in place of both globals in every Mamba2-family modeling module that
    has transformers' torch fallbacks; returns the modules where both now run them. Idempotent."""
    done = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        ours = 0
        for glob in GLOBALS:
            cur = getattr(mod, glob, None)
            if cur is not None and installed_here(cur):
                ours += 1
                continue
            if cur is None or not is_torch_fallback(cur, glob):
                continue
            _saved[(name, glob)] = cur
            setattr(mod, glob, _MAKERS[glob](cur))
            ours += 1
        if ours == len(GLOBALS):
            done.append(name)
    return done


def uninstall() -> None:
    """Put back what `install()` replaced."""
    for (name, glob), fn in list(_saved.items()):
        mod = importlib.import_module(name)
        if installed_here(getattr(mod, glob, None)):
            setattr(mod, glob, fn)
        del _saved[(name, glob)]


def installed(module: str) -> bool:
    mod = importlib.import_module(module)
    return all(installed_here(getattr(mod, g, None)) for g in GLOBALS)
