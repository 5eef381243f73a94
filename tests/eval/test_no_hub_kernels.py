"""Models spanlab loads never use transformers' hub kernels (fetched from the hub at run time).

transformers >= 5.25 loads with `use_kernels=True` by default; then `model.train()` re-kernelizes for
training and, offline, fails at the first fine-tuning step asking the hub for liger kernels (seen on the
lent GPU). spanlab chooses its own kernels (spanlab.kernels) and loads every model without these.
"""

from __future__ import annotations

import pytest


def test_eval_backend_loads_without_hub_kernels(tiny_models):
    from spanlab.models.hf import HFBackend

    b = HFBackend(tiny_models["llama"], device="cpu")
    assert getattr(b.model, "use_kernels", False) is False
    b.model.train()  # would re-kernelize (and reach for the hub) with use_kernels on
    assert getattr(b.model, "use_kernels", False) is False


def test_finetune_base_loads_without_hub_kernels(tiny_models):
    from spanlab.finetune.recipe import load_base_model

    model = load_base_model(tiny_models["llama"])
    assert getattr(model, "use_kernels", False) is False


def test_default_load_would_turn_them_on(tiny_models):
    """The premise: without spanlab's argument this transformers turns hub kernels on."""
    import transformers as T

    if not hasattr(T.PreTrainedModel, "use_kernels"):
        pytest.skip("this transformers has no hub kernels")
    try:
        import kernels  # noqa: F401
    except ImportError:
        pytest.skip("the kernels package is not installed")
    model = T.AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    if not getattr(model, "use_kernels", False):
        pytest.skip("this transformers loads without hub kernels by default")
    assert model.use_kernels is True
