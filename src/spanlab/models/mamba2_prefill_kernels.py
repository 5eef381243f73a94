"""Triton kernels for the glue of a Mamba2-family prefill: the causal conv1d + SiLU over xBC, and the gated RMSNorm.

Without mamba-ssm / causal-conv1d, every Mamba2-family mixer (Mamba2, Bamba, Zamba2, FalconH1,
NemotronH, GraniteMoeHybrid in transformers 5.25, and Mamba2-Attn through BambaMixer) runs two
memory-bound stretches of torch ops around its SSD scan, each a chain of whole passes over
(tokens, 4096..4352) activations:

- the depthwise causal conv over the xBC channels, `causal_conv1d_forward(conv1d, x (b, d, L), cache, ...)`,
  a module global that updates the conv state in the cache and calls `causal_conv1d_fn`:
  `F.conv1d` on the transposed (channel-first) view of the projection (which the conv may first
  copy to a contiguous one), then SiLU as another pass; with a cache that holds a previous state (every chunk after the
  first of a chunked prefill) the cache first concatenates that state in front of the whole
  chunk, one more copy. The mixer then multiplies by the padding mask (one more pass, in padded
  batches), and the scan reads the result channel-first.
- the gated norm `norm(y, gate)` = RMSNorm(y · silu(gate)) per group of channels, in float32:
  nine elementwise/reduction passes and a cast back to the model dtype by the mixer.

Bytes per element of one layer (the fewest each kernel must move, against transformers'):

| pass (0.95B Mamba2, 16K tokens)                  | elements   | transformers          | kernel                 |
|--------------------------------------------------|------------|-----------------------|------------------------|
| conv + SiLU, bf16 xBC (4352 channels)             | 71.3 M     | 8-12 B (+4 with a mask, +4 after a stored state) | 4 B (read 2, write 2) |
| gated norm, float32 y + bf16 gate -> bf16 (4096)  | 67.1 M     | ~60 B                 | 8 B (read 4 + 2, write 2) |

That is about 0.6-0.9 + 4.0 GB against 0.29 + 0.54 GB per layer, ≈1.5 ms against ≈0.28 ms at an
H100's ~3 TB/s copy rate (estimates from the counts above, not measurements; benchmarks/ssd_speed.py
`--parts glue` measures them).

The kernels (float32 arithmetic inside, one read of each input and one write of each output):

- `conv_prefill_triton(x (b, d, L), weight (d, w), bias, activation, prev, mask)`: out[t] =
  act(bias + sum_k w[k] · x[t - w + 1 + k]) · mask[t], with positions before the chunk read from
  `prev` (the conv state, (b, d, w): its last w - 1 columns) or zero. Inputs in any strides; the
  output is written channel-last ((b, L, d) memory, returned as its (b, d, L) transpose), so the
  mixer's `.transpose(1, 2)` gives a contiguous (b, L, d) tensor whose x / B / C splits are the
  row-major views the scan reads. Transformers rounds the conv output to the weight's dtype before
  the SiLU; the kernel does not (bf16: ≤ 2e-2 relative between the two, the kernel the closer to float64).
- `gated_norm_triton(y, gate, weight, eps, group_size, ...)`: both formulas transformers has.
  Mamba2's (`Mamba2RMSNormGated`, also Bamba's, Zamba2's, NemotronH's and GraniteMoeHybrid's, the
  same code): h = y · silu(g), h / rms(h) per group, rounded to y's dtype, times the weight.
  FalconH1's (`FalconH1RMSNormGated`): the same with the weight applied in float32 and, with
  `norm_before_gate`, silu(g) after the norm instead of before. Recognised by the hash of the
  class's `forward` code (ast-normalised): a transformers release that changes a formula turns
  the kernel off for that class instead of computing the old formula.

Installing (the HF backend, for CUDA models unless `SPANLAB_KERNELS=mamba2_prefill=torch`):

- `install_globals()` puts a dispatcher in place of `causal_conv1d_forward` in every modeling module
  the architecture profiles list in `decode_kernels`, where it and `causal_conv1d_fn` are still
  transformers' torch code (a causal-conv1d or hub kernel is never displaced). Prefill calls on
  CUDA tensors outside autograd run the kernel; decode steps (one token after a stored state,
  where the decode kernels of `spanlab.models.mamba2_kernels` run), autograd, packed sequences
  (`seq_idx` / `cu_seqlens`), a cache recording its past, and anything else go to the function
  that was there. With a cache the kernel reads the stored state as left context, and the cache
  then keeps only the chunk's last w inputs (no concatenation of the whole chunk).
- `install(model)` patches, per module instance, every gated norm whose code is a known formula,
  and every mixer whose forward has the known shape (checked on its code: the padding mask is used
  exactly at the input and after the conv, the norm's output goes straight to `out_proj` cast to
  the input dtype). Inside such a mixer's forward (no autograd) the patched mixer applies the
  input mask itself and hands the second one to the conv kernel (or, where the kernel does not
  run, applies it after transformers' conv: the same op), and the norm writes the model dtype
  directly instead of float32 for the mixer to cast (the same values: one rounding of the float32
  result either way). Outside a mixer the norm returns what transformers' does.

CPU tensors keep transformers' code, except under Triton's interpreter (TRITON_INTERPRET=1),
where the kernels run on CPU tensors too: that is how the CPU tests check them. (The interpreter
of triton 3.9 truncates float32 -> bf16 casts where the GPU rounds to nearest, so bf16 results
there are about twice as far from float64 as on the GPU; the tests allow for it.)
"""

from __future__ import annotations

import ast
import contextvars
import dataclasses
import functools
import hashlib
import importlib
import inspect
import sys
import textwrap
from typing import Any

from spanlab import kernels
from spanlab.models.arch import ARCHS
from spanlab.models.hf_compat import is_torch_fallback

# One device rule for both Mamba2 kernel modules: it lives with the decode kernels.
from spanlab.models.mamba2_kernels import on_device
from spanlab.triton_support import available, load, next_pow2

CONV_FORWARD = "causal_conv1d_forward"
CONV_FN = "causal_conv1d_fn"
MASK_FN = "apply_mask_to_padding_states"
# The modules whose mixers the decode kernels serve are the ones whose prefill glue this replaces.
MODULES = tuple(dict.fromkeys(m for p in ARCHS.values() for m in p.decode_kernels))
_ACTIVATIONS = {None: False, "silu": True, "swish": True}

# ast-normalised `forward` of the gated-norm classes whose formula `gated_norm_triton` computes
# (sha256, first 16 hex digits) -> formula. Reviewed against transformers 5.25; a class with other
# code keeps its own forward (tests/models/test_mamba2_prefill_kernels.py lists the 5.25 classes).
NORM_FORMULAS = {
    "e930594abdf99541": "mamba2",  # Mamba2/Bamba/Zamba2/NemotronH/GraniteMoeHybrid RMSNormGated
    "873a05ece6ae6c87": "falcon_h1",  # FalconH1RMSNormGated (n_groups, norm_before_gate)
}

# module name -> the `causal_conv1d_forward` install_globals() replaced
_saved: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class _Mixer:
    """What the running mixer forward handed its conv and norm (set by `_mixer_forward`)."""

    conv1d: Any
    norm: Any
    dtype: Any  # the mixer casts the norm's output to this (None: not known to)
    mask: Any  # the padding mask the conv must apply (None: the mixer applies its own, or none)


_CURRENT: contextvars.ContextVar[_Mixer | None] = contextvars.ContextVar("spanlab_mamba2_mixer", default=None)


def enabled() -> bool:
    """False when the kernel choices (spanlab.kernels, `mamba2_prefill=torch`) keep transformers' code."""
    return kernels.current().mamba2_prefill != "torch"


@functools.cache
def _kernels():
    """(conv kernel, norm kernel), jitted on first use: under TRITON_INTERPRET=1 `triton.jit` must
    run after the variable is set, so the CPU tests run the interpreter in a subprocess."""
    triton, tl = load()

    @triton.jit
    def conv_kernel(
        X, PREV, W, BIAS, MASK, OUT,
        sxb, sxd, sxl,
        spb, spd, spw,
        swd, sww,
        smb, sml,
        sob, sod, sol,
        D, L,
        WIDTH: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, RB: tl.constexpr,
        HAS_PREV: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SILU: tl.constexpr,
    ):
        # One (BLOCK_L positions, BLOCK_D channels) tile of one row. The WIDTH shifted loads of
        # the input overlap: after the first, they come from cache, so memory sees one read.
        b = tl.program_id(2).to(tl.int64)
        t = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        tm = t < L
        dm = d < D
        wdt = W.dtype.element_ty
        odt = OUT.dtype.element_ty
        acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(BIAS + d, mask=dm, other=0.0).to(tl.float32)
            acc += bias[None, :]
        for k in tl.static_range(WIDTH):
            pos = t - (WIDTH - 1 - k)
            wk = tl.load(W + d * swd + k * sww, mask=dm, other=0.0).to(tl.float32)
            inx = (pos >= 0) & (pos < L)
            # transformers casts the input to the weight's dtype before the conv; so does this
            xv = tl.load(X + b * sxb + pos[:, None] * sxl + d[None, :] * sxd, mask=inx[:, None] & dm[None, :],
                         other=0.0).to(wdt).to(tl.float32)
            acc += xv * wk[None, :]
        if SILU:
            acc = acc * tl.sigmoid(acc)
        if HAS_MASK:
            acc = acc * tl.load(MASK + b * smb + t * sml, mask=tm, other=0).to(tl.float32)[:, None]
        keep = tm
        if HAS_PREV:
            keep = keep & (t >= WIDTH - 1)  # the first WIDTH - 1 positions are written below
        tl.store(OUT + b * sob + t[:, None] * sol + d[None, :] * sod, acc.to(odt), mask=keep[:, None] & dm[None, :])
        if HAS_PREV:
            if tl.program_id(0) == 0:
                # The positions whose window reaches before the chunk, into the stored state (its
                # last WIDTH - 1 columns): a small tile, in the first program of each row only,
                # so the other programs keep their plain vectorised loads.
                r = tl.arange(0, RB)
                rm = (r < WIDTH - 1) & (r < L)
                acc2 = tl.zeros((RB, BLOCK_D), dtype=tl.float32)
                if HAS_BIAS:
                    acc2 += bias[None, :]
                for k in tl.static_range(WIDTH):
                    p2 = r - (WIDTH - 1 - k)
                    w2 = tl.load(W + d * swd + k * sww, mask=dm, other=0.0).to(tl.float32)
                    x2 = tl.load(X + b * sxb + p2[:, None] * sxl + d[None, :] * sxd,
                                 mask=(rm & (p2 >= 0))[:, None] & dm[None, :], other=0.0).to(wdt).to(tl.float32)
                    q2 = tl.load(PREV + b * spb + (p2 + WIDTH)[:, None] * spw + d[None, :] * spd,
                                 mask=(rm & (p2 < 0))[:, None] & dm[None, :], other=0.0).to(wdt).to(tl.float32)
                    acc2 += (x2 + q2) * w2[None, :]  # the two masks are disjoint: the sum selects
                if SILU:
                    acc2 = acc2 * tl.sigmoid(acc2)
                if HAS_MASK:
                    acc2 = acc2 * tl.load(MASK + b * smb + r * sml, mask=rm, other=0).to(tl.float32)[:, None]
                tl.store(OUT + b * sob + r[:, None] * sol + d[None, :] * sod, acc2.to(odt),
                         mask=rm[:, None] & dm[None, :])

    @triton.jit
    def norm_kernel(
        Y, G, W, OUT,
        syb, syl, sgb, sgl, sob, sol,
        L, GS, inv_gs, eps,
        BLOCK: tl.constexpr, GATE_FIRST: tl.constexpr, ROUND_NORMED: tl.constexpr,
    ):
        # One group of one row (token): y and gate read once, the output written once.
        row = tl.program_id(0).to(tl.int64)
        b = row // L
        r = row % L
        off = tl.arange(0, BLOCK)
        m = off < GS
        cols = tl.program_id(1) * GS + off
        y = tl.load(Y + b * syb + r * syl + cols, mask=m, other=0.0).to(tl.float32)
        g = tl.load(G + b * sgb + r * sgl + cols, mask=m, other=0.0).to(tl.float32)
        sg = g * tl.sigmoid(g)
        if GATE_FIRST:
            h = y * sg
        else:
            h = y
        var = tl.sum(h * h, axis=0) * inv_gs
        n = h * tl.math.rsqrt(var + eps)
        if ROUND_NORMED:  # Mamba2's `hidden_states.to(input_dtype)` before the weight
            n = n.to(Y.dtype.element_ty).to(tl.float32)
        o = tl.load(W + cols, mask=m, other=0.0).to(tl.float32) * n
        if not GATE_FIRST:  # FalconH1 with norm_before_gate: the gate after the norm
            o = o * sg
        tl.store(OUT + b * sob + r * sol + cols, o.to(OUT.dtype.element_ty), mask=m)

    return conv_kernel, norm_kernel


# -- the kernels' Python entry points ------------------------------------------------------------
def conv_prefill_triton(x, weight, bias=None, activation=None, prev=None, mask=None, *, out=None, block_l: int = 64,
                        block_d: int = 128, num_warps: int = 8):
    """The causal depthwise conv of a prefill chunk (see the module doc): x (b, d, L), weight (d, w),
    bias (d,) or None, activation None / "silu" / "swish", prev (b, d, w) stored state or None,
    mask (b, L) or None. Returns (b, d, L) in x's dtype (prev's and x's promoted), channel-last in
    memory; or writes `out` (b, d, L), any strides (tests poison it)."""
    import torch

    b, d, L = x.shape
    w = weight.shape[-1]
    if out is None:
        dtype = x.dtype if prev is None else torch.promote_types(prev.dtype, x.dtype)
        out = torch.empty((b, L, d), device=x.device, dtype=dtype).transpose(1, 2)
    conv_kernel, _ = _kernels()
    bd = max(16, min(block_d, next_pow2(d)))
    bl = max(16, min(block_l, next_pow2(L)))
    dummy = x
    p = prev if prev is not None else dummy
    mk = mask if mask is not None else dummy
    grid = (-(-L // bl), -(-d // bd), b)
    conv_kernel[grid](
        x, p, weight, bias if bias is not None else weight, mk, out,
        *x.stride(), *(prev.stride() if prev is not None else (0, 0, 0)), *weight.stride(),
        *(mask.stride() if mask is not None else (0, 0)), *out.stride(),
        d, L, WIDTH=w, BLOCK_L=bl, BLOCK_D=bd, RB=max(2, next_pow2(w - 1)),
        HAS_PREV=prev is not None, HAS_BIAS=bias is not None, HAS_MASK=mask is not None,
        SILU=_ACTIVATIONS[activation], num_warps=num_warps,
    )
    return out


def gated_norm_triton(y, gate, weight, eps: float, group_size: int, *, formula: str = "mamba2",
                      norm_before_gate: bool = False, out_dtype=None, out=None):
    """The gated RMSNorm of `formula` ("mamba2" or "falcon_h1", see the module doc) over the last
    dimension of y (b, L, D) or (rows, D) with gate of y's shape (last dimension dense), weight (D,),
    groups of `group_size` channels. `out_dtype`: what to write (default: the dtype transformers'
    code returns); or `out`, contiguous, to write into (tests poison it)."""
    import torch

    D = y.shape[-1]
    if formula == "mamba2":
        natural = torch.promote_types(weight.dtype, y.dtype)
        gate_first, round_normed = True, y.dtype != torch.float32
    else:
        natural = y.dtype
        gate_first, round_normed = not norm_before_gate, False
    if out is None:
        out = torch.empty(y.shape, device=y.device, dtype=out_dtype or natural)
    if y.dim() == 2:
        y3, g3, o3 = y[None], gate[None], out[None]
    else:
        y3, g3, o3 = y, gate, out
    b, L = y3.shape[0], y3.shape[1]
    _, norm_kernel = _kernels()
    block = next_pow2(group_size)
    norm_kernel[(b * L, D // group_size)](
        y3, g3, weight, o3, y3.stride(0), y3.stride(1), g3.stride(0), g3.stride(1), o3.stride(0), o3.stride(1),
        L, group_size, 1.0 / group_size, float(eps),
        BLOCK=block, GATE_FIRST=gate_first, ROUND_NORMED=round_normed, num_warps=max(1, min(16, block // 256)),
    )
    return out


# -- dispatch ------------------------------------------------------------------------------------
def _on_device(*tensors) -> bool:
    """The decode kernels' device rule (`mamba2_kernels.on_device`), and none of the tensors
    needed by autograd."""
    import torch

    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False  # the kernels have no backward
    return on_device(*tensors)


_FLOATS = ("float32", "bfloat16", "float16")


def _float(*tensors) -> bool:
    return all(t is None or str(t.dtype).removeprefix("torch.") in _FLOATS for t in tensors)


def _conv_prefill(conv1d, x, cache, layer_idx, activation, state_idx, mask):
    """The kernel's run of `causal_conv1d_forward`, or None where the fallback must run."""
    if x.dim() != 3 or activation not in _ACTIVATIONS or conv1d.weight.dim() != 3 or conv1d.weight.shape[1] != 1:
        return None
    b, d, L = x.shape
    w = conv1d.weight.shape[-1]
    weight = conv1d.weight[:, 0]
    bias = conv1d.bias
    if weight.shape[0] != d or L == 0 or (bias is not None and tuple(bias.shape) != (d,)):
        return None
    if mask is not None and (mask.dim() != 2 or tuple(mask.shape) != (b, L) or mask.device != x.device):
        return None
    prev = None
    if cache is not None:
        try:
            if cache.is_recording_past(layer_idx):
                return None  # the cache keeps every input of the chunk: its own code does that
            prev = cache.get_conv_state(layer_idx, state_idx=state_idx)
        except (AttributeError, ValueError, IndexError, TypeError):
            return None
        if prev is not None and (L == 1 or tuple(prev.shape) != (b, d, w)):
            return None  # a decode step (the decode kernel's), or a state of another shape
    if not (_on_device(x, weight, bias, prev, mask) and _float(x, weight, bias, prev)):
        return None
    out = conv_prefill_triton(x, weight, bias, activation, prev, mask)
    if cache is not None:
        # After the kernel (it read `prev`, which this updates in place): the cache keeps the last
        # w inputs. Handing it only those skips its concatenation of the stored state with the
        # whole chunk; its token count must still grow by L (state 0 counts the tokens).
        tail = x[..., -w:] if L > w else x
        cache.update_conv_state(tail, layer_idx, state_idx=state_idx, conv_kernel_size=w)
        if tail.shape[-1] != L and state_idx == 0:
            cache.layers[layer_idx].cumulative_length_linear.add_(L - tail.shape[-1])
    return out


def make_conv_forward(fallback, module_name: str):
    """A `causal_conv1d_forward` that runs the prefill kernel where it can and `fallback` otherwise."""

    def causal_conv1d_forward(conv1d, hidden_states, cache=None, layer_idx=0, activation=None, state_idx=0, **kwargs):
        ctx = _CURRENT.get()
        mask = ctx.mask if ctx is not None and ctx.conv1d is conv1d else None
        out = None
        if available() and kwargs.get("cu_seqlens") is None and kwargs.get("seq_idx") is None and (
                cache is None or _plain_cache_layer(cache, layer_idx)):
            out = _conv_prefill(conv1d, hidden_states, cache, layer_idx, activation, state_idx, mask)
        if out is None:
            out = fallback(conv1d, hidden_states, cache, layer_idx, activation=activation, state_idx=state_idx,
                           **kwargs)
            if mask is not None:  # the mixer left its second mask to this function: the mixer's op
                apply_mask = getattr(sys.modules[module_name], MASK_FN)
                out = apply_mask(out.transpose(1, 2), mask).transpose(1, 2)
        return out

    causal_conv1d_forward._spanlab_fallback = fallback
    return causal_conv1d_forward


def _plain_cache_layer(cache, layer_idx) -> bool:
    """Whether the cache layer is transformers' linear-attention layer, whose conv-state update the
    kernel's path reproduces (tests compare the states and token counts with transformers')."""
    try:
        from transformers.cache_utils import LinearAttentionLayer
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    if layers is None or not 0 <= layer_idx < len(layers):
        return False
    layer = layers[layer_idx]
    return (isinstance(layer, LinearAttentionLayer)
            and type(layer).update_conv_state is LinearAttentionLayer.update_conv_state
            and hasattr(layer, "cumulative_length_linear"))


def installed_here(fn: Any) -> bool:
    return hasattr(fn, "_spanlab_fallback") and getattr(fn, "__name__", "") == CONV_FORWARD


def install_globals() -> list[str]:
    """Put the conv dispatcher in place of `causal_conv1d_forward` in every listed module where it
    and `causal_conv1d_fn` are transformers' torch code; returns the modules now running it. Idempotent."""
    done = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        cur = getattr(mod, CONV_FORWARD, None)
        if cur is not None and installed_here(cur):
            done.append(name)
            continue
        fn = getattr(mod, CONV_FN, None)
        if (cur is None or fn is None or not hasattr(mod, MASK_FN) or not is_torch_fallback(cur, CONV_FORWARD)
                or not is_torch_fallback(fn, CONV_FN)):
            continue  # an older transformers (conv inline in the mixer), or a real kernel
        _saved[name] = cur
        setattr(mod, CONV_FORWARD, make_conv_forward(cur, name))
        done.append(name)
    return done


def installed(module: str) -> bool:
    return installed_here(getattr(importlib.import_module(module), CONV_FORWARD, None))


# -- the gated norm and the mixer ----------------------------------------------------------------
def _code(fn) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(fn))))
    except (OSError, TypeError, SyntaxError):
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.FunctionDef) else None


@functools.cache
def norm_formula(cls: type) -> str | None:
    """"mamba2" / "falcon_h1" when `cls.forward` is one of the reviewed gated-norm codes, else None."""
    node = _code(getattr(cls, "forward", None))
    if node is None:
        return None
    return NORM_FORMULAS.get(hashlib.sha256(ast.unparse(node).encode()).hexdigest()[:16])


_MASK_IN = "hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)"
_MASK_CONV = "hidden_states_B_C = apply_mask_to_padding_states(hidden_states_B_C.transpose(1, 2), attention_mask)"
_BEFORE_MASK = {"batch_size, seq_len, _ = hidden_states.shape", "dtype = hidden_states.dtype"}
_NORM_TAILS = (
    ("scan_output = self.norm(scan_output, gate)",),
    ("if self.mamba_rms_norm:\n    scan_output = self.norm(scan_output, gate)\n"
     "else:\n    scan_output = scan_output * torch.nn.functional.silu(gate)",),
)
_OUT = ("contextualized_states = self.out_proj(scan_output.to(dtype))", "return contextualized_states")


@functools.cache
def mixer_shape(cls: type) -> tuple[bool, bool]:
    """(mask, cast) of a mixer class's forward, read from its code: `mask` when the padding mask is
    used exactly twice, on the input before anything else and on the conv's output (so the
    patched mixer may apply the first itself and hand the second to the conv kernel); `cast` when
    the norm's output goes straight to `out_proj` cast to the input's dtype (so the norm may write
    that dtype)."""
    node = _code(getattr(cls, "forward", None))
    if node is None or "attention_mask" not in [a.arg for a in node.args.args]:
        return False, False
    body = [ast.unparse(s) for s in node.body]
    uses = [ast.unparse(s) for s in ast.walk(node) if isinstance(s, ast.stmt) and not isinstance(s, ast.FunctionDef)
            and any(isinstance(n, ast.Name) and n.id == "attention_mask" for n in ast.walk(s))
            and not isinstance(s, (ast.If, ast.For, ast.While, ast.With, ast.Try))]
    mask = (uses == [_MASK_IN, _MASK_CONV] and _MASK_IN in body
            and set(body[:body.index(_MASK_IN)]) <= _BEFORE_MASK
            and any(s.startswith("hidden_states_B_C = causal_conv1d_forward(self.conv1d,") for s in body))
    cast = "dtype = hidden_states.dtype" in body and any(
        tuple(body[-len(tail) - 2:]) == (*tail, *_OUT) for tail in _NORM_TAILS)
    cast = cast and sum(1 for s in ast.walk(node) if isinstance(s, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "dtype" for t in s.targets)) == 1
    return mask, cast


def _many_tokens(y, decode: bool) -> bool:
    # A decode step launched from Python pays Triton's launch cost, more than the torch ops it
    # replaces take at one token per row: the kernel runs there only inside CUDA graphs.
    return decode or (y.dim() >= 3 and y.shape[-2] > 1)


def _norm_forward(module, orig, formula, decode, hidden_states, gate=None):
    y = hidden_states
    if (gate is None or not available() or y.shape != gate.shape or y.dim() not in (2, 3) or module.weight.dim() != 1
            or y.shape[-1] != module.weight.shape[0] or y.stride(-1) != 1 or gate.stride(-1) != 1
            or not _float(y, gate, module.weight) or not _many_tokens(y, decode) or not _on_device(y, gate, module.weight)):
        return orig(hidden_states, gate)
    D = y.shape[-1]
    if formula == "mamba2":
        group = int(module.group_size)
        nbg = False
    else:
        group = D // int(module.n_groups) if int(module.n_groups) > 0 else 0
        nbg = bool(module.norm_before_gate)
    if group <= 0 or D % group or group > 65536:
        return orig(hidden_states, gate)  # transformers' view() raises, or too wide for one tile
    ctx = _CURRENT.get()
    out_dtype = None
    if ctx is not None and ctx.norm is module and ctx.dtype is not None:
        import torch

        natural = torch.promote_types(module.weight.dtype, y.dtype) if formula == "mamba2" else y.dtype
        # The mixer casts the float32 result to its dtype next: write that (the same single rounding).
        if natural == torch.float32 or natural == ctx.dtype:
            out_dtype = ctx.dtype
    return gated_norm_triton(y, gate, module.weight, module.variance_epsilon, group, formula=formula,
                             norm_before_gate=nbg, out_dtype=out_dtype)


def _mixer_forward(module, orig, shape, *args, **kwargs):
    import torch

    mask_ok, cast_ok = shape
    if torch.is_grad_enabled():
        return orig(*args, **kwargs)  # training: transformers' code throughout
    hidden_states = args[0] if args else kwargs.get("hidden_states")
    mask = kwargs.get("attention_mask") if len(args) <= 2 else None
    modname = type(module).__module__
    take_mask = (mask_ok and mask is not None and hidden_states is not None and installed(modname)
                 and getattr(mask, "dim", lambda: 0)() == 2 and tuple(mask.shape) == tuple(hidden_states.shape[:2]))
    if take_mask:
        hidden_states = getattr(sys.modules[modname], MASK_FN)(hidden_states, mask)
        if args:
            args = (hidden_states, *args[1:])
        else:
            kwargs["hidden_states"] = hidden_states
        kwargs["attention_mask"] = None
    dtype = hidden_states.dtype if cast_ok and hidden_states is not None else None
    token = _CURRENT.set(_Mixer(module.conv1d, getattr(module, "norm", None), dtype, mask if take_mask else None))
    try:
        return orig(*args, **kwargs)
    finally:
        _CURRENT.reset(token)


def _is_mixer(module) -> bool:
    return (type(module).__module__ in MODULES and all(hasattr(module, a) for a in ("conv1d", "in_proj", "out_proj"))
            and callable(getattr(type(module), "forward", None)))


def install(model: Any, *, decode: bool = False) -> list[str]:
    """The conv dispatcher in the modeling modules (`install_globals`), and per module of `model`
    the gated-norm and mixer patches (see the module doc). Returns what the model's prefill now
    runs: "conv1d" (its mixers' module has the dispatcher) and "gated_norm". A norm's one-token
    forwards (decode steps) keep transformers' code unless `decode` (they run as CUDA graphs)."""
    mods = set(install_globals())
    done: set[str] = set()
    for module in model.modules():
        fwd = module.__dict__.get("forward")
        if isinstance(fwd, functools.partial) and fwd.func is _norm_forward:
            module.forward = functools.partial(_norm_forward, module, fwd.args[1], fwd.args[2], decode)
            done.add("gated_norm")
            continue
        if isinstance(fwd, functools.partial) and fwd.func is _mixer_forward:
            if type(module).__module__ in mods:
                done.add("conv1d")
            continue
        if fwd is not None:
            continue  # patched by someone else: leave it
        formula = norm_formula(type(module))
        if formula is not None and hasattr(module, "weight"):
            module.forward = functools.partial(_norm_forward, module, module.forward, formula, decode)
            done.add("gated_norm")
        elif _is_mixer(module):
            if type(module).__module__ in mods:
                done.add("conv1d")
            shape = mixer_shape(type(module))
            if any(shape):
                module.forward = functools.partial(_mixer_forward, module, module.forward, shape)
    return sorted(done)


def uninstall() -> None:
    """Put back the module globals `install_globals()` replaced (a patched model's mixers then apply
    their masks themselves again: `_mixer_forward` hands the mask over only to the dispatcher)."""
    for name, fn in list(_saved.items()):
        mod = importlib.import_module(name)
        if installed_here(getattr(mod, CONV_FORWARD, None)):
            setattr(mod, CONV_FORWARD, fn)
        del _saved[name]


def uninstall_model(model: Any) -> None:
    """Undo `install(model)`'s per-module patches (the module globals stay: other models may use them)."""
    for module in model.modules():
        fwd = module.__dict__.get("forward")
        if isinstance(fwd, functools.partial) and fwd.func in (_norm_forward, _mixer_forward):
            del module.forward
