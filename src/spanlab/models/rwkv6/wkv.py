"""The RWKV-6 WKV recurrence: a per-token reference, an exact chunked torch form, and fla's kernel.

Shapes: r, k, v, w are (batch, heads, T, N); w is the *log* decay (w_t = -exp(decay_t) <= 0);
u is (heads, N); the state S is (batch, heads, N_key, N_value) in float32. Per token:

    o_t = r_t · (diag(u) k_t v_tᵀ + S_{t-1})        S_t = diag(exp(w_t)) S_{t-1} + k_t v_tᵀ

`wkv_chunked` computes the same in blocks of C tokens: inside a block every pairwise decay
exp(E_t - E_{s+1}) (E = exclusive cumulative sum of w, in float64) is formed explicitly, never as a
product of exp(E_t) and exp(-E_s), so strong decays cannot overflow; between blocks the state is carried.
Memory is O(batch·heads·C²·N) per block, whatever T is.
"""

from __future__ import annotations

import torch


def wkv_recurrent(r, k, v, w, u, state=None):
    """Token-by-token reference. Returns (out (B,H,T,N) float32, final state)."""
    B, H, T, N = r.shape
    r, k, v, w = r.float(), k.float(), v.float(), w.float()
    S = torch.zeros(B, H, N, v.shape[-1], dtype=torch.float32, device=r.device) if state is None else state.float()
    u = u.float()[None, :, :, None]  # (1, H, N, 1)
    out = torch.empty(B, H, T, v.shape[-1], dtype=torch.float32, device=r.device)
    for t in range(T):
        kv = k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, N, V)
        out[:, :, t] = torch.einsum("bhn,bhnv->bhv", r[:, :, t], u * kv + S)
        S = torch.exp(w[:, :, t])[..., None] * S + kv
    return out, S


def wkv_chunked(r, k, v, w, u, state=None, chunk: int = 32):
    """Chunked form, equal to `wkv_recurrent` up to float32 rounding."""
    B, H, T, N = r.shape
    V = v.shape[-1]
    r, k, v, w = r.float(), k.float(), v.float(), w.float()
    S = torch.zeros(B, H, N, V, dtype=torch.float32, device=r.device) if state is None else state.float()
    u = u.float()
    outs = []
    for start in range(0, T, chunk):
        rc, kc, vc, wc = (x[:, :, start:start + chunk] for x in (r, k, v, w))
        C = rc.shape[2]
        # Cumulative log decays in float64: with strong decays the sums grow large and the float32
        # difference of two of them would lose the small decays that matter.
        incl = wc.double().cumsum(dim=2)  # E_{t+1}
        excl = incl - wc.double()  # E_t
        # Carried state, decayed up to (not including) each token.
        o = torch.einsum("bhtn,bhnv->bhtv", rc * torch.exp(excl).float(), S)
        # Earlier tokens of the block: decay from s+1 to t-1 is exp(E_t - E_{s+1}), s < t.
        diff = excl[:, :, :, None, :] - incl[:, :, None, :, :]  # (B, H, t, s, N)
        strict = torch.ones(C, C, dtype=torch.bool, device=r.device).tril(-1)
        decay = torch.where(strict[None, None, :, :, None], torch.exp(diff.clamp(max=0)).float(),
                            torch.zeros((), device=r.device))
        att = torch.einsum("bhtn,bhtsn,bhsn->bhts", rc, decay, kc)
        o = o + att @ vc
        # The token itself, through the bonus u.
        o = o + (rc * u[None, :, None, :] * kc).sum(-1, keepdim=True) * vc
        outs.append(o)
        # State after the block: everything decayed to its end.
        to_end = torch.exp(incl[:, :, -1:, :] - incl).float()  # decay from s+1 to C-1
        S = torch.exp(incl[:, :, -1]).float()[..., None] * S + torch.einsum("bhsn,bhsv->bhnv", kc * to_end, vc)
    return torch.cat(outs, dim=2), S


def fla_available() -> bool:
    try:
        import fla.ops.rwkv6  # noqa: F401
    except Exception:  # ImportError, or a triton/CUDA mismatch raised at import
        return False
    return True


def wkv_fla(r, k, v, w, u, state=None):
    """flash-linear-attention's chunk kernel (CUDA). Same contract as the torch forms."""
    import inspect

    from fla.ops.rwkv6 import chunk_rwkv6

    params = inspect.signature(chunk_rwkv6).parameters
    kw = {"scale": 1.0, "initial_state": None if state is None else state.float(), "output_final_state": True}
    if "checkpoint_level" in params:  # the oldest releases: (batch, heads, T, N) only
        o, S = chunk_rwkv6(r, k, v, w.float(), u, **kw)
        return o.float(), S
    # Later releases take (batch, T, heads, N); those with a head_first switch default it either way.
    if "head_first" in params:
        kw["head_first"] = False
    o, S = chunk_rwkv6(*(x.transpose(1, 2).contiguous() for x in (r, k, v)), w.float().transpose(1, 2).contiguous(), u, **kw)
    return o.transpose(1, 2).float(), S


def wkv(r, k, v, w, u, state=None, *, impl: str = "auto", chunk: int = 32):
    T = r.shape[2]
    if impl == "recurrent" or (impl in ("auto", "chunk") and T == 1):
        return wkv_recurrent(r, k, v, w, u, state)
    if impl == "fla" or (impl == "auto" and r.is_cuda and fla_available()):
        return wkv_fla(r, k, v, w, u, state)
    return wkv_chunked(r, k, v, w, u, state, chunk=chunk)


__all__ = ["fla_available", "wkv", "wkv_chunked", "wkv_fla", "wkv_recurrent"]
