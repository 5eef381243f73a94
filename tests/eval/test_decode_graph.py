"""Decode steps over spanlab's static caches (spanlab.models.decode_graph): the same tokens as
transformers' own generate, caches reused across calls, the model's forward given back.

On CPU the plumbing runs without capture (decode_graphs="eager": static input buffers, cache reuse
and reset, the wrapped forward); on CUDA the steps are CUDA-graph replays.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

PROMPTS = ["The special magic number for apple is 12345. What is the special magic number for apple?",
           "Hello", "One two three four five six seven eight nine ten", "A"]


def _backend(path, **kw):
    from spanlab.models.hf import HFBackend

    return HFBackend(path, **kw)


def test_eager_plumbing_generates_like_transformers(tiny_models):
    ref = _backend(tiny_models["llama"], device="cpu", attn_implementation="sdpa")
    b = _backend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static",
                 decode_graphs="eager")
    assert b.describe()["decode_graphs"] == "eager"
    want = ref.generate(PROMPTS, 12)
    assert b.generate(PROMPTS, 12) == want
    cache = b.graphs.cache
    assert b.generate(PROMPTS, 12) == want  # the same cache, reset in place
    assert b.graphs.cache is cache and b.graphs.key == (4, 256)
    steps = b.graphs.replays
    assert steps >= 2 * 10  # every decode step but each call's first went through the static buffers
    # Another batch size is another cache; stop strings and early stops behave as in transformers.
    assert b.generate(PROMPTS[1:3], 12) == want[1:3]
    assert b.graphs.key == (2, 256) and b.graphs.cache is not cache
    assert b.generate(PROMPTS, 12, stop=["\n", " the"]) == ref.generate(PROMPTS, 12, stop=["\n", " the"])
    # A prompt + budget beyond one bucket takes the next one.
    assert b.generate(PROMPTS[:1], 240) == ref.generate(PROMPTS[:1], 240)
    assert b.graphs.key[1] == 512


def test_only_decode_steps_on_the_held_cache_are_taken(tiny_models):
    from transformers.cache_utils import StaticCache

    b = _backend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static",
                 decode_graphs="eager")
    g = b.graphs
    cache = g.cache_for(2, 40)
    ids = torch.ones(2, 1, dtype=torch.long)
    step = {"input_ids": ids, "position_ids": ids, "attention_mask": torch.ones(2, 1, 1, 256, dtype=torch.bool),
            g.cache_key: cache, "use_cache": True, "logits_to_keep": 1}
    # generate passes the cache as `past_key_values` up to transformers 5.23 and as `cache` after.
    assert g.cache_key in ("past_key_values", "cache")
    assert g._is_step(step)
    other = StaticCache(config=b.model.config, max_cache_len=256)
    for change in ({g.cache_key: other}, {"input_ids": torch.ones(2, 3, dtype=torch.long)},
                   {"attention_mask": torch.ones(2, 256, dtype=torch.bool)}, {"output_attentions": True},
                   {"return_dict": False}, {"position_ids": None}):
        assert not g._is_step(step | change), change


def test_close_gives_the_model_its_forward_back(tiny_models):
    b = _backend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static",
                 decode_graphs="eager")
    model = b.model
    assert "forward" in model.__dict__
    b.close()
    assert "forward" not in model.__dict__


def test_decode_graphs_choice_and_errors(tiny_models, monkeypatch):
    from spanlab import kernels
    from spanlab.errors import SpanlabError
    from spanlab.models import decode_graph

    cpu = _backend(tiny_models["llama"], device="cpu")
    assert cpu.decode_graphs == "off" and cpu.graphs is None  # CPU default: transformers' own loop
    with pytest.raises(SpanlabError, match="CUDA"):
        _backend(tiny_models["llama"], device="cpu", cache_implementation="static", decode_graphs="on")
    with pytest.raises(SpanlabError, match="static cache"):
        _backend(tiny_models["llama"], device="cpu", decode_graphs="eager")
    with pytest.raises(SpanlabError, match="decode graphs"):
        # Mamba2-family caches graph (tests/models/test_recurrent_graph.py); rolling windows do not.
        _backend(tiny_models["recurrent_gemma"], device="cpu", cache_implementation="static", decode_graphs="eager")
    with pytest.raises(SpanlabError, match="decode_graphs"):
        _backend(tiny_models["llama"], device="cpu", decode_graphs="yes")
    assert decode_graph.enabled()
    with kernels.use("decode_graphs=off"):
        assert not decode_graph.enabled()
    with pytest.raises(SpanlabError, match="SPANLAB_DECODE_GRAPHS: decode_graphs='maybe' is not one of auto, off"):
        kernels.from_env({"SPANLAB_DECODE_GRAPHS": "maybe"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_graphed_decode_generates_the_eager_tokens(dtype, tiny_models):
    """The CUDA default replays captured decode steps; tokens equal the eager loop's, call after call,
    and a graph is captured once per cache shape."""
    graphed = _backend(tiny_models["llama"], device="cuda", dtype=dtype)
    assert graphed.decode_graphs == "on"
    eager = _backend(tiny_models["llama"], device="cuda", dtype=dtype, decode_graphs="off")
    want = eager.generate(PROMPTS, 24)
    assert graphed.generate(PROMPTS, 24) == want
    assert graphed.generate(PROMPTS, 24) == want
    assert graphed.graphs.captures == 1 and graphed.graphs.replays >= 2 * 22
    assert graphed.generate(PROMPTS, 24, stop=["\n"]) == eager.generate(PROMPTS, 24, stop=["\n"])
    assert graphed.generate(PROMPTS[:3], 24) == want[:3]
    assert graphed.graphs.captures == 2
    if dtype == "float32":  # and the eager loop is transformers' (bf16 kernels may round differently)
        plain = _backend(tiny_models["llama"], device="cuda", dtype=dtype, attn_implementation="sdpa",
                         cache_implementation=None)
        assert plain.generate(PROMPTS, 24) == want


def test_spanlab_greedy_loop_gives_generates_tokens(tiny_models):
    """After generate's first decode step, spanlab's loop (DecodeGraphs.continue_greedy) runs the
    rest; tokens, EOS stops and new-token counts equal transformers' own loop."""
    from spanlab import kernels

    ref = _backend(tiny_models["llama"], device="cpu", attn_implementation="sdpa")
    b = _backend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static",
                 decode_graphs="eager")
    assert b.describe()["decode_loop"] == "spanlab"
    want = ref.generate(PROMPTS, 20)
    assert b.generate(PROMPTS, 20) == want
    assert b.graphs.loop_steps == 18  # 20 new tokens: generate made 2, the loop the rest (no row hit EOS)
    # Rows that stop at different steps: an EOS the model does produce, mid-way, in some rows.
    ids = ref.tokenizer(want[0].text, add_special_tokens=False)["input_ids"]
    eos = ids[min(4, len(ids) - 1)]
    for backend in (ref, b):
        backend.eos_ids = {eos}
    want = ref.generate(PROMPTS, 20)
    assert any(g.new_tokens < 20 for g in want)
    assert b.generate(PROMPTS, 20) == want
    # decode_loop=generate: transformers' loop for every step, same tokens.
    before = b.graphs.loop_steps
    with kernels.use({"decode_loop": "generate"}):
        assert b.generate(PROMPTS, 20) == want
    assert b.graphs.loop_steps == before


def test_greedy_loop_leaves_models_with_logits_processors_to_generate(tiny_models):
    """A checkpoint whose generation config adds a logits processor (here a repetition penalty)
    keeps generate's loop: its tokens are not plain argmax."""
    ref = _backend(tiny_models["llama"], device="cpu", attn_implementation="sdpa")
    b = _backend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static",
                 decode_graphs="eager")
    for backend in (ref, b):
        backend.model.generation_config.repetition_penalty = 1.5
    assert b.generate(PROMPTS, 16) == ref.generate(PROMPTS, 16)
    assert b.graphs.loop_steps == 0
