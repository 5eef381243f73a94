"""Checks of the chunked RG-LRU scan (spanlab.models.rglru_scan) against transformers' per-token
loop, shared by the CUDA test and the CPU-interpreter test.

Run as a script (`TRITON_INTERPRET=1 python rglru_scan_checks.py cpu [scan model]`) it runs the
checks on CPU through Triton's interpreter, which must be switched on before triton is imported:
hence the subprocess in the CPU test. Every case poisons the output buffer's memory pool with NaN
first (an element left unwritten fails), and the sizes cross chunk and channel-tile boundaries.
"""

from __future__ import annotations

import sys

import torch

from spanlab.models import rglru_scan

# batch, T, D, chunk, with a start state
SCAN_CASES = [
    (1, 1, 8, 4, False),
    (2, 37, 130, 8, True),  # 5 chunks, the last partial; 2 channel tiles, the last partial
    (3, 64, 40, 16, False),  # T a multiple of the chunk
    (1, 300, 257, 128, True),  # the default chunk, 3 chunks
]


def _loop(a, x, s0):
    """transformers' `_rnn_scan` loop, restated: float32 state, each row cast to x's dtype."""
    h = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float32, device=x.device) if s0 is None else s0.float()
    y = torch.empty_like(x)
    for t in range(x.shape[1]):
        h = a[:, t].float() * h + x[:, t].float()
        y[:, t] = h.to(x.dtype)
    return y, h


def _inputs(B, T, D, dtype, device, seed, with_state):
    g = torch.Generator().manual_seed(seed)
    # Gates as RG-LRU makes them: exp(-8·r·softplus(Λ)) in (0, 1), some near 1 (long memory), some ~0.
    a = torch.exp(-8 * torch.rand(B, T, D, generator=g) * torch.nn.functional.softplus(torch.randn(D, generator=g)))
    x = torch.randn(B, T, D, generator=g)
    s0 = torch.randn(B, D, generator=g) if with_state else None
    a, x = a.to(device, dtype), x.to(device, dtype)
    return a, x, (s0.to(device) if s0 is not None else None)


def check_scan(device: str) -> None:
    for i, (B, T, D, chunk, with_state) in enumerate(SCAN_CASES):
        for dtype in (torch.float32, torch.bfloat16):
            a, x, s0 = _inputs(B, T, D, dtype, device, seed=i, with_state=with_state)
            torch.full((B * T * D * 4,), float("nan"), device=device)  # leave NaN in freed memory
            y, last = rglru_scan.linear_scan(a, x, s0, chunk=chunk)
            ry, rlast = _loop(a, x, s0)
            assert y.dtype == dtype and y.shape == x.shape and last.dtype == torch.float32, (y.dtype, last.dtype)
            assert torch.isfinite(y.float()).all(), "unwritten rows"
            tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: a row rounded on either side of a tie
            err = (y.float() - ry.float()).abs().max().item()
            assert err <= tol * max(1.0, ry.float().abs().max().item()), (B, T, D, chunk, dtype, err)
            assert torch.allclose(last, rlast, rtol=1e-5, atol=1e-5), (B, T, D, chunk, dtype)
    print("scan ok")


def _tiny_gemma(device: str, dtype):
    import transformers as T

    torch.manual_seed(0)
    cfg = T.RecurrentGemmaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=8, lru_width=160,
                                 attention_window_size=16, initializer_range=0.1, pad_token_id=0,
                                 bos_token_id=1, eos_token_id=2)
    return T.RecurrentGemmaForCausalLM(cfg).eval().to(device, dtype)


def check_model(device: str) -> None:
    """A tiny RecurrentGemma gives the same logits (one shot, and prefilled in chunks, with the
    conv state carried) with the scan installed as with transformers' loop, and decodes the same tokens."""
    from transformers import DynamicCache

    from spanlab.models import prefill_recurrent_gemma

    model = _tiny_gemma(device, torch.float32)
    ids = torch.randint(3, 96, (2, 300), generator=torch.Generator().manual_seed(5)).to(device)
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
    assert rglru_scan.install(model) == ["rglru_scan"]
    assert rglru_scan.install(model) == ["rglru_scan"]  # idempotent
    with torch.no_grad():
        got = model(ids, use_cache=False).logits
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max(), (got - ref).abs().max()
    assert prefill_recurrent_gemma.install(model)
    cache, parts = DynamicCache(config=model.config), []
    with torch.no_grad():
        for start in range(0, ids.shape[1], 128):
            pos = torch.arange(start, min(start + 128, ids.shape[1]), device=device)[None].expand(2, -1)
            parts.append(model(ids[:, start:start + 128], position_ids=pos, past_key_values=cache, use_cache=True).logits)
    got = torch.cat(parts, dim=1)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max(), (got - ref).abs().max()
    # Training keeps transformers' loop (it has the backward): gradients flow.
    model.train()
    loss = model(ids[:, :40], labels=ids[:, :40]).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "rg_lru" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    rglru_scan.uninstall_model(model)
    assert not any(hasattr(m, "_spanlab_rglru_scan") for m in model.modules())
    print("model ok")


if __name__ == "__main__":
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    which = sys.argv[2:] or ["scan", "model"]
    if "scan" in which:
        check_scan(dev)
    if "model" in which:
        check_model(dev)
    print("rglru scan checks passed")
