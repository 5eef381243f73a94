"""Chunked prefill for recurrent and hybrid models: memory that does not grow with the prompt.

Without the mamba-ssm kernels, transformers' torch path for Mamba2 layers materialises tensors
proportional to the whole prompt (tens of GiB at 16K tokens). A recurrent layer only needs its
state to continue, so a prompt can be fed a chunk at a time with the cache carried over, and the
answer is the same as one forward over the whole prompt (tests compare both on every class).

Two ways, chosen per class from what the installed transformers supports:

- "generate": models whose cache is `past_key_values` (Bamba, Zamba2, FalconH1): transformers' own
  `GenerationConfig.prefill_chunk_size`, which slices input ids, attention mask and position ids
  per chunk exactly as one-shot generation would see them.
- "state": models whose cache `generate` cannot chunk (Mamba2's `cache_params`, RWKV's `state`):
  spanlab feeds the prompt but its last token(s) in chunks, then hands the cache to `generate` with
  that tail, so decoding is transformers' own greedy loop, as for every other model.

Everything else prefills in one shot. For recurrent classes that is said once on stderr and in
the run manifest, with the reason. One class transformers would happily chunk gives different
answers when chunked, so it stays one-shot: Jamba (its torch selective scan starts every
multi-token forward from a zero SSM state; `prefill_chunk_size` silently changes its logits).
RecurrentGemma's recurrent blocks restart their convolution state on every multi-token forward;
`spanlab.models.prefill_recurrent_gemma.install` makes them carry it, after which it chunks in
"generate" mode like Bamba.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from typing import Any

from spanlab.models.hf_compat import cache_kwarg, generate_skips_cached_prompt, is_recurrent, output_cache

DEFAULT_PREFILL_CHUNK = 2048

# Oldest transformers whose linear-attention cache continues a multi-token forward from a stored
# state (conv state concatenated in front of the chunk, SSM initial state passed to the scan);
# checked by reading 5.17's sources and running tests/eval/test_prefill.py against 5.17 and 5.23.
MIN_TRANSFORMERS = (5, 17)

# Which classes chunk, and how, is in their architecture profile (spanlab.models.arch):
# `chunked_prefill` (class name -> (mode, cache argument of forward, attribute of the output
# holding the cache)), `prefill_installers` (classes that chunk exactly only after spanlab fixes
# them up in place: a module with `install(model) -> bool`) and `prefill_not_exact` (recurrent classes whose chunked forward is known to
# differ from one shot).
# Profiles name the caches by their pre-5.24 names; `plan_prefill` resolves them against the
# installed transformers (models/hf_compat.py).


@dataclass(frozen=True)
class PrefillPlan:
    """How one model prefills: `mode` is "generate", "state" or "one-shot" (with `reason`);
    `tell` marks a one-shot choice the user should hear about (a recurrent model left unchunked)."""

    mode: str
    chunk: int = 0
    cache_arg: str | None = None
    cache_out: str | None = None
    reason: str = ""
    tell: bool = False

    @property
    def chunked(self) -> bool:
        return self.mode != "one-shot"

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "chunk": self.chunk if self.chunked else 0, **({"reason": self.reason} if self.reason else {})}


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def _version(text: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def plan_prefill(model: Any, chunk: int, *, trust_remote_code: bool = False) -> PrefillPlan:
    """Pick chunked prefill where it is exact for this model under the installed transformers."""
    from transformers import GenerationConfig

    from spanlab.models.arch import profile_for

    name = type(model).__name__
    arch = profile_for(model)
    if chunk <= 0:
        return PrefillPlan("one-shot", reason="chunked prefill off (--prefill-chunk 0)")
    recurrent = is_recurrent(model)  # transformers >= 5.25 has no `_is_stateful` flag (models/hf_compat.py)
    version = transformers_version()
    if trust_remote_code:
        # Remote code is unverified, whatever its class is called.
        return PrefillPlan("one-shot", reason=f"{name}: chunked prefill is not verified for remote code", tell=recurrent)
    if name in arch.prefill_not_exact:
        return PrefillPlan("one-shot", reason=f"{name}: {arch.prefill_not_exact[name]}", tell=True)
    if name not in arch.chunked_prefill:
        if recurrent:
            return PrefillPlan("one-shot", reason=f"{name}: chunked prefill is not verified for this class", tell=True)
        # Attention-only: SDPA prefill memory is already linear in the prompt; one shot is fastest.
        return PrefillPlan("one-shot", reason="attention-only model: one-shot prefill memory is linear in the prompt")
    if _version(version) < MIN_TRANSFORMERS:
        return PrefillPlan("one-shot", tell=True, reason=f"{name}: transformers {version} predates the cache API chunked "
                                                         f"prefill was verified on (>= {'.'.join(map(str, MIN_TRANSFORMERS))})")
    mode, legacy_arg, cache_out = arch.chunked_prefill[name]
    # transformers >= 5.24 renamed both legacy names to `cache` (models/hf_compat.py).
    cache_arg = cache_kwarg(model, legacy_arg)
    if cache_arg is None:
        return PrefillPlan("one-shot", reason=f"{name}.forward takes no {legacy_arg!r} in transformers {version}", tell=True)
    if mode == "generate" and not hasattr(GenerationConfig(), "prefill_chunk_size"):
        return PrefillPlan("one-shot", reason=f"{name}: transformers {version} has no prefill_chunk_size", tell=True)
    if name in arch.prefill_installers:
        import importlib

        if not importlib.import_module(arch.prefill_installers[name]).install(model):
            return PrefillPlan("one-shot", reason=f"{name}: its layers are not the structure chunked prefill was "
                                                  f"verified on in transformers {version}", tell=True)
    return PrefillPlan(mode, chunk, cache_arg, cache_out)


def note(plan: PrefillPlan) -> None:
    """One line on stderr when a recurrent model is left unchunked (the manifest records it too)."""
    if plan.tell:
        print(f"note: prefilling prompts in one shot: {plan.reason}", file=sys.stderr, flush=True)


def prefill_state(model: Any, plan: PrefillPlan, input_ids: Any, attention_mask: Any, cache: Any = None) -> Any:
    """Feed `input_ids` (batch, n) through the model `plan.chunk` tokens at a time; return the cache.

    The attention mask passed with each chunk covers everything seen so far, as `generate` passes
    it; transformers trims it to the chunk for the SSM layers' padding zeroing, so left padding
    is handled the same way as in one shot. `cache`: an empty cache to fill (spanlab's decode-graph
    cache, whose addresses its graph was captured on) instead of the one the first chunk makes.
    """
    # Only the cache is wanted; the last position's logits are the least a forward will compute.
    trim = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    n = input_ids.shape[1]
    for start in range(0, n, plan.chunk):
        end = min(start + plan.chunk, n)
        kwargs = {plan.cache_arg: cache} if cache is not None else {}
        out = model(input_ids=input_ids[:, start:end], attention_mask=attention_mask[:, :end], use_cache=True,
                    return_dict=True, **trim, **kwargs)
        cache = output_cache(out, plan.cache_out)
        del out  # the chunk's activations and logits go before the next chunk allocates its own
    return cache


def chunked_generate(model: Any, plan: PrefillPlan, input_ids: Any, attention_mask: Any, generation_config: Any,
                     **kwargs: Any) -> Any:
    """`model.generate` with the prompt prefilled in chunks; same return shape as one-shot generate
    (sequences start with the whole prompt). Falls through to plain generate when the prompt fits
    one chunk or the plan is one-shot."""
    import copy

    import torch

    width = input_ids.shape[1]
    if not plan.chunked or width <= plan.chunk:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs)
    gc = copy.copy(generation_config)
    if plan.mode == "generate":
        gc.prefill_chunk_size = plan.chunk
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gc, **kwargs)
    # "state": generate gets the prompt's tail with the cache of everything before it. The tail is
    # one token, plus as many as the longest stop string has characters: a stop string that starts
    # in the prompt must still be visible to generate's stop-string check, as in one shot.
    stops = gc.stop_strings or []
    tail = 1 + max((len(s) for s in ([stops] if isinstance(stops, str) else stops)), default=0)
    cut = width - tail
    if cut <= 0:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs)
    # A user-supplied cache cannot be combined with a cache implementation in generate.
    gc.cache_implementation = None
    cache = prefill_state(model, plan, input_ids[:, :cut], attention_mask[:, :cut], cache=kwargs.pop(plan.cache_arg, None))
    if generate_skips_cached_prompt(plan.cache_arg):
        # Renamed cache API: generate itself drops the prompt tokens the cache has seen, so it
        # gets the whole prompt (and returns it in `sequences`); it still feeds only the tail.
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gc,
                              **{plan.cache_arg: cache}, **kwargs)
    # The tail's mask is trimmed to it by transformers, as for every chunk.
    out = model.generate(input_ids=input_ids[:, cut:], attention_mask=attention_mask[:, cut:], generation_config=gc,
                         **{plan.cache_arg: cache}, **kwargs)
    if isinstance(out, torch.Tensor):
        return torch.cat([input_ids[:, :cut], out], dim=1)
    out.sequences = torch.cat([input_ids[:, :cut], out.sequences], dim=1)
    return out
