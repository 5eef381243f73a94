"""Chunked SSD scan for Mamba2-family layers without mamba-ssm, in linear memory per chunk.

transformers runs every Mamba2 layer (Mamba2, Bamba, Zamba2, FalconH1, NemotronH,
GraniteMoeHybrid) that has no mamba-ssm kernel through a module-level pure-torch
`mamba2_chunk_scan`, looked up as a global of its modeling module inside the mixer's forward.
In transformers 5.17 that fallback contracts by broadcasting,
`(C[..., None, :, :] * B[..., None, :, :, :]).sum(-1)` and `(M[..., None] * x[:, :, None]).sum(3)`,
which builds (batch, chunks, l, l, heads, state) and (..., head_dim) float32 tensors: ~32 GiB per
4K-token prompt for a 1B Mamba2 and an OOM at 16K (docs/benchmarks.md). Later releases use
einsums but the same algorithm.

`ssd_chunk_scan` is the same chunked state-space-duality algorithm with the same signature and
semantics (float32 throughout, initial/final states, zero padding of the last chunk, D skip, dt
bias/softplus/limits, B/C groups shared by `heads // groups` heads), written as batched matrix
products over the groups so that nothing larger than the (batch, chunks, heads, l, l) decay
matrix is ever built, and B/C are never repeated over heads.

Precision of the contractions. On CUDA with bf16/fp16 inputs, the large products (C·Bᵀ within
each chunk, the decay-weighted scores times x, each chunk's end state from x and B, and C times
the start states) take their operands in the input dtype and accumulate in float32 on the tensor
cores, as mamba-ssm's kernels do; the cumulative sums, decays, the chunk-to-chunk recurrence and
the states between chunks stay float32, and so does the output. Against the all-float32 path that
costs bf16 rounding of those operands and products: about 3e-3 relative on random inputs (the
tests bound it at 1e-2), the size of the gap between mamba-ssm's kernel and a float32 reference. CPU and float32 inputs keep
float32 throughout; `SPANLAB_KERNELS=ssd_matmul=float32` (or `matmul_dtype=torch.float32`) asks for it on
CUDA too.

Evaluation calls (CUDA half-precision inputs, no gradient wanted) go to the fused Triton forward of
`spanlab.models.ssd_triton`, which never materialises the decay matrix; `ssd=torch` keeps this
torch scan for them too.

`install()` puts it in place of that module global in every such transformers module (idempotent;
only where the global is still transformers' torch fallback, so a real mamba-ssm kernel is never
displaced); `uninstall()` restores what was there. The HF backend installs it when it loads one
of these architectures unless the kernel choice is `ssd=off` (spanlab.kernels).
"""

from __future__ import annotations

import importlib
from typing import Any

from spanlab import kernels
from spanlab.models.arch import ARCHS
from spanlab.models.hf_compat import is_torch_fallback

# transformers modules that define the fallback: the `ssd_modules` of the architecture profiles
# with `ssd_scan` (spanlab.models.arch); the names are looked up at install time, so a release
# that drops one of them is skipped rather than failing.
# dict.fromkeys: two profiles may share a module (Mamba2-Attn runs BambaMixer), installed once.
MODULES = tuple(dict.fromkeys(m for p in ARCHS.values() if p.ssd_scan for m in p.ssd_modules))
GLOBAL = "mamba2_chunk_scan"

# module name -> the object that was there before install() replaced it
_saved: dict[str, Any] = {}


def segsum_exp(a):
    """exp(segment sums) of `a` (..., l): out[..., i, j] = exp(a[j+1] + ... + a[i]) for i >= j, else 0.

    The same masked-cumsum construction as transformers' `segment_sum` (not cumsum differences,
    which lose precision when the cumulative decay is large), in one (..., l, l) buffer: the ops
    after the first allocation run in place, which autograd allows here (masked_fill and cumsum
    do not save their outputs; exp_ saves its own).
    """
    import torch

    n = a.shape[-1]
    ones = torch.ones(n, n, device=a.device, dtype=torch.bool)
    out = a[..., :, None].expand(*a.shape, n).masked_fill(~torch.tril(ones, diagonal=-1), 0)
    out.cumsum_(dim=-2)
    out.masked_fill_(~torch.tril(ones), -torch.inf)
    return out.exp_()


def ssd_chunk_scan(
    hidden_states,
    dt,
    A,
    B,
    C,
    chunk_size: int,
    D=None,
    dt_bias=None,
    initial_states=None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    matmul_dtype: Any = None,
    **kwargs: Any,
):
    """Drop-in for transformers' `mamba2_chunk_scan`.

    hidden_states (b, L, h, p), dt (b, L, h), A (h,), B and C (b, L, g, n) with h % g == 0,
    D (h,), dt_bias (h,), initial_states (b, h, p, n). Returns the float32 output (b, L, h, p)
    and, with `return_final_states`, the float32 state after the last position (b, h, p, n).
    `matmul_dtype`: the operand dtype of the large contractions (None: `contraction_dtype`).
    """
    import torch
    import torch.nn.functional as F

    if kwargs.get("cu_seqlens") is not None or kwargs.get("seq_idx") is not None:
        # transformers' own fallback refuses these too: packed sequences need mamba-ssm's kernel.
        raise ValueError("mamba2_chunk_scan can't keep packed sequences apart (seq_idx/cu_seqlens) without "
                         "`mamba-ssm`; install it to train on packed sequences")
    b, seqlen, h, p = hidden_states.shape
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"{h} heads cannot share {g} B/C groups evenly")
    r = h // g
    cs = int(chunk_size)
    lo = contraction_dtype(hidden_states) if matmul_dtype is None else matmul_dtype

    def mm(a, b_):
        # Operands in `lo`, float32 accumulation inside the matmul, the product back in float32.
        if lo == torch.float32:
            return torch.matmul(a, b_)
        return torch.matmul(a.to(lo), b_.to(lo)).float()

    # dt in its own dtype up to the clamp, then float32: the order transformers uses.
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1]).float()

    if _fused(hidden_states, dt, A, B, C, D, initial_states, cs, matmul_dtype):
        from spanlab.models import ssd_triton

        out, final = ssd_triton.chunk_scan(hidden_states, dt, A, B, C, cs, D=D, initial_states=initial_states)
        return (out, final) if return_final_states else out

    x = hidden_states.float()
    D_residual = D[:, None] * x if D is not None else None
    x = x * dt[..., None]
    a = A.float() * dt  # (b, L, h): log-decay per position
    B = B.float()
    C = C.float()

    pad = (cs - seqlen % cs) % cs
    if pad:
        # Zero padding: decay exp(0) = 1 and no input, so the final state is the last real one's.
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        a = F.pad(a, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (seqlen + pad) // cs
    # Layouts: chunk c, position l (target) / s (source) in the chunk, group g, head-in-group r.
    x = x.view(b, c, cs, g, r, p).permute(0, 1, 3, 4, 2, 5)  # (b, c, g, r, l, p)
    Bc = B.view(b, c, cs, g, n).transpose(2, 3)  # (b, c, g, l, n)
    Cc = C.view(b, c, cs, g, n).transpose(2, 3)  # (b, c, g, l, n)
    a = a.view(b, c, cs, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, l)
    a_cum = torch.cumsum(a, dim=-1)

    # 1. Within each chunk (diagonal blocks): y = (C B^T ∘ decay) x, an attention-like product.
    #    C B^T is per group (b, c, g, l, s); the decay matrix per head is the one (.., l, l) buffer.
    scores = mm(Cc, Bc.transpose(-1, -2))
    M = segsum_exp(a)
    M = M.mul_(scores[:, :, :, None]) if not torch.is_grad_enabled() else M * scores[:, :, :, None]
    del scores
    y = mm(M, x)  # (b, c, g, r, l, p)
    del M

    # 2. Each chunk's own end state: sum_l decay(l -> end) x_l B_l^T, as (r·p, l) @ (l, n) per group.
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, c, g, r, l)
    xw = (x * decay_to_end[..., None]).transpose(-1, -2).reshape(b, c, g, r * p, cs)
    states = mm(xw, Bc).view(b, c, h, p, n)
    del xw

    # 3. Chunk-to-chunk recurrence: start state of chunk k = sum_{j<=k} decay(j -> k) state_j, with
    #    the initial state as chunk "-1"; one small (c+1, c+1) matrix per (batch, head).
    if initial_states is not None:
        prev = initial_states.to(device=states.device, dtype=states.dtype)[:, None]
    else:
        prev = torch.zeros_like(states[:, :1])
    states = torch.cat([prev, states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = F.pad(a_cum[..., -1].reshape(b, c, h).transpose(1, 2), (1, 0))  # (b, h, c+1)
    decay_chunk = segsum_exp(chunk_decay)  # (b, h, c+1, c+1)
    new_states = torch.matmul(decay_chunk, states.permute(0, 2, 1, 3, 4).reshape(b, h, c + 1, p * n))
    new_states = new_states.view(b, h, c + 1, p, n)
    start_states, final_state = new_states[:, :, :-1], new_states[:, :, -1]

    # 4. Start state -> outputs of each chunk (off-diagonal blocks): decay(start -> l) C_l · state,
    #    as (l, n) @ (n, r·p) per group.
    st = start_states.permute(0, 2, 1, 4, 3).reshape(b, c, g, r, n, p).permute(0, 1, 2, 4, 3, 5)
    y_off = mm(Cc, st.reshape(b, c, g, n, r * p)).view(b, c, g, cs, r, p).permute(0, 1, 2, 4, 3, 5)
    y = y + y_off * torch.exp(a_cum)[..., None]

    out = y.permute(0, 1, 4, 2, 3, 5).reshape(b, c * cs, h, p)
    if pad:
        out = out[:, :seqlen]
    if D_residual is not None:
        out = out + D_residual
    # Callers `.view()` the result (FalconH1's mixer does); the D term may have taken the strides
    # of a non-contiguous input, so make the layout plain.
    out = out.contiguous()
    if return_final_states:
        return out, final_state
    return out


def _fused(x, dt, A, B, C, D, initial_states, chunk_size: int, matmul_dtype: Any) -> bool:
    """Whether the fused Triton forward (spanlab.models.ssd_triton) computes this call: half-precision
    inputs on CUDA (or Triton's CPU interpreter, for the tests), no gradient wanted, a chunk its
    tiles divide, the kernel choice not `ssd=torch`, and no float32 contractions asked for."""
    import torch

    from spanlab.models import ssd_triton

    if kernels.current().ssd != "auto" or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    if matmul_dtype is not None and matmul_dtype == torch.float32 or kernels.current().ssd_matmul == "float32":
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dt, A, B, C, D, initial_states)):
        return False
    return ssd_triton.supports(x, B, chunk_size)


def contraction_dtype(hidden_states: Any) -> Any:
    """The operand dtype of the scan's large products: the input's half dtype on CUDA, else float32
    (CPU, float32 inputs, or SPANLAB_KERNELS=ssd_matmul=float32)."""
    import torch

    if kernels.current().ssd_matmul == "float32" or not hidden_states.is_cuda or hidden_states.dtype not in (torch.bfloat16, torch.float16):
        return torch.float32
    return hidden_states.dtype


def install() -> list[str]:
    """Replace transformers' torch `mamba2_chunk_scan` with `ssd_chunk_scan` in every Mamba2-family
    modeling module that has it; returns the modules now using it. Idempotent. A module whose
    global is a real kernel (mamba-ssm installed) or something else set by the user is left alone."""
    done = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        cur = getattr(mod, GLOBAL, None)
        if cur is ssd_chunk_scan:
            done.append(name)
            continue
        if cur is None or not is_torch_fallback(cur, GLOBAL):
            continue
        _saved[name] = cur
        setattr(mod, GLOBAL, ssd_chunk_scan)
        done.append(name)
    return done


def uninstall() -> None:
    """Put back what `install()` replaced (tests compare both paths in one process)."""
    for name, fn in list(_saved.items()):
        mod = importlib.import_module(name)
        if getattr(mod, GLOBAL, None) is ssd_chunk_scan:
            setattr(mod, GLOBAL, fn)
        del _saved[name]


def installed(module: str = MODULES[0]) -> bool:
    mod = importlib.import_module(module)
    return getattr(mod, GLOBAL, None) is ssd_chunk_scan


def enabled() -> bool:
    return kernels.current().ssd != "off"


# The model types whose mixers call the module global above (the HF backend installs for these).
MODEL_TYPES = ARCHS.model_types(ssd_scan=True)
