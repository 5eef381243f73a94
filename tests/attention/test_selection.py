"""SE-Attn retrieval: the right blocks, ties toward recency, reproducible random draws, chunk-size draws."""

import math

import pytest
import torch
from attn_helpers import blocks_as_lists, rand_qkv

from spanlab.attention import naive, se_attention
from spanlab.attention.selection import (
    block_summaries,
    random_scores,
    resolve_chunk_size,
    select_blocks,
    top_blocks,
    valid_counts,
)
from spanlab.errors import SpanlabError


@pytest.mark.parametrize("selection", ["relevance", "landmark", "meanq", "random"])
@pytest.mark.parametrize("L,M,S,k", [(203, 40, 8, 3), (150, 37, 5, 100), (96, 32, 32, 1)])
def test_fast_selection_equals_loop_reference(selection, L, M, S, k):
    q, kk, v = rand_qkv(2, 4, 2, L, 16)
    seed = torch.seed() % 2**31
    fast = select_blocks(q, kk, v, chunk_size=M, block_size=S, top_k=k, selection=selection,
                         generator=torch.Generator().manual_seed(seed))
    rand = random_scores((2, 4, -(-L // M), L // S), torch.Generator().manual_seed(seed), q.device) if selection == "random" else None
    ref = naive.se_select_reference(q, kk, v, chunk_size=M, block_size=S, top_k=k, selection=selection, rand=rand)
    assert blocks_as_lists(fast, L, M, S) == ref


def test_counts_follow_eligibility():
    # chunk i may use blocks with (j+1)·S <= i·M; a trailing partial block never counts
    assert valid_counts(L=100, chunk_size=30, block_size=8, top_k=2) == [0, 2, 2, 2]
    assert valid_counts(L=100, chunk_size=30, block_size=8, top_k=100) == [0, 3, 7, 11]


def test_summaries_are_mean_in_block_attention_outputs():
    q, k, v = rand_qkv(1, 2, 1, 70, 8)  # 70 = 4 blocks of 16 + a partial block that gets no summary
    c = block_summaries(q, k, v, 16)
    assert c.shape == (1, 2, 4, 8)
    for h in range(2):
        for j in range(4):
            sl = slice(16 * j, 16 * (j + 1))
            p = torch.softmax(q[0, h, sl] @ k[0, 0, sl].T / math.sqrt(8), -1)
            torch.testing.assert_close(c[0, h, j].double(), (p @ v[0, 0, sl]).mean(0), rtol=1e-5, atol=1e-6)


def _planted(D=32, S=16, M=64, L=512, target=3, distractor=20, seed=0):
    """Chunk 7's queries all point along u. Block `target` holds values along u (what it would
    contribute to those queries); the more recent `distractor` has keys along u but values orthogonal
    to it. Retrieval must ask what a block would *return*, so it picks the target."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (0.3 * torch.randn(1, 1, L, D, generator=g, dtype=torch.float64) for _ in range(3))
    u = torch.zeros(D, dtype=torch.float64)
    u[0] = 1.0
    w = torch.zeros(D, dtype=torch.float64)
    w[1] = 1.0
    chunk = slice(7 * M, 8 * M)
    q[0, 0, chunk] += 2.0 * u
    v[0, 0, target * S : (target + 1) * S] += 3.0 * u
    k[0, 0, distractor * S : (distractor + 1) * S] += 3.0 * u
    v[0, 0, distractor * S : (distractor + 1) * S] += 3.0 * w
    return q, k, v, D, S, M, L


def test_planted_block_is_retrieved_and_distractor_is_not():
    q, k, v, D, S, M, L = _planted()
    blocks = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=1, selection="relevance", generator=None)
    assert blocks[0, 0, 7].tolist() == [3]
    blocks = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=4, selection="relevance", generator=None)
    assert 3 in blocks[0, 0, 7].tolist() and 20 not in blocks[0, 0, 7].tolist()
    # ...and the chunk's outputs actually read the planted values
    out = se_attention(q, k, v, chunk_size=M, block_size=S, top_k=1)
    nomem = se_attention(q, k, v, chunk_size=M, block_size=S, top_k=1, selection="none")
    gain = (out[0, 0, 7 * M : 8 * M, 0] - nomem[0, 0, 7 * M : 8 * M, 0]).mean()
    assert gain > 0.5


def test_ties_go_to_the_most_recent_block():
    scores = torch.zeros(1, 1, 3, 10)  # every block ties
    scores[0, 0, 2, 1] = 5.0  # except one clear winner in chunk 2
    idx = top_blocks(scores, chunk_size=40, block_size=8, top_k=3)
    # chunk 1 (start 40): eligible 0..4 -> most recent first
    assert idx[0, 0, 1].tolist() == [4, 3, 2]
    # chunk 2 (start 80): eligible 0..9; the winner, then the most recent ties
    assert idx[0, 0, 2].tolist() == [1, 9, 8]
    # whole pipeline: zero queries make every relevance tie
    q, k, v = rand_qkv(1, 2, 1, 96, 8)
    q.zero_()
    blocks = select_blocks(q, k, v, chunk_size=32, block_size=8, top_k=2, selection="relevance", generator=None)
    assert blocks[0, :, 2].tolist() == [[7, 6], [7, 6]]


def test_random_selection_is_reproducible_and_uniform_over_eligible():
    q, k, v = rand_qkv(1, 2, 2, 256, 16)

    def pick(seed):
        return select_blocks(q, k, v, chunk_size=64, block_size=8, top_k=3, selection="random",
                             generator=torch.Generator().manual_seed(seed))

    assert torch.equal(pick(1), pick(1))
    assert not torch.equal(pick(1), pick(2))
    seen = set()
    for seed in range(60):
        b = pick(seed)[0, 0, 1].tolist()  # chunk 1 may use blocks 0..7
        assert len(set(b)) == 3 and all(0 <= j < 8 for j in b)
        seen.update(b)
    assert seen == set(range(8))
    out1 = se_attention(q, k, v, chunk_size=64, block_size=8, top_k=3, selection="random", generator=torch.Generator().manual_seed(5))
    out2 = se_attention(q, k, v, chunk_size=64, block_size=8, top_k=3, selection="random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(out1, out2)


def test_tuple_chunk_size_is_drawn_with_the_generator():
    draws = [resolve_chunk_size((2048, 4096), torch.Generator().manual_seed(s)) for s in range(40)]
    assert set(draws) == {2048, 4096}
    assert draws == [resolve_chunk_size((2048, 4096), torch.Generator().manual_seed(s)) for s in range(40)]
    assert resolve_chunk_size(512) == 512
    for bad in ((), (0, 4), "x", 2.5, True):
        with pytest.raises(SpanlabError):
            resolve_chunk_size(bad)


def test_no_gradient_through_the_choice_but_through_retrieved_keys():
    q, k, v = rand_qkv(1, 1, 1, 128, 8, grad=True)
    out = se_attention(q, k, v, chunk_size=64, block_size=16, top_k=1)
    (gk,) = torch.autograd.grad(out[:, :, 64:].sum(), (k,))
    blocks = select_blocks(q.detach(), k.detach(), v.detach(), chunk_size=64, block_size=16, top_k=1, selection="relevance", generator=None)
    j = int(blocks[0, 0, 1, 0])
    touched = gk[0, 0].abs().sum(-1) > 0
    expect = torch.zeros(128, dtype=torch.bool)
    expect[64:] = True
    expect[16 * j : 16 * (j + 1)] = True
    assert torch.equal(touched, expect)
