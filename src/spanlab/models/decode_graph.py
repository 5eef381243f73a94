"""Decode steps of attention models replayed as CUDA graphs, over a static KV cache spanlab keeps.

transformers' `generate` runs each decode step's forward from Python: a few hundred small kernels
per step (16 layers of projections, norms, rotary, attention, MLP), each launched by the host. At
batch 64 x 4K on an H100 a step took 16 ms against a ~6.5 ms GPU floor (docs/benchmarks.md): the
GPU waits for the host. A decode step over a static cache is the same kernels on the same shapes
at every step (the write position lives on the device, in `StaticLayer.cumulative_length`), so
it can be captured once as a CUDA graph and replayed with one launch.

How it fits into `generate` without changing what it computes:

- `DecodeGraphs.cache_for(batch, length)` hands out the static cache `generate` is given
  (`past_key_values=`), one per (batch, length rounded up to `bucket` tokens), reset in place
  between calls so that the addresses a graph was captured on stay valid. Only the latest cache
  (and its graph) is kept: caches are large (8.8 GB at 4K x 64 for a 1B Llama).
- The model's `forward` is wrapped. A call that is a decode step on that cache (one token per row,
  a 4D mask, position ids, nothing else asked for) copies its inputs into static buffers and
  replays the graph; the first such call per cache warms up on a side stream (restoring the
  cache's write positions afterwards), captures, and replays. Every other call (prefill, other
  caches, training) runs the model's own forward.
- `generate` keeps the rest (logits processors, EOS, stop strings, padding finished rows), so the
  tokens are those of the eager path: the graph replays the same kernels on the same shapes.
  With `graphs=False` the same buffers and caches are used without capture (CPU tests).

Mamba2-family models (Mamba2, Bamba, Zamba2, FalconH1, spanlab's Mamba2-Attn) take the same
route: their cache's recurrent layers (transformers >= 5.25 `LinearAttentionLayer`) keep
fixed-shape conv and SSM states that every update writes with `copy_` (static addresses, as
transformers notes for cudagraphs), and their token count is a device tensor. Mamba2-Attn's
attention layers are "hybrid" layers: a static KV cache and, in the same layer, a conv state of
pre-conv q/k/v rows, written the same way. What differs from attention layers: a
step is not idempotent (it advances the state), so the warm-up before capture snapshots every
state and puts it back; the decode mask is None (Mamba2) or a dict per layer type of None and a
static 4D mask (hybrids over a static cache); Mamba2 takes no position ids. With
spanlab.models.mamba2_kernels installed a Mamba2 layer's step is a few launches, and the graph
removes the host time between them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

from spanlab import kernels
from spanlab.models.hf_compat import generate_cache_kwarg

BUCKET = 256
CHECK_EVERY = 8  # decode steps between the greedy loop's host checks for "every row finished"

# The keyword arguments generate's decode steps pass; anything else (hidden states, attentions) is
# not captured and runs the model's own forward.
# The cache arrives as `past_key_values` (transformers <= 5.23) or `cache` (>= 5.24; models/hf_compat.py).
_STEP_KEYS = {"input_ids", "attention_mask", "position_ids", "past_key_values", "cache", "use_cache",
              "logits_to_keep", "return_dict", "inputs_embeds"}


def enabled() -> bool:
    return kernels.current().decode_graphs != "off"


def _parameters(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _layer_kinds() -> tuple[type, ...]:
    """Cache layers whose decode step a replay reproduces: full-attention static layers, and the
    recurrent (conv + SSM state) layers of transformers >= 5.25, alone or beside a static one."""
    from transformers import cache_utils as cu

    names = ("StaticLayer", "LinearAttentionLayer", "LinearAttentionAndStaticFullAttentionLayer")
    return tuple(getattr(cu, n) for n in names if hasattr(cu, n))


def supported(model: Any) -> str | None:
    """Why a model's decode steps cannot be graphed here, or None when they can: every cache
    layer must be a full-attention `StaticLayer` or a recurrent-state layer (sliding windows keep
    a rolling buffer a replay would not reproduce)."""
    try:
        from transformers.cache_utils import StaticCache
    except ImportError:
        return "this transformers has no StaticCache"
    try:
        probe = StaticCache(config=model.config, max_cache_len=1)
    except Exception as e:  # noqa: BLE001 - any model transformers cannot give a static cache
        return f"no static cache for {type(model).__name__} ({type(e).__name__})"
    kinds = {type(layer) for layer in getattr(probe, "layers", [])}
    if not kinds or not kinds <= set(_layer_kinds()):
        return f"{type(model).__name__}'s cache layers are not all full-attention static or recurrent-state layers"
    return None


def _mask_sig(mask: Any) -> Any:
    """A hashable description of a decode mask's structure, or False when a step with it cannot be
    replayed: None, a 4D tensor (static KV length), or a dict of those (hybrids, per layer type)."""
    if mask is None:
        return None
    if isinstance(mask, dict):
        sigs = tuple((k, _mask_sig(v)) for k, v in sorted(mask.items()))
        return False if any(s is False for _, s in sigs) else ("dict", sigs)
    if getattr(mask, "dim", None) is None or mask.dim() != 4:
        return False  # a 2D mask grows by one column per step
    return (tuple(mask.shape), mask.dtype)


def _mask_clone(mask: Any) -> Any:
    import torch

    if mask is None:
        return None
    if isinstance(mask, dict):
        return {k: _mask_clone(v) for k, v in mask.items()}
    return mask.clone(memory_format=torch.contiguous_format)


def _mask_tensors(mask: Any) -> list[Any]:
    """The 4D tensors of a decode mask (None, a tensor, or a dict of those per layer type)."""
    if mask is None:
        return []
    if isinstance(mask, dict):
        return [t for v in mask.values() for t in _mask_tensors(v)]
    return [mask]


def _mask_copy(dst: Any, src: Any) -> None:
    if isinstance(dst, dict):
        for k, v in dst.items():
            _mask_copy(v, src[k])
    elif dst is not None:
        dst.copy_(src)


def _state_tensors(cache: Any) -> list[Any]:
    """Every tensor a decode step advances in place: write positions and token counts, and the
    conv / SSM states of recurrent layers (the keys/values a replay rewrites identically)."""
    out = []
    for layer in cache.layers:
        for attr in ("cumulative_length", "cumulative_length_linear"):
            t = getattr(layer, attr, None)
            if t is not None and hasattr(t, "copy_"):
                out.append(t)
        for attr in ("conv_states", "recurrent_states"):
            states = getattr(layer, attr, None) or {}
            out.extend(t for t in states.values() if t is not None)
    return out


class _Step:
    """Static inputs and output of one cache's decode step, and how to run it again."""

    def __init__(self, ids, pos, mask, run, logits, out_type, graph=None, mask_sig=None) -> None:
        self.ids, self.pos, self.mask, self.mask_sig = ids, pos, mask, mask_sig
        self.run, self.logits, self.out_type, self.graph = run, logits, out_type, graph


class DecodeGraphs:
    """Static caches for `generate` and graph replay of the decode steps on them (see module doc)."""

    def __init__(self, model: Any, *, graphs: bool, bucket: int = BUCKET) -> None:
        if bucket < 1:
            raise ValueError("bucket must be >= 1")
        self.model = model
        self.graphs = graphs
        self.bucket = bucket
        self.cache: Any = None
        self.key: tuple[int, int] | None = None
        self.step: _Step | None = None
        self.captures = 0  # graphs captured so far (tests, benchmarks)
        self.replays = 0
        self.steps = 0  # decode steps run on the static buffers (captured or replayed, graphed or eager)
        self.loop_steps = 0  # of those, the steps spanlab's own greedy loop ran (`continue_greedy`)
        self.cache_key = generate_cache_kwarg(model)  # the name generate passes the cache by
        self._had = model.__dict__.get("forward")  # an instance-level forward someone set before us
        self._orig = model.forward
        # Attention models need the step's positions; Mamba2's forward takes none.
        self._takes_pos = "position_ids" in _parameters(self._orig)
        model.forward = self._wrap(self._orig)

    # -- cache -----------------------------------------------------------------------------------
    def cache_for(self, batch: int, length: int) -> Any:
        """A reset static cache for `batch` rows of up to `length` tokens (prompt + new tokens)."""
        import torch
        from transformers.cache_utils import StaticCache

        size = -(-length // self.bucket) * self.bucket
        if self.key == (batch, size):
            with torch.inference_mode():  # its tensors were made in generate's inference mode
                self.cache.reset()
            return self.cache
        self.release()
        self.cache = StaticCache(config=self.model.config, max_cache_len=size)
        self.key = (batch, size)
        return self.cache

    def release(self) -> None:
        """Drop the cache and its graph (before a different shape, on OOM, at close)."""
        self.step = None
        self.cache = None
        self.key = None

    def close(self) -> None:
        self.release()
        if self._had is not None:
            self.model.forward = self._had
        elif "forward" in self.model.__dict__:
            del self.model.forward  # the class's own forward again

    # -- forward ---------------------------------------------------------------------------------
    def _wrap(self, orig):
        @functools.wraps(orig)  # keeps the signature generate inspects (logits_to_keep, position_ids)
        def forward(*args, **kwargs):
            if not args and self._is_step(kwargs):
                return self._run_step(kwargs)
            return orig(*args, **kwargs)

        return forward

    def _is_step(self, kw: dict) -> bool:
        cache = kw.get(self.cache_key)
        if cache is None or cache is not self.cache or not set(kw) <= _STEP_KEYS:
            return False
        ids, mask, pos = kw.get("input_ids"), kw.get("attention_mask"), kw.get("position_ids")
        if ids is None or kw.get("inputs_embeds") is not None or ids.dim() != 2 or ids.shape[1] != 1:
            return False
        sig = _mask_sig(mask)
        if sig is False or (pos is None and self._takes_pos) or (pos is not None and tuple(pos.shape) != tuple(ids.shape)):
            return False
        if kw.get("use_cache") is False or kw.get("return_dict") is False or kw.get("logits_to_keep", 0) not in (0, 1):
            return False
        st = self.step
        return st is None or (st.ids.shape == ids.shape and st.mask_sig == sig and (st.pos is None) == (pos is None))

    def _run_step(self, kw: dict):
        self.steps += 1
        st = self.step
        if st is None:
            self.step = st = self._capture(kw)  # ran this step too
        else:
            st.ids.copy_(kw["input_ids"])
            if st.pos is not None:
                st.pos.copy_(kw["position_ids"])
            _mask_copy(st.mask, kw["attention_mask"])
            st.run()
            self.replays += 1
        return st.out_type(logits=st.logits, **{self.cache_key: self.cache})

    # -- spanlab's greedy loop -----------------------------------------------------------------------
    def continue_greedy(self, sequences: Any, width: int, max_new_tokens: int, eos_ids: Sequence[int],
                        pad_id: int, *, check_every: int = CHECK_EVERY) -> Any:
        """Continue a greedy generation that `generate` began on this object's cache.

        `sequences` is what `generate` returned (prompt of `width` columns + its first new tokens),
        and its last decode step must have run on the static step (`self.step`), so that the step's
        buffers hold that step's inputs. Each further step feeds the last token back: the position
        ids advance by one and the mask opens the next cache column, on the device; the step runs
        (replay or eager); the next token is the argmax of its logits, `pad_id` in rows that
        already produced an EOS, as `generate` pads finished rows. The host waits on the device only
        every `check_every` steps, to stop once every row has finished; the padded tokens after
        that point are what `generate` would have cut off, and callers read up to the first EOS.
        Returns the sequences with up to `max_new_tokens` new tokens in all."""
        import torch

        st = self.step
        new = sequences.shape[1] - width
        if st is None or new < 1 or new >= max_new_tokens:
            return sequences
        eos = torch.tensor(sorted(eos_ids), dtype=sequences.dtype, device=sequences.device)
        finished = torch.isin(sequences[:, width:], eos).any(dim=1)
        if bool(finished.all()):
            return sequences
        rows = sequences.shape[0]
        out = torch.full((rows, max_new_tokens - new), pad_id, dtype=sequences.dtype, device=sequences.device)
        pad = torch.full_like(finished, pad_id, dtype=sequences.dtype)
        masks = _mask_tensors(st.mask)
        last = sequences[:, -1]
        # The token `generate` produced last sits at cache column width + new - 1; the step's mask
        # already opens column width + new - 2 (that of the token it fed). A prompt's last column is
        # a real token in every row (left padding), so it holds the mask's "attend" value.
        col = width + new - 1
        done = 0
        for i in range(max_new_tokens - new):
            st.ids.copy_(last[:, None])
            if st.pos is not None:
                st.pos.add_(1)
            for m in masks:
                m[..., col].copy_(m[..., width - 1])
            st.run()
            self.steps += 1
            self.loop_steps += 1
            self.replays += 1  # as in _run_step: a run of the held step, captured or eager
            nxt = st.logits[:, -1].argmax(dim=-1).to(sequences.dtype)
            nxt = torch.where(finished, pad, nxt)
            out[:, i] = nxt
            finished |= torch.isin(nxt, eos)
            last = nxt
            col += 1
            done = i + 1
            if done % check_every == 0 and bool(finished.all()):
                break
        return torch.cat([sequences, out[:, :done]], dim=1)

    def _capture(self, kw: dict) -> _Step:
        import torch

        cache = self.cache
        ids = kw["input_ids"].clone(memory_format=torch.contiguous_format)
        pos = kw.get("position_ids")
        pos = None if pos is None else pos.clone(memory_format=torch.contiguous_format)
        mask = _mask_clone(kw.get("attention_mask"))
        sig = _mask_sig(mask)
        extra = {} if pos is None else {"position_ids": pos}

        def call():
            return self._orig(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, return_dict=True,
                              **extra, **{self.cache_key: cache})

        if not self.graphs:
            out = call()
            st = _Step(ids, pos, mask, None, out.logits, type(out), mask_sig=sig)

            def run():
                st.logits = call().logits
            st.run = run
            return st
        # Warm-up outside capture (Triton compiles, cuBLAS picks its kernels and workspace on this
        # stream). It writes this step's keys/values (the replay writes the same ones again) and
        # advances every layer's write position and recurrent state, which are put back.
        live = _state_tensors(cache)
        saved = [t.clone() for t in live]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            call()
        torch.cuda.current_stream().wait_stream(side)
        for t, v in zip(live, saved):
            t.copy_(v)
        del saved
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = call()
        graph.replay()
        self.captures += 1
        self.replays += 1
        return _Step(ids, pos, mask, graph.replay, out.logits, type(out), graph, mask_sig=sig)
