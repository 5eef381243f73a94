"""models/hf_compat: both transformers calling conventions (<= 5.23 and >= 5.24/5.25) are recognised."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from spanlab.models import hf_compat


class _Old(torch.nn.Module):
    def forward(self, input_ids=None, past_key_values=None, cache_params=None, use_cache=None):
        return None


class _New(torch.nn.Module):
    def forward(self, input_ids=None, cache=None, use_cache=None):
        return None


class _Out:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_cache_keyword_and_output_under_both_conventions():
    assert hf_compat.cache_kwarg(_Old(), "cache_params") == "cache_params"
    assert hf_compat.cache_kwarg(_Old(), "state") is None
    assert hf_compat.cache_kwarg(_New(), "cache_params") == "cache"
    assert hf_compat.generate_cache_kwarg(_Old()) == "past_key_values"
    assert hf_compat.generate_cache_kwarg(_New()) == "cache"
    assert hf_compat.generate_skips_cached_prompt("cache") and not hf_compat.generate_skips_cached_prompt("cache_params")
    c = object()
    assert hf_compat.output_cache(_Out(cache_params=c), "cache_params") is c
    assert hf_compat.output_cache(_Out(cache=c, past_key_values=None), "past_key_values") is c


def test_kernel_closure_unwraps_a_kernels_func_module():
    def fallback(x):
        return x + 1

    def make(func):  # the shape of kernels' _create_func_module: forward closes over `func`
        class Func(torch.nn.Module):
            def forward(self, *args, **kwargs):
                return func(*args, **kwargs)

        return Func()

    wrapped = make(fallback)
    assert hf_compat.kernel_closure(wrapped) is fallback
    assert hf_compat.kernel_closure(fallback) is fallback
    assert hf_compat.kernel_closure(torch.nn.Linear(2, 2)).__class__ is torch.nn.Linear  # no `func`: left alone


def test_is_recurrent_without_the_old_flag():
    import transformers as T

    llama = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1))
    mamba2 = T.Mamba2ForCausalLM(T.Mamba2Config(vocab_size=32, hidden_size=16, num_hidden_layers=1, state_size=8,
                                                expand=2, head_dim=8, num_heads=4, n_groups=1, chunk_size=8))
    assert not hf_compat.is_recurrent(llama)
    assert hf_compat.is_recurrent(mamba2)
