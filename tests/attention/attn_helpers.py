import os
import pathlib
import subprocess
import sys

import torch

from spanlab.attention import naive
from spanlab.attention.selection import valid_counts


def rand_qkv(B, H, Hk, L, D, *, dtype=torch.float64, device="cpu", seed=None, grad=False):
    g = torch.Generator(device=device)
    g.seed() if seed is None else g.manual_seed(seed)  # fresh inputs unless a test pins them
    q, k, v = (torch.randn(B, h, L, D, dtype=dtype, device=device, generator=g) for h in (H, Hk, Hk))
    if grad:
        for t in (q, k, v):
            t.requires_grad_()
    return q, k, v


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    assert torch.isfinite(a).all(), "non-finite values in the fast path"
    # clamp: some references are exactly zero (dq when every query sees only itself)
    return float((a - b).norm() / b.norm().clamp_min(1.0))


def blocks_as_lists(blocks: torch.Tensor, L: int, chunk_size: int, block_size: int):
    """Fast-path block tensor -> the reference's nested lists, keeping only the valid slots."""
    counts = valid_counts(L, chunk_size, block_size, blocks.shape[-1])
    b = blocks.tolist()
    return [[[row[i][: counts[i]] for i in range(len(row))] for row in head] for head in b]


def reference(variant, q, k, v, params, blocks=None):
    if variant == "full":
        return naive.full_attention_reference(q, k, v)
    if variant == "sw":
        return naive.sliding_window_attention_reference(q, k, v, params["window"])
    if variant == "s2":
        return naive.shifted_sparse_attention_reference(q, k, v, params["group_size"])
    sel = {"se": "relevance", "se-nomem": "none", "se-random": "random", "se-landmark": "landmark", "se-meanq": "meanq"}[variant]
    kw = {kk: params[kk] for kk in ("chunk_size", "block_size", "top_k", "generator") if kk in params}
    return naive.se_attention_reference(q, k, v, selection=sel, blocks=blocks, **kw)


def run_triton_checks(*args: str) -> str:
    """`python triton_checks.py ARGS` in Triton's CPU interpreter (TRITON_INTERPRET=1 must be set
    before triton is imported, hence a subprocess); fails the test on a non-zero exit, else
    returns its stdout."""
    here = pathlib.Path(__file__).parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(here / "triton_checks.py"), *args], env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout
