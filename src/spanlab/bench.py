"""One timing helper for every measurement of spanlab (the attention profile, benchmarks/*.py).

Semantics (the ones docs/benchmarks.md figures were taken with):

* `warmup` untimed calls first (compilation, autotuning, allocator growth), then a device
  synchronisation, then `iters` timed calls.
* On CUDA each call is timed alone between two CUDA events recorded on the current stream, and the
  end event is waited for before the next call: the figure is GPU time of that call, host launch
  overhead included only where it stalls the GPU.
* On the CPU each call is timed with `time.perf_counter`.
* The headline figure is the median of the timed calls (`statistics.median`: the mean of the two
  middle values for an even count); min and max are kept for spread.
* `memory=True` (CUDA only) resets the peak-memory counter after warm-up and reports
  `torch.cuda.max_memory_allocated` over the timed calls, in GiB; `peak_memory_gib` measures one
  call alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from spanlab.errors import SpanlabError


@dataclass(frozen=True)
class TimingResult:
    times_ms: tuple[float, ...]
    device: str
    peak_mem_gib: float | None = None  # None: not measured (CPU, or memory=False)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)


def _is_cuda(device: Any) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def time_cuda(fn: Callable[[], Any], *, warmup: int = 3, iters: int = 10, device: Any = None,
              memory: bool = False) -> TimingResult:
    """Time `fn()` as the module docstring says. `device=None`: CUDA when available, else CPU;
    with a CUDA device the current device's stream is used (set it with `torch.cuda.device`)."""
    if warmup < 0 or iters < 1:
        raise SpanlabError(f"timing needs warmup >= 0 and iters >= 1; got warmup={warmup}, iters={iters}")
    cuda = _is_cuda(device)
    if cuda and not torch.cuda.is_available():
        raise SpanlabError(f"cannot time on {device}: CUDA is not available")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    peak: float | None = None
    if cuda:
        torch.cuda.synchronize()
        if memory:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        if memory:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return TimingResult(tuple(times), "cuda" if cuda else "cpu", peak)


def peak_memory_gib(fn: Callable[[], Any], device: Any = None) -> float | None:
    """`torch.cuda.max_memory_allocated` (GiB) over one call of `fn`, inputs that are already
    allocated included; None on the CPU (no allocator statistics)."""
    if not _is_cuda(device) or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) / 2**30


__all__ = ["TimingResult", "peak_memory_gib", "time_cuda"]
