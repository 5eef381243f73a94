"""RecurrentGemma's RG-LRU recurrence, h_t = a_t·h_{t-1} + x_t, as a chunked Triton scan.

transformers' `RecurrentGemmaRglru._rnn_scan` runs a multi-token forward as a Python loop over
time: three small kernels per token per recurrent layer, ≈830K launches for a 16K-token prompt
through recurrentgemma-2b's 17 recurrent layers. That loop is why the model evaluated at 0.08× the
samples/s of the Llama of its size at 16K (docs/benchmarks.md, "Seed models"): the GPU idles
between launches. The recurrence is elementwise over channels and linear in h, so it splits into
chunks of `CHUNK` tokens whose effects compose:

1. `_chunk_kernel`, per (channel tile, chunk, batch): the chunk's end state from a zero start,
   h_end, and the product of its gates, P (so that from a start s the chunk ends at P·s + h_end);
2. `_carry_kernel`, per (channel tile, batch): the state entering every chunk, in order
   (s_{c+1} = P_c·s_c + h_end_c, from the stored recurrent state); chunks = T / CHUNK, few;
3. `_rescan_kernel`, per (channel tile, chunk, batch): the chunk run again from its entering
   state, every row written.

Traffic: a and x read twice, y written once, ≈10 bytes per element in bf16 (0.4 GB for 16K tokens
of 2,560 channels, ≈0.15 ms at 3 TB/s) against one launch per token. The arithmetic is
transformers': gates and inputs promoted to float32, the state in float32, each row cast to the
input dtype; only the states entering chunks 2.. are composed (P·s + h_end) rather than
stepped, so results agree to float32 rounding, not bit for bit.

Forward only: `install` routes a model's multi-token scans here when no gradient is needed, the
tensors are on CUDA (or Triton's CPU interpreter runs, as in the tests) and the kernel choice
`rglru_scan` is auto; decode steps (one token), training and CPU runs keep transformers' code.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

from spanlab import kernels
from spanlab.triton_support import available, interpreting, load

triton, tl = load()

CHUNK = 128  # tokens per chunk: 16K tokens give 128 chunks × 20 channel tiles of 2,560 channels
BLOCK_D = 128  # channels per program
_INSTALLED = "_spanlab_rglru_scan"
# transformers' loop, as reviewed (5.23-5.25): a release that changes it turns the patch off.
_LOOP_MARKS = ("for t in range(hidden_states.shape[1])", "recurrent_gate = recurrent_gate * ~reset")


def enabled() -> bool:
    """False when the kernel choices (spanlab.kernels, `rglru_scan=torch`) keep transformers' loop."""
    return kernels.current().rglru_scan != "torch"


if triton is not None:

    @triton.jit
    def _chunk_kernel(a_ptr, x_ptr, p_ptr, h_ptr, T, D, NC, L: tl.constexpr, BD: tl.constexpr):
        pid_d, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs = pid_d * BD + tl.arange(0, BD)
        m = offs < D
        row = b.to(tl.int64) * T + c * L
        h = tl.zeros([BD], dtype=tl.float32)
        p = tl.full([BD], 1.0, dtype=tl.float32)
        for i in range(tl.minimum(L, T - c * L)):  # the last chunk may be partial
            a = tl.load(a_ptr + (row + i) * D + offs, mask=m, other=1.0).to(tl.float32)
            x = tl.load(x_ptr + (row + i) * D + offs, mask=m, other=0.0).to(tl.float32)
            h = a * h + x
            p = p * a
        out = (b.to(tl.int64) * NC + c) * D + offs
        tl.store(p_ptr + out, p, mask=m)
        tl.store(h_ptr + out, h, mask=m)

    @triton.jit
    def _carry_kernel(p_ptr, h_ptr, s0_ptr, start_ptr, last_ptr, D, NC, HAS_S0: tl.constexpr, BD: tl.constexpr):
        pid_d, b = tl.program_id(0), tl.program_id(1)
        offs = pid_d * BD + tl.arange(0, BD)
        m = offs < D
        if HAS_S0:
            s = tl.load(s0_ptr + b.to(tl.int64) * D + offs, mask=m, other=0.0).to(tl.float32)
        else:
            s = tl.zeros([BD], dtype=tl.float32)
        for c in range(NC):
            idx = (b.to(tl.int64) * NC + c) * D + offs
            tl.store(start_ptr + idx, s, mask=m)
            s = tl.load(p_ptr + idx, mask=m, other=1.0) * s + tl.load(h_ptr + idx, mask=m, other=0.0)
        tl.store(last_ptr + b.to(tl.int64) * D + offs, s, mask=m)

    @triton.jit
    def _rescan_kernel(a_ptr, x_ptr, start_ptr, y_ptr, T, D, NC, L: tl.constexpr, BD: tl.constexpr):
        pid_d, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs = pid_d * BD + tl.arange(0, BD)
        m = offs < D
        h = tl.load(start_ptr + (b.to(tl.int64) * NC + c) * D + offs, mask=m, other=0.0)
        row = b.to(tl.int64) * T + c * L
        for i in range(tl.minimum(L, T - c * L)):
            a = tl.load(a_ptr + (row + i) * D + offs, mask=m, other=1.0).to(tl.float32)
            x = tl.load(x_ptr + (row + i) * D + offs, mask=m, other=0.0).to(tl.float32)
            h = a * h + x
            tl.store(y_ptr + (row + i) * D + offs, h.to(y_ptr.dtype.element_ty), mask=m)


def linear_scan(a: Any, x: Any, state: Any = None, *, chunk: int = CHUNK) -> tuple[Any, Any]:
    """h_t = a_t·h_{t-1} + x_t over (batch, T, D) tensors from `state` (batch, D) (zeros when None).
    Returns (h (batch, T, D) in x's dtype, final state (batch, D) float32). Triton; forward only."""
    import torch

    if triton is None:
        raise RuntimeError("spanlab.models.rglru_scan needs triton (pip install triton)")
    if a.shape != x.shape or a.dim() != 3:
        raise ValueError(f"a and x must be equal (batch, T, D) tensors, got {tuple(a.shape)} and {tuple(x.shape)}")
    B, T, D = x.shape
    a, x = a.contiguous(), x.contiguous()
    NC = triton.cdiv(T, chunk)
    P = torch.empty(B, NC, D, dtype=torch.float32, device=x.device)
    H = torch.empty_like(P)
    starts = torch.empty_like(P)
    last = torch.empty(B, D, dtype=torch.float32, device=x.device)
    y = torch.empty_like(x)
    s0 = state.to(device=x.device, dtype=torch.float32).contiguous() if state is not None else last
    grid = (triton.cdiv(D, BLOCK_D), NC, B)
    _chunk_kernel[grid](a, x, P, H, T, D, NC, L=chunk, BD=BLOCK_D)
    _carry_kernel[(triton.cdiv(D, BLOCK_D), B)](P, H, s0, starts, last, D, NC, HAS_S0=state is not None, BD=BLOCK_D)
    _rescan_kernel[grid](a, x, starts, y, T, D, NC, L=chunk, BD=BLOCK_D)
    return y, last


def _usable(hidden_states: Any, recurrent_gate: Any, acc_dtype: Any) -> bool:
    import torch

    if hidden_states.shape[1] <= 1 or acc_dtype != torch.float32 or not enabled() or triton is None:
        return False
    if torch.is_grad_enabled() and (hidden_states.requires_grad or recurrent_gate.requires_grad):
        return False  # no backward here: training keeps transformers' loop
    return hidden_states.is_cuda or interpreting()


def _rnn_scan(self: Any, hidden_states: Any, recurrent_gate: Any, reset: Any, recurrent_states: Any,
              acc_dtype: Any = None) -> tuple[Any, Any]:
    """Drop-in for RecurrentGemmaRglru._rnn_scan (same arguments and results)."""
    import torch

    acc = torch.float32 if acc_dtype is None else acc_dtype
    if not _usable(hidden_states, recurrent_gate, acc):
        return type(self)._rnn_scan(self, hidden_states, recurrent_gate, reset, recurrent_states, acc)
    # As transformers: the gate is zeroed where a row's sequence (re)starts, so the state resets there.
    return linear_scan(recurrent_gate * ~reset, hidden_states, recurrent_states)


def reviewed(cls: Any) -> bool:
    """`cls._rnn_scan` is the loop this module reproduces (checked by source)."""
    try:
        src = inspect.getsource(cls._rnn_scan)
    except (OSError, TypeError, AttributeError):
        return False
    return all(mark in src for mark in _LOOP_MARKS)


def install(model: Any) -> list[str]:
    """Route `model`'s RG-LRU multi-token scans through `linear_scan` (per instance; idempotent).
    Returns ["rglru_scan"] where it now runs (CUDA, Triton, switched on), [] otherwise."""
    try:
        from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRglru
    except ImportError:
        return []
    if triton is None or not enabled() or not reviewed(RecurrentGemmaRglru):
        return []
    p = next(model.parameters(), None)
    if p is None or not (p.is_cuda or interpreting()):
        return []
    found = [m for m in model.modules() if isinstance(m, RecurrentGemmaRglru)]
    for m in found:
        if not getattr(m, _INSTALLED, False):
            m._rnn_scan = types.MethodType(_rnn_scan, m)
            setattr(m, _INSTALLED, True)
    return ["rglru_scan"] if found else []


def uninstall_model(model: Any) -> None:
    for m in model.modules():
        if getattr(m, _INSTALLED, False):
            del m._rnn_scan
            delattr(m, _INSTALLED)


__all__ = ["CHUNK", "available", "enabled", "install", "linear_scan", "reviewed", "uninstall_model"]
