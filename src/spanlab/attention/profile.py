"""Time and size one training step of each attention variant (the paper's Fig. 4).

A step is forward + backward of the attention op alone (`mode="op"`) or of a projection layer
around it (`mode="layer"`: x -> QKV projection -> attention -> output projection). CUDA timings use
events after warm-up and report the median of the repeats (spanlab.bench.time_cuda); peak memory is
`torch.cuda.max_memory_allocated` over one step, inputs and gradients included. Each finished
configuration is appended (and flushed) to the CSV, and a rerun skips the rows already there.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from spanlab import kernels as kernel_settings
from spanlab.attention.registry import VARIANTS, get_attention
from spanlab.bench import peak_memory_gib, time_cuda
from spanlab.errors import SpanlabError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FWD_BWD = 3.5  # backward ≈ 2.5× forward in matmul FLOPs (dQ, dK, dV, and the recomputed scores)


@dataclass
class ProfileRow:
    variant: str
    label: str
    mode: str
    length: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    chunk_size: int
    window: int
    group_size: int
    block_size: int
    top_k: int
    ms: float
    ms_min: float
    ms_max: float
    peak_mem_gib: float
    attn_tflop: float
    tflops: float
    device: str
    status: str

    def key(self) -> tuple:
        return (self.label, self.mode, self.length, self.batch, self.heads, self.kv_heads, self.head_dim, self.dtype, self.device)


def attention_flops(variant: str, L: int, H: int, D: int, *, chunk_size: int, window: int, group_size: int,
                    block_size: int, top_k: int) -> float:
    """Forward matmul FLOPs of the attention op counting only the keys each query may see
    (4·D per query-key pair: QKᵀ and PV), from the variant's `keys_per_query` in the registry
    (SE counts M/2 causal keys plus k·S retrieved ones). NaN for a variant that gives none."""
    knobs = {"chunk_size": chunk_size, "window": window, "group_size": group_size, "block_size": block_size,
             "top_k": top_k}
    return 4.0 * D * H * L * VARIANTS.get_spec(variant).flops_keys(L, knobs)


def _make_step(fn, mode: str, B: int, H: int, Hk: int, L: int, D: int, dtype, device, gen) -> Callable[[], None]:
    if mode == "op":
        q = torch.randn(B, H, L, D, device=device, dtype=dtype, generator=gen).requires_grad_()
        k = torch.randn(B, Hk, L, D, device=device, dtype=dtype, generator=gen).requires_grad_()
        v = torch.randn(B, Hk, L, D, device=device, dtype=dtype, generator=gen).requires_grad_()
        dout = torch.randn(B, H, L, D, device=device, dtype=dtype, generator=gen)

        def step() -> None:
            q.grad = k.grad = v.grad = None
            fn(q, k, v).backward(dout)

        return step
    E = H * D
    x = torch.randn(B, L, E, device=device, dtype=dtype, generator=gen).requires_grad_()
    w_qkv = (torch.randn((H + 2 * Hk) * D, E, device=device, dtype=dtype, generator=gen) / math.sqrt(E)).requires_grad_()
    w_o = (torch.randn(E, H * D, device=device, dtype=dtype, generator=gen) / math.sqrt(E)).requires_grad_()
    dout = torch.randn(B, L, E, device=device, dtype=dtype, generator=gen)

    def step() -> None:
        x.grad = w_qkv.grad = w_o.grad = None
        qkv = (x @ w_qkv.T).view(B, L, H + 2 * Hk, D).transpose(1, 2)
        q, k, v = qkv.split([H, Hk, Hk], dim=1)
        o = fn(q, k, v).transpose(1, 2).reshape(B, L, H * D)
        (o @ w_o.T).backward(dout)

    return step


def _sweeps_chunks(variant: str) -> bool:
    return "chunk_size" in VARIANTS[variant].param_names


CHUNK_MODES = ("each", "alternate")


def configurations(variants: Iterable[str], chunk_sizes: Iterable[int],
                   chunk_mode: str = "each") -> list[tuple[str, str, tuple[int, ...]]]:
    """(variant, label, chunk sizes of its step): with `chunk_mode="each"` variants with a chunk
    size (SE) get one row per chunk size; with "alternate" one row whose step runs one layer call
    per chunk size in turn (the paper's training draws one per layer call from {2048, 4096}), so a
    variant is one row however its chunks are drawn. Others: one row, no chunk (an empty tuple)."""
    if chunk_mode not in CHUNK_MODES:
        raise SpanlabError(f"unknown chunk mode {chunk_mode!r}; choose one of {', '.join(CHUNK_MODES)}")
    out: list[tuple[str, str, tuple[int, ...]]] = []
    chunk_sizes = list(chunk_sizes)
    for v in variants:
        VARIANTS.get_spec(v)  # a clear error for an unknown name
        if not _sweeps_chunks(v):
            out.append((v, v, ()))
        elif chunk_mode == "alternate" and len(chunk_sizes) > 1:
            out.append((v, f"{v}[M={'/'.join(map(str, chunk_sizes))}]", tuple(chunk_sizes)))
        else:
            out.extend((v, f"{v}[M={m}]", (m,)) for m in chunk_sizes)
    return out


def variant_params(variant: str, knobs: dict[str, int]) -> dict[str, int]:
    """The profile's knobs (window, group_size, chunk_size, block_size, top_k) that `variant` takes."""
    return {name: knobs[name] for name in VARIANTS[variant].param_names if name in knobs}


def display_label(label: str) -> str:
    """A row label as reports show it: the registry's display name, `se[M=2048]` -> `SE-Attn (M=2048)`.
    Labels of variants not registered in this process (an old CSV) stay as they are."""
    m = re.match(r"^([^\[\s]+)(?:\[([^\]]*)\])?(.*)$", label)
    spec = VARIANTS.get(m[1]) if m else None
    if spec is None:
        return label
    return spec.display + (f" ({m[2]})" if m[2] else "") + m[3]


def read_rows(path: Path) -> list[ProfileRow]:
    if not path.exists():
        return []
    types = {f.name: f.type for f in fields(ProfileRow)}
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            conv = {}
            for name, typ in types.items():
                val = rec[name]
                conv[name] = int(val) if typ in (int, "int") else float(val) if typ in (float, "float") else val
            rows.append(ProfileRow(**conv))
    return rows


def run_profile(
    *,
    variants: list[str],
    lengths: list[int],
    heads: int = 16,
    kv_heads: int | None = None,
    head_dim: int = 128,
    batch: int = 1,
    dtype: str = "bf16",
    mode: str = "op",
    chunk_sizes: list[int] = (2048, 4096),
    chunk_mode: str = "each",
    window: int = 4096,
    group_size: int = 0,
    block_size: int = 32,
    top_k: int = 8,
    warmup: int = 3,
    repeats: int = 10,
    device: str = "auto",
    seed: int = 0,
    csv_path: Path | None = None,
    on_row: Callable[[ProfileRow], None] | None = None,
    kernels: str | Mapping[str, str] | None = None,
) -> list[ProfileRow]:
    """One row per (length, variant, chunk size) not yet in `csv_path`, timed under the kernel
    choices `kernels` (spanlab.kernels, over the environment's); with a `csv_path`, each call's
    command, device and kernel choices are appended to the `manifest.json` beside it."""
    with kernel_settings.use(kernels) as chosen:
        return _run_profile(variants, lengths, heads, kv_heads, head_dim, batch, dtype, mode, chunk_sizes, window,
                            group_size, block_size, top_k, warmup, repeats, device, seed, csv_path, on_row, chosen,
                            chunk_mode)


def _run_profile(variants, lengths, heads, kv_heads, head_dim, batch, dtype, mode, chunk_sizes, window,
                 group_size, block_size, top_k, warmup, repeats, device, seed, csv_path, on_row,
                 chosen: kernel_settings.KernelSettings, chunk_mode: str = "each") -> list[ProfileRow]:
    if dtype not in DTYPES:
        raise SpanlabError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if mode not in ("op", "layer"):
        raise SpanlabError(f"unknown mode {mode!r}; choose 'op' (attention only) or 'layer'")
    Hk = kv_heads or heads
    if heads % Hk:
        raise SpanlabError(f"--heads ({heads}) must be a multiple of --kv-heads ({Hk})")
    if not lengths or any(n < 1 for n in lengths):
        raise SpanlabError("--lengths must be positive integers, e.g. 4096,8192")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpanlabError("--device cuda was asked for but CUDA is not available; use --device cpu")
    cuda = device.startswith("cuda")
    dev_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    configs = configurations(variants, chunk_sizes, chunk_mode)
    if csv_path is not None:
        _record_run(Path(csv_path).with_name("manifest.json"), dev_name, chosen)
    done = {r.key() for r in read_rows(csv_path)} if csv_path else set()
    rows: list[ProfileRow] = []
    for L in lengths:
        for variant, label, Ms in configs:
            G = group_size or max(1, L // 4)  # LongLoRA's default group: a quarter of the sequence
            # chunk_size: the step's chunk; an alternating step records its mean (what its FLOPs count).
            M = round(sum(Ms) / len(Ms)) if Ms else 0
            row = ProfileRow(variant, label, mode, L, batch, heads, Hk, head_dim, dtype, M, window, G, block_size,
                             top_k, math.nan, math.nan, math.nan, math.nan, 0.0, math.nan, dev_name, "ok")
            if row.key() in done:
                continue
            fns = [get_attention(variant, **variant_params(variant, {
                "window": window, "group_size": G, "chunk_size": m, "block_size": block_size, "top_k": top_k}))
                for m in (Ms or (0,))]
            fwd = sum(attention_flops(variant, L, heads, head_dim, chunk_size=m, window=window, group_size=G,
                                      block_size=block_size, top_k=top_k) for m in (Ms or (0,))) / len(fns) * batch
            row.attn_tflop = FWD_BWD * fwd / 1e12
            gen = torch.Generator(device=device).manual_seed(seed)
            try:
                if cuda:
                    torch.cuda.empty_cache()
                step = _alternating([_make_step(fn, mode, batch, heads, Hk, L, head_dim, DTYPES[dtype], device, gen)
                                     for fn in fns])
                t = time_cuda(step, warmup=warmup, iters=repeats, device=device)
                # Per layer call, like every other row: an alternating step makes len(fns) of them.
                row.ms, row.ms_min, row.ms_max = (x / len(fns) for x in (t.median_ms, t.min_ms, t.max_ms))
                row.tflops = row.attn_tflop / (row.ms / 1e3)
                if cuda:
                    row.peak_mem_gib = peak_memory_gib(step, device)  # type: ignore[assignment]
                del step
            except torch.OutOfMemoryError:
                row.status = "oom"
            rows.append(row)
            if csv_path is not None:
                _append(csv_path, row)
            if on_row is not None:
                on_row(row)
    return rows


def _alternating(steps: list[Callable[[], None]]) -> Callable[[], None]:
    """One timed step of consecutive layer calls (fwd + bwd each), one per chunk size; a single
    step stays itself. Peak memory is that of the largest call (each frees its graph)."""
    if len(steps) == 1:
        return steps[0]

    def step() -> None:
        for s in steps:
            s()

    return step


def _record_run(path: Path, device: str, chosen: kernel_settings.KernelSettings) -> None:
    # A list of runs: a resumed profile may add rows under other kernel choices.
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", []) if path.exists() else []
    except (json.JSONDecodeError, AttributeError):
        runs = []
    runs.append({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv,
                 "device": device, "kernels": chosen.model_dump()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=2), encoding="utf-8")


def _append(path: Path, row: ProfileRow) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[f.name for f in fields(ProfileRow)])
        if new:
            w.writeheader()
        w.writerow(asdict(row))
        fh.flush()
