"""spanlab.bench.time_cuda: the one timing helper of the profile and the benchmarks (CPU path here;
the CUDA-event path runs in tests/attention/test_gpu.py-style GPU sessions and the benchmarks)."""

from __future__ import annotations

import time

import pytest
import torch

from spanlab.bench import TimingResult, peak_memory_gib, time_cuda
from spanlab.errors import SpanlabError


def test_warmup_calls_are_not_timed_and_every_iteration_is():
    calls: list[float] = []
    # The first (warm-up) calls are slow, as compilation is; they must not reach the figures.
    delays = [0.05, 0.05] + [0.002] * 5

    def fn() -> None:
        calls.append(time.perf_counter())
        time.sleep(delays[len(calls) - 1])

    t = time_cuda(fn, warmup=2, iters=5, device="cpu")
    assert len(calls) == 7
    assert t.device == "cpu" and len(t.times_ms) == 5
    assert all(1.5 <= ms < 40 for ms in t.times_ms), t.times_ms
    assert t.min_ms <= t.median_ms <= t.max_ms
    assert t.peak_mem_gib is None  # no allocator statistics on the CPU


def test_median_min_max_semantics():
    t = TimingResult(times_ms=(4.0, 1.0, 3.0, 2.0), device="cpu")
    assert t.median_ms == 2.5  # statistics.median: mean of the two middle values for an even count
    assert (t.min_ms, t.max_ms) == (1.0, 4.0)
    assert TimingResult((5.0, 1.0, 9.0), "cpu").median_ms == 5.0


def test_bad_counts_and_missing_cuda_are_clear_errors():
    with pytest.raises(SpanlabError, match="iters >= 1"):
        time_cuda(lambda: None, iters=0, device="cpu")
    with pytest.raises(SpanlabError, match="warmup >= 0"):
        time_cuda(lambda: None, warmup=-1, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpanlabError, match="CUDA is not available"):
            time_cuda(lambda: None, device="cuda")
        assert peak_memory_gib(lambda: None, "cpu") is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_time_a_matmul_and_peak_memory_counts_its_output():
    a = torch.randn(2048, 2048, device="cuda")
    t = time_cuda(lambda: a @ a, warmup=2, iters=5, memory=True)
    assert t.device == "cuda" and len(t.times_ms) == 5 and t.median_ms > 0
    assert t.peak_mem_gib is not None and t.peak_mem_gib >= 2 * 2048 * 2048 * 4 / 2**30
    assert peak_memory_gib(lambda: a @ a) >= 2 * 2048 * 2048 * 4 / 2**30
