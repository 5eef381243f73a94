"""`profile` step: the attention runtime/memory profile (Fig. 4), a GPU measurement."""

from __future__ import annotations

from typing import Any

from spanlab.study.config import resolve_length
from spanlab.study.context import StudyContext
from spanlab.study.steps import StepSkipped


def profile_settings(ctx: StudyContext) -> dict[str, Any]:
    """run_profile keyword arguments of the `profile:` section, relative lengths resolved
    against the (first) pre-trained model's context."""
    p = ctx.cfg.profile
    assert p is not None
    c = ctx.context_of(ctx.cfg.models[0].name)
    return {
        "variants": list(p.variants), "lengths": sorted({resolve_length(x, c) for x in p.lengths}),
        "chunk_sizes": [resolve_length(x, c) for x in p.chunk_sizes], "chunk_mode": p.chunk_mode,
        "window": resolve_length(p.window, c),
        "group_size": p.group_size, "block_size": p.block_size, "top_k": p.top_k, "heads": p.heads,
        "kv_heads": p.kv_heads or None, "head_dim": p.head_dim, "batch": p.batch, "dtype": p.dtype,
        "mode": p.mode, "warmup": p.warmup, "repeats": p.repeats, "seed": ctx.cfg.seed, "kernels": p.kernels,
    }


def run_profile_step(ctx: StudyContext) -> dict[str, Any]:
    import torch

    from spanlab.attention.profile import run_profile

    p = ctx.cfg.profile
    assert p is not None
    device = ctx.cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda") and not p.cpu:
        raise StepSkipped("no CUDA device: the runtime/memory profile (Fig. 4) is a GPU measurement; "
                          "resume this study on a GPU machine to add it (or set profile.cpu: true)")
    if p.cpu and not device.startswith("cuda"):
        device = "cpu"
    csv_path = ctx.out / "profile" / "profile.csv"
    rows = run_profile(**profile_settings(ctx), device=device, csv_path=csv_path,
                       on_row=lambda r: ctx.log(f"  {r.label:>16} L={r.length:>6} {r.ms:9.3f} ms "
                                                f"{r.peak_mem_gib:7.3f} GiB {r.status}"))
    return {"csv": str(csv_path), "rows": len(rows), "device": device}
