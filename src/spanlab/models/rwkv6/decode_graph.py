"""RWKV-6 decode steps replayed as one CUDA graph.

A decode step of the 3B model is hundreds of small kernels (32 blocks of token shift, five mixing
projections, the one-token WKV update, GroupNorm, channel mix) launched one by one from Python,
and at batch 1 the GPU waits on the host between them: at 16K the model evaluated at 0.25x the
samples/s of the Llama of its size with every new token decoded this way (docs/benchmarks.md).
The step has the same kernels on the same shapes every time, and the model's state (token-shift
rows, WKV matrices) is written in place, so it can be captured once and replayed.

`Rwkv6DecodeGraphs.step` keeps one static copy of the state and of the input token per (batch,
state shapes, device): a step given another state list (the one a new prompt's prefill made)
copies it in first (21 MB at 3B: negligible next to a prompt) and puts the static tensors into
that list (the eager forward updates a state in place, and `generate` keeps passing the list it
was given), so later steps copy nothing. With `graphs=False` the same buffers run eagerly (the CPU tests check that path gives
the eager model's tokens). Training, prefill (more than one token) and calls that ask for more
than logits run the model's own forward.
"""

from __future__ import annotations

from typing import Any

import torch


class Rwkv6DecodeGraphs:
    def __init__(self, model: Any, graphs: bool = True) -> None:
        self.model = model
        self.graphs = graphs
        self._key: Any = None
        self._graph: Any = None
        self._ids: Any = None
        self._state: list[torch.Tensor] | None = None
        self._logits: Any = None
        self.captures = 0  # graphs captured so far (tests and the manifest read it)

    def _run(self) -> torch.Tensor:
        return self.model._decode_logits(self._ids, self._state)

    def _build(self, key: Any, input_ids: torch.Tensor, state: list[torch.Tensor]) -> None:
        self._graph = self._logits = None
        self._ids = input_ids.clone()
        self._state = [t.clone() for t in state]
        if self.graphs:
            # Warm-up on a side stream (allocator, lazy kernel init) before capture, as torch's
            # CUDA-graph recipe asks; it advances the static state, which the copy in `step` resets.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._run()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._logits = self._run()
            self._graph = graph
            self.captures += 1
        self._key = key

    def step(self, input_ids: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (batch, 1, vocab) of one decode step from `state`, and the state after it."""
        key = (tuple(input_ids.shape), input_ids.device, tuple((tuple(t.shape), t.dtype) for t in state))
        if key != self._key:
            self._build(key, input_ids, state)
        assert self._state is not None
        if any(a is not b for a, b in zip(state, self._state)):
            for dst, src in zip(self._state, state):
                dst.copy_(src)
            # The caller's list now holds the static tensors: the eager forward updates a state in
            # place, and `generate` keeps passing the list it was given, so it must see the steps.
            state[:] = self._state
        self._ids.copy_(input_ids)
        if self._graph is not None:
            self._graph.replay()
            logits = self._logits.clone()  # the next replay overwrites the static output
        else:
            logits = self._run()
        return logits, self._state

    def close(self) -> None:
        self._graph = self._logits = self._state = self._ids = self._key = None


__all__ = ["Rwkv6DecodeGraphs"]
