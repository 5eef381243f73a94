"""Every fast path equals its dense float64 reference, outputs and gradients, on fresh random inputs."""

import pytest
import torch
from attn_helpers import rand_qkv, reference, rel_err

from spanlab.attention import get_attention

SHAPES = [  # B, H, H_kv, L, D  (L deliberately not a multiple of chunk or block sizes)
    (2, 4, 2, 203, 32),
    (1, 3, 1, 131, 64),
    (1, 2, 2, 97, 128),
]

CASES = [
    ("full", {}),
    ("sw", {"window": 1}),
    ("sw", {"window": 37}),
    ("sw", {"window": 500}),
    ("s2", {"group_size": 1}),
    ("s2", {"group_size": 7}),
    ("s2", {"group_size": 32}),
    ("s2", {"group_size": 500}),
    ("se", {"chunk_size": 40, "block_size": 8, "top_k": 3}),
    ("se", {"chunk_size": 37, "block_size": 5, "top_k": 100}),  # top_k above every chunk's eligible count
    ("se", {"chunk_size": 64, "block_size": 32, "top_k": 2}),
    ("se", {"chunk_size": 300, "block_size": 16, "top_k": 4}),  # one chunk: no memory at all
    ("se-nomem", {"chunk_size": 45}),
    ("se-random", {"chunk_size": 33, "block_size": 8, "top_k": 3}),
    ("se-landmark", {"chunk_size": 50, "block_size": 10, "top_k": 2}),
    ("se-landmark", {"chunk_size": 32, "block_size": 8, "top_k": 100}),
    ("se-meanq", {"chunk_size": 50, "block_size": 10, "top_k": 2}),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant,params", CASES, ids=[f"{v}-{'-'.join(map(str, p.values()))}" for v, p in CASES])
def test_fast_matches_reference(variant, params, shape):
    q, k, v = rand_qkv(*shape, grad=True)
    seed = torch.seed() % 2**31
    fast = get_attention(variant, **params, **({"generator": torch.Generator().manual_seed(seed)} if variant.startswith("se") else {}))
    ref_params = dict(params, generator=torch.Generator().manual_seed(seed)) if variant.startswith("se") else params
    out = fast(q, k, v)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = reference(variant, q, k, v, ref_params)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    assert out.shape == q.shape
    assert rel_err(out, ref) < 1e-10
    for name, g, rg in zip("qkv", grads, ref_grads):
        assert rel_err(g, rg) < 1e-10, name


def test_se_tuple_chunk_size_matches_reference_draw():
    q, k, v = rand_qkv(1, 2, 1, 150, 32)
    for seed in range(4):
        fast = get_attention("se", chunk_size=(24, 48), block_size=8, top_k=2, generator=torch.Generator().manual_seed(seed))
        ref = reference("se", q, k, v, {"chunk_size": (24, 48), "block_size": 8, "top_k": 2,
                                         "generator": torch.Generator().manual_seed(seed)})
        assert rel_err(fast(q, k, v), ref) < 1e-10


def test_se_differs_from_nomem_when_memory_exists():
    # Guards against a fast path that silently drops the retrieved blocks.
    q, k, v = rand_qkv(1, 2, 2, 128, 16)
    se = get_attention("se", chunk_size=32, block_size=8, top_k=2)(q, k, v)
    nomem = get_attention("se-nomem", chunk_size=32)(q, k, v)
    assert torch.allclose(se[:, :, :32], nomem[:, :, :32])  # chunk 0 has nothing to retrieve
    assert (se[:, :, 32:] - nomem[:, :, 32:]).abs().max() > 1e-3


def test_landmark_token_summary_is_its_cross_attention():
    """SE-Attn-LM (App. F): c_j = softmax(ℓ K_jᵀ/√D) V_j for the landmark token's fixed query ℓ;
    it ignores the block's queries (unlike meanq) and selects differently from SE-Attn."""
    import math

    from spanlab.attention.selection import block_summaries, landmark_query

    q, k, v = rand_qkv(1, 4, 2, 64, 16)
    c = block_summaries(q, k, v, 16, "landmark")
    lq = landmark_query(4, 16, dtype=torch.float64)
    assert torch.equal(lq, landmark_query(4, 16, dtype=torch.float64))  # fixed: never drawn again
    for h in range(4):
        for j in range(4):
            sl = slice(16 * j, 16 * (j + 1))
            w = torch.softmax(lq[h] @ k[0, h // 2, sl].T / math.sqrt(16), -1)
            torch.testing.assert_close(c[0, h, j], w @ v[0, h // 2, sl])
    torch.testing.assert_close(block_summaries(q * 3 + 1, k, v, 16, "landmark"), c)  # queries play no part
    assert not torch.allclose(block_summaries(q, k, v, 16, "meanq"), c)
    q, k, v = rand_qkv(1, 4, 2, 256, 16)
    lm = get_attention("se-landmark", chunk_size=64, block_size=8, top_k=2)(q, k, v)
    se = get_attention("se", chunk_size=64, block_size=8, top_k=2)(q, k, v)
    assert (lm - se).abs().max() > 1e-3


def test_flex_sliding_window_mask_forward_on_cpu():
    # The CUDA path's FlexAttention block mask, checked here in forward (PyTorch has no CPU flex backward).
    from spanlab.attention import flex, naive

    q, k, v = rand_qkv(2, 4, 2, 150, 32, dtype=torch.float32)
    for window in (5, 64):
        out = flex.flex(q, k, v, flex.block_mask("sw", window, 4, 150, "cpu"))
        ref = naive.sliding_window_attention_reference(q.double(), k.double(), v.double(), window)
        assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_cpu(dtype):
    q, k, v = rand_qkv(1, 4, 2, 160, 64, dtype=dtype)
    for variant, params in [("full", {}), ("sw", {"window": 50}), ("s2", {"group_size": 40}), ("se-nomem", {"chunk_size": 64})]:
        out = get_attention(variant, **params)(q, k, v)
        assert out.dtype == dtype
        ref = reference(variant, q.double(), k.double(), v.double(), params)
        assert rel_err(out, ref) < (1e-5 if dtype == torch.float32 else 2e-2), variant


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_se_backends_match_reference(backend, kernel_choices):
    # "math" is the log-sum-exp merge the CUDA kernels use; "sdpa" the bottom-right-causal tile path.
    kernel_choices(f"se_backend={backend}")
    q, k, v = rand_qkv(2, 4, 2, 181, 32, grad=True)
    for params in ({"chunk_size": 40, "block_size": 8, "top_k": 3}, {"chunk_size": 24, "block_size": 5, "top_k": 9}):
        out = get_attention("se", **params)(q, k, v)
        dout = torch.randn_like(out)
        ref = reference("se", q, k, v, params)
        for g, rg in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout)):
            assert rel_err(g, rg) < 1e-10
        assert rel_err(out, ref) < 1e-10
