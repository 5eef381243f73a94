"""Fig. 4's SE row as the paper trains it: one step that alternates the chunk size across layer
calls (2048 / 4096), timed as one step and reported as one row per variant."""

from __future__ import annotations

import pytest

from spanlab.attention import profile as prof
from spanlab.attention.profile import configurations, display_label, read_rows, run_profile
from spanlab.errors import SpanlabError


def test_one_row_per_variant_when_chunks_alternate():
    assert configurations(["full", "se", "se-nomem"], [2048, 4096], "alternate") == [
        ("full", "full", ()), ("se", "se[M=2048/4096]", (2048, 4096)), ("se-nomem", "se-nomem[M=2048/4096]", (2048, 4096))]
    assert [c[1] for c in configurations(["se"], [2048, 4096])] == ["se[M=2048]", "se[M=4096]"]  # "each": as before
    assert configurations(["se"], [2048], "alternate") == [("se", "se[M=2048]", (2048,))]
    assert display_label("se[M=2048/4096]") == "SE-Attn (M=2048/4096)"
    with pytest.raises(SpanlabError, match="chunk mode"):
        configurations(["se"], [2048], "mixed")


def test_the_alternating_step_calls_each_chunk_once_per_step(tmp_path, monkeypatch):
    calls: list[int] = []
    real = prof.get_attention

    def spy(variant, **params):
        fn = real(variant, **params)
        if "chunk_size" not in params:
            return fn

        def wrapped(q, k, v):
            calls.append(params["chunk_size"])
            return fn(q, k, v)

        return wrapped

    monkeypatch.setattr(prof, "get_attention", spy)
    csv = tmp_path / "p.csv"
    rows = run_profile(variants=["full", "se"], lengths=[256], heads=2, head_dim=16, dtype="fp32", mode="layer",
                       chunk_sizes=[64, 128], chunk_mode="alternate", block_size=16, top_k=2, warmup=1, repeats=2,
                       device="cpu", csv_path=csv)
    assert [r.label for r in rows] == ["full", "se[M=64/128]"]
    se = rows[1]
    # warm-up + repeats steps (spanlab.bench.time_cuda), each one call per chunk size, in turn.
    assert calls[:2] == [64, 128] and len(calls) % 2 == 0 and set(calls) == {64, 128}
    assert calls == [64, 128] * (len(calls) // 2)
    assert se.chunk_size == 96 and se.ms > 0 and se.ms_min <= se.ms <= se.ms_max
    # FLOPs of the mean chunk, as the registry counts a random draw.
    flops = [prof.attention_flops("se", 256, 2, 16, chunk_size=m, window=4096, group_size=64, block_size=16, top_k=2)
             for m in (64, 128)]
    assert se.attn_tflop == pytest.approx(prof.FWD_BWD * sum(flops) / 2 / 1e12)
    # Journaled: a rerun finds both rows done.
    assert [r.label for r in read_rows(csv)] == ["full", "se[M=64/128]"]
    assert run_profile(variants=["full", "se"], lengths=[256], heads=2, head_dim=16, dtype="fp32", mode="layer",
                       chunk_sizes=[64, 128], chunk_mode="alternate", block_size=16, top_k=2, warmup=1, repeats=2,
                       device="cpu", csv_path=csv) == []
