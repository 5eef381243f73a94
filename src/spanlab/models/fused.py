"""Fused RMSNorm, SwiGLU activation and rotary embedding (Triton) for Llama-family inference on CUDA.

In transformers' eager code each of these is a chain of elementwise passes over the activations of
the whole batch, each reading and writing them in full: RMSNorm upcasts to float32, squares,
averages, multiplies, downcasts and scales (about 18 bytes moved per element for 4 needed); the
MLP's `act_fn(gate) * up` is two passes; rotary embedding is five (`q * cos`, a negated half, a
concatenation, `* sin`, the sum). In a prefill of 64 x 4K tokens through a 1B Llama that traffic
is a sizeable share of the forward (docs/benchmarks.md). Each kernel here reads its inputs once
and writes its output once.

What they compute, against the eager code they replace:

- `rotary`: the same bits. Every product of two bf16/fp16 values is exact in float32, and the
  kernel rounds where eager rounds (each product, then the sum); it is compiled without FMA
  contraction, which would otherwise fold a product into the sum unrounded (seen on an H100).
- `silu_mul`: the same bits on CUDA (checked on an H100): float32 `x / (1 + exp(-x))` with CUDA's
  expf (libdevice) and a correctly rounded division, rounded to the input dtype, times `up`.
- `rms_norm`: float32 mean of squares summed in another order than torch's reduction, so the
  normalised value can differ in its last bit now and then (8 elements in a million on an H100),
  as a different GEMM algorithm would; everything after the mean is done as eager does it.

`install(model)` patches only modules whose code is exactly the Llama formula each kernel computes
(compared by source text, so a transformers release that changes a formula turns the patch off
instead of silently computing something else), and the patched code runs the kernels only on CUDA
half-precision tensors outside autograd; anything else goes to the original code. The kernel choice
`fused=off` (spanlab.kernels) turns it off.
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from typing import Any

from spanlab import kernels
from spanlab.models.hf_compat import kernel_closure

# Models with the kernels installed, and whether their one-token (decode) steps use them: the rotary
# dispatcher (a module global, shared by every model of a class) runs the kernel only while one is.
_installed: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def enabled() -> bool:
    return kernels.current().fused != "off"


@functools.cache
def _kernels():
    """(triton, rms kernel, silu-mul kernel, rotary kernel), imported on first use: Triton is optional."""
    import triton

    from spanlab.models import _fused_kernels as K

    return triton, K.rms_kernel, K.silu_mul_kernel, K.rope_kernel


def _libdevice() -> bool:
    from spanlab.triton_support import interpreting

    return not interpreting()


def _exact() -> dict:
    """Launch options that keep eager's roundings: no contraction of a product and a sum into one
    FMA. With it, sm90 code computes rotary's `q * cos + rot * sin` as `fma.rn.bf16` (the product
    unrounded: elements differed from eager on an H100) and RMSNorm's sum of squares without
    rounding the squares, as torch's separate `pow` does. (Not for silu: its exp is libdevice's,
    compiled as CUDA's expf is, and matched torch bit for bit with the default.)"""
    from spanlab.triton_support import interpreting

    return {} if interpreting() else {"enable_fp_fusion": False}


def rms_norm(x, weight, eps: float):
    """Llama's RMSNorm of `x` (..., H) with `weight` (H,) of x's dtype; same dtype out."""
    import torch

    triton, rms_kernel, _, _ = _kernels()
    H = x.shape[-1]
    x2 = x.reshape(-1, H)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(H)
    rms_kernel[(x2.shape[0],)](x2, weight.contiguous(), y, x2.stride(0), y.stride(0), H, 1.0 / H, eps, BLOCK=block, LIBDEVICE=_libdevice(), **_exact(),
                               num_warps=max(1, min(16, block // 256)))
    return y.view(x.shape)


def silu_mul(gate, up):
    """silu(gate) * up, rounded as eager rounds (after the silu and after the product)."""
    import torch

    _, _, silu_mul_kernel, _ = _kernels()
    gate = gate.contiguous()
    up = up.contiguous()
    y = torch.empty_like(gate)
    n = gate.numel()
    block = 2048
    silu_mul_kernel[(-(-n // block),)](gate, up, y, n, BLOCK=block, LIBDEVICE=_libdevice(), num_warps=8)
    return y


def _rope_one(x, cos, sin):
    import torch

    triton, _, _, rope_kernel = _kernels()
    b, nh, s, d = x.shape
    # Out in (b, s, heads, d) memory, viewed as (b, heads, s, d): the layout eager's elementwise
    # ops give a transposed projection, which the attention reads without copies.
    out = torch.empty(b, s, nh, d, dtype=x.dtype, device=x.device).transpose(1, 2)
    bh = min(16, triton.next_power_of_2(nh))
    rope_kernel[(b * s, -(-nh // bh))](
        x, cos, sin, out, s, *x.stride(), *cos.stride(), *sin.stride(), out.stride(0), out.stride(1), out.stride(2),
        nh, HALF=d // 2, BH=bh, BD=triton.next_power_of_2(d // 2), num_warps=4, **_exact())
    return out


def rotary(q, k, cos, sin):
    """`apply_rotary_pos_emb(q, k, cos, sin)` of transformers' Llama: q (b, h, s, d), k (b, kvh, s, d),
    cos/sin (b, s, d)."""
    return _rope_one(q, cos, sin), _rope_one(k, cos, sin)


def _half_cuda(*tensors) -> bool:
    import torch

    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False  # the kernels have no backward
    t0 = tensors[0]
    return t0.is_cuda and t0.dtype in (torch.float16, torch.bfloat16) and all(t.dtype == t0.dtype for t in tensors)


# -- installing ----------------------------------------------------------------------------------
def _same_code(a, b) -> bool:
    try:
        return inspect.getsource(a) == inspect.getsource(b)
    except (OSError, TypeError):
        return False


def _many_tokens(x, decode: bool) -> bool:
    # A decode step (one token per row) launched from Python pays Triton's launch cost (tens of µs,
    # more than the torch kernels it replaces take to launch): fused there only inside a CUDA graph.
    return decode or (x.dim() >= 3 and x.shape[-2] > 1)


def _rms_forward(module, orig, decode, hidden_states):
    if (_half_cuda(hidden_states, module.weight) and hidden_states.shape[-1] == module.weight.shape[0]
            and _many_tokens(hidden_states, decode)):
        return rms_norm(hidden_states, module.weight, module.variance_epsilon)
    return orig(hidden_states)


def _mlp_forward(module, orig, decode, x):
    if _half_cuda(x) and _many_tokens(x, decode):
        return module.down_proj(silu_mul(module.gate_proj(x), module.up_proj(x)))
    return orig(x)


def _rope_dispatch(orig):
    @functools.wraps(orig)
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        unsqueeze = args[0] if args else kwargs.get("unsqueeze_dim", 1)
        if (unsqueeze == 1 and not kwargs.keys() - {"unsqueeze_dim"} and len(args) <= 1 and q.dim() == 4 and k.dim() == 4
                and cos.dim() == 3 and sin.shape == cos.shape and cos.shape[-1] == q.shape[-1] == k.shape[-1]
                and q.shape[-1] % 2 == 0 and cos.shape[0] in (1, q.shape[0]) and cos.shape[1] == q.shape[2] == k.shape[2]
                and len(_installed) and (q.shape[2] > 1 or any(_installed.values())) and _half_cuda(q, k, cos, sin)):
            return rotary(q, k, cos.expand(q.shape[0], -1, -1), sin.expand(q.shape[0], -1, -1))
        return orig(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb._spanlab_fused = True
    return apply_rotary_pos_emb


def install(model: Any, *, decode: bool = False) -> list[str]:
    """Patch the model's RMSNorm and MLP modules and its modeling module's rotary function where their
    code is Llama's; returns what was fused ("rms_norm", "silu_mul", "rotary"). Forwards of one
    token per row (decode steps) keep the eager code unless `decode` (they run as CUDA graphs)."""
    from transformers.models.llama import modeling_llama as L

    from spanlab.models.arch import profile_for

    if not profile_for(model).fused_kernels:
        return []
    done = set()
    act = getattr(getattr(model, "config", None), "hidden_act", None)
    for module in model.modules():
        cls = type(module)
        fwd = module.__dict__.get("forward")
        if fwd is not None:  # already patched, by us (renew it) or someone else (leave it)
            if isinstance(fwd, functools.partial) and fwd.func in (_rms_forward, _mlp_forward):
                module.forward = functools.partial(fwd.func, module, fwd.args[1], decode)
                done.add("rms_norm" if fwd.func is _rms_forward else "silu_mul")
            continue
        if hasattr(module, "variance_epsilon") and _same_code(cls.forward, L.LlamaRMSNorm.forward):
            module.forward = functools.partial(_rms_forward, module, module.forward, decode)
            done.add("rms_norm")
        elif act == "silu" and hasattr(module, "gate_proj") and _same_code(cls.forward, L.LlamaMLP.forward):
            module.forward = functools.partial(_mlp_forward, module, module.forward, decode)
            done.add("silu_mul")
    modeling = sys.modules.get(type(model).__module__)
    fn = getattr(modeling, "apply_rotary_pos_emb", None)
    # transformers >= 5.25 wraps the function in a `kernels` Func module: compare what it calls.
    plain = kernel_closure(fn)
    if fn is not None and (getattr(fn, "_spanlab_fused", False) or _same_code(plain, kernel_closure(L.apply_rotary_pos_emb))):
        # A module global: the attention looks it up at call time. The dispatcher computes the same
        # bits as the original and falls back to it off CUDA, so other models in the process are unaffected.
        if not getattr(fn, "_spanlab_fused", False):
            modeling.apply_rotary_pos_emb = _rope_dispatch(plain)
        done.add("rotary")
    if done:
        _installed[model] = decode
    return sorted(done)


def uninstall(model: Any) -> None:
    """Undo `install` for this model (the rotary dispatcher stays in place, off unless another model
    has the kernels installed)."""
    _installed.pop(model, None)
    for module in model.modules():
        fwd = module.__dict__.get("forward")
        if isinstance(fwd, functools.partial) and fwd.func in (_rms_forward, _mlp_forward):
            del module.forward
