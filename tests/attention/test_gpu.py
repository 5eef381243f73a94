"""CUDA fast paths (FlashAttention / FlexAttention kernels) against float64 references, fwd and bwd."""

import pytest
import torch
from attn_helpers import blocks_as_lists, rand_qkv, reference, rel_err

from spanlab.attention import get_attention
from spanlab.attention.selection import select_blocks

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 2e-3, torch.bfloat16: 2e-2, torch.float16: 5e-3}  # fp32 runs through TF32-class kernels
CASES = [
    ("full", {}),
    ("sw", {"window": 200}),
    ("s2", {"group_size": 256}),
    ("se", {"chunk_size": 256, "block_size": 32, "top_k": 4}),
    ("se", {"chunk_size": 200, "block_size": 24, "top_k": 20}),
    ("se-nomem", {"chunk_size": 300}),
    ("se-random", {"chunk_size": 128, "block_size": 32, "top_k": 3}),
    ("se-landmark", {"chunk_size": 256, "block_size": 16, "top_k": 5}),  # selection in torch on CUDA
    ("se-meanq", {"chunk_size": 256, "block_size": 16, "top_k": 5}),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(2, 4, 2, 1000, 64), (1, 8, 8, 1100, 128)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant,params", CASES, ids=[f"{v}-{'-'.join(map(str, p.values()))}" for v, p in CASES])
def test_cuda_fast_path(variant, params, shape, dtype):
    q, k, v = rand_qkv(*shape, dtype=dtype, device="cuda", grad=True)
    se = variant.startswith("se")
    seed = torch.seed() % 2**31
    fast = get_attention(variant, **params, **({"generator": torch.Generator("cuda").manual_seed(seed)} if se else {}))
    out = fast(q, k, v)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    blocks = None
    if se and variant != "se-nomem":
        # Check against the fast path's own (low-precision) block choice; float64 selection is tested on CPU.
        sel = {"se": "relevance", "se-random": "random", "se-landmark": "landmark", "se-meanq": "meanq"}[variant]
        idx = select_blocks(q.detach(), k.detach(), v.detach(), chunk_size=params["chunk_size"], block_size=params["block_size"],
                            top_k=params["top_k"], selection=sel, generator=torch.Generator("cuda").manual_seed(seed))
        blocks = blocks_as_lists(idx, shape[3], params["chunk_size"], params["block_size"])
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference(variant, q64, k64, v64, params, blocks=blocks)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    assert out.dtype == dtype and out.shape == q.shape
    assert rel_err(out, ref) < TOL[dtype]
    for name, g, rg in zip("qkv", grads, ref_grads):
        assert rel_err(g, rg) < TOL[dtype] * 2, name


@pytest.mark.parametrize("backend", ["cudnn", "flash", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_se_backends(backend, dtype, kernel_choices):
    kernel_choices(f"se_backend={backend}")
    params = {"chunk_size": 256, "block_size": 32, "top_k": 3}
    for shape in [(2, 4, 2, 1000, 64), (1, 4, 4, 1024, 128)]:
        q, k, v = rand_qkv(*shape, dtype=dtype, device="cuda", grad=True)
        out = get_attention("se", **params)(q, k, v)
        dout = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        idx = select_blocks(q.detach(), k.detach(), v.detach(), selection="relevance", generator=None, **params)
        blocks = blocks_as_lists(idx, shape[3], params["chunk_size"], params["block_size"])
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref = reference("se", q64, k64, v64, params, blocks=blocks)
        assert rel_err(out, ref) < TOL[dtype]
        for name, g, rg in zip("qkv", grads, torch.autograd.grad(ref, (q64, k64, v64), dout.double())):
            assert rel_err(g, rg) < TOL[dtype] * 2, name
